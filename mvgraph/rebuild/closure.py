"""What a rebuild must carry over: a relation and everything built on or attached to it,
read from the catalog (the ``prepare`` step), as DDL that recreates each piece under a new
name.

Every statement here is built with ``psycopg.sql`` (identifiers quoted) or is text the server
itself wrote (``pg_get_viewdef``, ``pg_get_indexdef``, ``pg_get_constraintdef``,
``pg_get_triggerdef``, ``pg_get_expr``), with the names it holds rewritten token by token
(:func:`rename_relations`), never by pattern over the text.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import networkx as nx
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from mvgraph.db.queries import query
from mvgraph.sql.lexer import Kind, Lexeme, lex

Conn = psycopg.Connection[tuple[object, ...]]
QualifiedName = tuple[str, str]  # (schema, name), as stored in the catalog (not quoted)
NAME_BYTES: Final = 63  # NAMEDATALEN - 1


@dataclass(frozen=True, slots=True)
class Column:
    """A column of the rebuilt table."""

    name: str
    type_sql: str  # format_type(atttypid, atttypmod)
    not_null: bool
    default_sql: str | None  # pg_get_expr(adbin): None when there is none
    generated: bool  # GENERATED ALWAYS AS (...) STORED: never copied, computed by the server
    identity: str  # '' , 'a' (ALWAYS) or 'd' (BY DEFAULT)
    collation: str | None = None  # quoted COLLATE name when not the type's default


@dataclass(frozen=True, slots=True)
class Dependent:
    """A view or materialized view built, directly or not, on the rebuilt relation."""

    oid: int
    schema: str
    name: str
    kind: str  # 'v' view, 'm' materialized view
    owner: str
    definition: str  # pg_get_viewdef(oid) read with search_path = '' (every name qualified)
    populated: bool  # a materialized view's relispopulated (views: True)
    # Everything to run after creating it under another name, in order: reloptions,
    # indexes (materialized views), grants (table and column), comments (relation and
    # columns), INSTEAD OF triggers and rules of views, owner. Built by attached_ddl.
    depends_on: tuple[QualifiedName, ...]  # the closure's relations it reads directly


@dataclass(frozen=True, slots=True)
class Closure:
    """The rebuilt relation and its whole dependent closure, as the catalog holds them now."""

    oid: int
    schema: str
    name: str
    kind: str  # 'r' table, 'p' partitioned table, 'm' materialized view
    owner: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]  # () when there is none
    primary_key_name: str | None
    dependents: tuple[Dependent, ...]  # in creation order (every one after what it reads)
    referencing_fks: tuple[tuple[QualifiedName, str, str], ...]  # (table, constraint, def)
    owned_sequences: tuple[tuple[QualifiedName, str], ...]  # (sequence, column)
    publications: tuple[str, ...]  # publications that list the table
    problems: tuple[str, ...]  # why it cannot be rebuilt (one line each); empty: it can


def read_closure(conn: Conn, relation: int) -> Closure:
    """Read ``relation`` (a table or materialized view oid) and its dependent closure."""
    with qualified_names(conn):
        row = _one(conn, "rb_relation", oid=relation)
        columns = tuple(Column(**r) for r in _rows(conn, "rb_columns", oid=relation))
        pk = _rows(conn, "rb_primary_key", oid=relation)
        graph = nx.DiGraph()
        graph.add_node(relation)
        graph.add_edges_from((r["input"], r["dependent"])
                             for r in _rows(conn, "rb_closure_edges", oid=relation))
        found = {r["oid"]: r for r in _rows(conn, "rb_dependents", oids=list(graph))}
        members = {oid: (str(r["schema"]), str(r["name"])) for oid, r in found.items()}
        outside = _rows(conn, "rb_outside_dependencies", oid=relation, oids=list(graph))
        fks = _rows(conn, "rb_referencing_fks", oid=relation)
        sequences = _rows(conn, "rb_owned_sequences", oid=relation)
        publications = _rows(conn, "rb_publications", oid=relation)
    order = [n for n in nx.lexicographical_topological_sort(graph) if n != relation]
    dependents = tuple(_dependent(found[n], tuple(members[p] for p in
                                                  sorted(graph.predecessors(n))))
                       for n in order)
    problems = _relation_problems(row) + _outside_problems(outside, set(graph), relation)
    return Closure(
        oid=relation, schema=row["schema"], name=row["name"], kind=row["kind"],
        owner=row["owner"], columns=columns,
        primary_key=tuple(pk[0]["columns"]) if pk else (),
        primary_key_name=pk[0]["name"] if pk else None,
        dependents=dependents,
        referencing_fks=tuple(((r["schema"], r["name"]), r["constraint"], r["definition"])
                              for r in fks),
        owned_sequences=tuple(((r["schema"], r["name"]), r["column"]) for r in sequences),
        publications=tuple(r["name"] for r in publications),
        problems=tuple(problems))


@contextmanager
def qualified_names(conn: Conn) -> Iterator[None]:
    """A transaction (a savepoint inside one) with ``search_path`` set to '' (SET LOCAL), so
    that everything the server writes (``pg_get_viewdef``, ``pg_get_expr``...) names each
    relation, type and function with its schema; the caller's path is back afterwards."""
    with conn.transaction():
        old = _one(conn, "rb_set_search_path", path="")["old"]
        yield
        _one(conn, "rb_set_search_path", path=old)


def _rows(conn: Conn, name: str, **params: object) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query(name, "mvgraph.rebuild"), params).fetchall()


def _one(conn: Conn, name: str, **params: object) -> dict[str, Any]:
    rows = _rows(conn, name, **params)
    if not rows:
        raise LookupError(f"relation {params.get('oid')} does not exist")
    return rows[0]


def _dependent(row: dict[str, Any], depends_on: tuple[QualifiedName, ...]) -> Dependent:
    definition = str(row["definition"]).rstrip().removesuffix(";").rstrip()
    return Dependent(oid=row["oid"], schema=row["schema"], name=row["name"], kind=row["kind"],
                     owner=row["owner"], definition=definition,
                     populated=bool(row["populated"]), depends_on=depends_on)


_KINDS: Final = {"v": "a view", "f": "a foreign table", "S": "a sequence", "i": "an index",
                 "I": "an index", "c": "a composite type", "t": "a TOAST table"}


def _relation_problems(row: dict[str, Any]) -> list[str]:
    """Why the relation itself cannot be rebuilt."""
    name, kind = row["display"], row["kind"]
    checks = [
        (kind not in ("r", "p", "m"), f"{name} is {_KINDS.get(kind, 'not a table')}: only a "
                                      "table or a materialized view can be rebuilt"),
        (row["persistence"] == "t", f"{name} is a temporary table: it cannot be rebuilt "
                                    "(its session owns it)"),
        (row["partition"], f"{name} is a partition of {row['parent']}: rebuild "
                           f"{row['parent']} instead"),
        (not row["partition"] and row["parent"] is not None,
         f"{name} inherits from {row['parent']}: remove the inheritance (ALTER TABLE ... "
         "NO INHERIT) first"),
        (row["children"] is not None, f"{name} has inheritance children ({row['children']}): "
                                      "remove the inheritance (ALTER TABLE ... NO INHERIT) first"),
        (row["extension"], f"{name} belongs to an extension: it cannot be rebuilt"),
        (row["typed_as"] is not None, f"{name} is a typed table (OF {row['typed_as']}): make it "
                                      "an ordinary table (ALTER TABLE ... NOT OF) first"),
    ]
    return [message for failed, message in checks if failed]


def _outside_problems(rows: list[dict[str, Any]], members: set[int], relation: int) -> list[str]:
    """Objects outside the closure that depend on a member: each blocks the rebuild."""
    out = []
    for r in rows:
        if r["owner_relation"] in members:
            continue  # a view rule, index, trigger, policy... of a member: rebuilt with it
        if r["references"] is not None and r["target_relation"] == relation:
            continue  # a foreign key that references the table: in referencing_fks
        what = "reads" if r["classid"] == "pg_rewrite" else "depends on"
        out.append(f"{r['object']} {what} {r['target']}: drop or change it first")
    return out


def quote_qualified(schema: str, name: str) -> str:
    """``schema.name``, each part quoted (always, as psycopg does)."""
    return sql.Identifier(schema, name).as_string(None)


def rename_relations(definition: str, renames: dict[QualifiedName, QualifiedName], *,
                     alias: bool = True) -> str:
    """``definition`` (server-written SQL with every relation name schema-qualified) with each
    reference to a relation in ``renames`` replaced by its new name; a reference with no
    alias gets its old name as alias, so column references stay valid.

    Only names where a relation is read or named are replaced: a FROM item (after FROM, JOIN,
    ONLY, a comma of a FROM list, the parenthesis of a join), the target of ON / TO / INTO /
    UPDATE / REFERENCES (index, trigger and rule definitions, foreign keys) and a type after
    ``::`` (a row type, replaced without alias); ``alias=False`` never appends one (for DDL
    text such as an index or a trigger definition). A function call ``s.f(`` and a column
    reference ``alias.column`` are left alone, as is every byte not replaced.

    >>> rename_relations("SELECT t.a FROM s.t WHERE (t.a > 0)", {("s", "t"): ("s", "t__rb1")})
    'SELECT t.a FROM "s"."t__rb1" "t" WHERE (t.a > 0)'
    """
    lexemes = [x for x in lex(definition) if x.kind is not Kind.COMMENT]
    out: list[str] = []
    done = 0
    for start, end, position, after in _references(definition, lexemes):
        old = (_part(definition, lexemes[start]), _part(definition, lexemes[start + 2]))
        new = renames.get(old)
        if new is None:
            continue
        text = quote_qualified(*new)
        if alias and position == "item" and not _has_alias(definition, after):
            text += " " + sql.Identifier(old[1]).as_string(None)
        out += [definition[done:lexemes[start].start], text]
        done = lexemes[end].end
    return "".join([*out, definition[done:]])


_FROM_END: Final = frozenset({"where", "group", "having", "window", "order", "limit", "offset",
                              "fetch", "for", "union", "intersect", "except", "returning",
                              "select", "values", "set"})
_PLAIN: Final = frozenset({"on", "to", "into", "references"})
_NOT_ALIAS: Final = _FROM_END | _PLAIN | frozenset({
    "join", "left", "right", "full", "inner", "cross", "natural", "using", "tablesample",
    "with", "lateral", "do", "default", "not", "deferrable", "initially", "when", "then",
    "else", "end", "and", "or", "is", "from", "partition"})


@dataclass(slots=True)
class _Level:
    """A parenthesis level while scanning: inside a FROM list? has it a SELECT/DELETE/UPDATE
    (so that FROM starts a FROM list, not ``EXTRACT(x FROM y)``)?"""

    from_list: bool = False
    query: bool = False


def _references(text: str, lexemes: list[Lexeme]) -> Iterator[tuple[int, int, str, Lexeme |
                                                                     None]]:
    """Each ``schema . name`` in a relation position: (index of its first lexeme, of its last,
    'item' / 'plain' / 'type', the lexeme after it)."""
    levels = [_Level(query=True)]
    expect: str | None = None
    i = 0
    while i < len(lexemes):
        if expect is not None and _qualified_at(text, lexemes, i, expect):
            yield i, i + 2, expect, lexemes[i + 3] if i + 3 < len(lexemes) else None
            expect, i = None, i + 3
            continue
        expect = _next_expect(text, lexemes, i, levels, expect)
        i += 1


def _qualified_at(text: str, lexemes: list[Lexeme], i: int, expect: str) -> bool:
    """Is a two-part name (not three, not a call) at ``i``?"""
    names = (Kind.WORD, Kind.IDENT)
    part = lexemes[i:i + 4]
    if len(part) < 3 or part[0].kind not in names or part[2].kind not in names:
        return False
    if text[part[1].start:part[1].end] != ".":
        return False
    following = text[part[3].start:part[3].end] if len(part) > 3 else ""
    return following != "." and (following != "(" or expect == "plain")


def _next_expect(text: str, lexemes: list[Lexeme], i: int, levels: list[_Level],
                 expect: str | None) -> str | None:
    """What lexeme ``i`` makes of the next one: a relation position or not (None); keeps the
    parenthesis levels."""
    x = lexemes[i]
    word = text[x.start:x.end].lower() if x.kind is Kind.WORD else ""
    level = levels[-1]
    if x.kind is Kind.OPEN:
        levels.append(_Level(from_list=expect == "item"))
        return "item" if expect == "item" else None
    if x.kind is Kind.CLOSE:
        if len(levels) > 1:
            levels.pop()
        return None
    if x.kind is Kind.OTHER:
        char = text[x.start:x.end]
        if char == ",":
            return "item" if level.from_list else None
        double = i > 0 and lexemes[i - 1].end == x.start and text[lexemes[i - 1].start:
                                                                   x.start] == ":"
        return "type" if char == ":" and double else None
    if word == "from":
        before = lexemes[i - 1] if i > 0 else None
        distinct = before is not None and text[before.start:before.end].lower() == "distinct"
        if level.query and not distinct:
            level.from_list = True
            return "item"
        return None
    if word in ("select", "values", "delete", "update"):
        level.query = True
    if word in _FROM_END:
        level.from_list = False
    if word in ("join", "update"):
        return "item"
    if word in ("only", "lateral"):
        return expect
    return "plain" if word in _PLAIN else None


def _part(text: str, x: Lexeme) -> str:
    """An identifier's value: an unquoted word folded (ASCII) to lower case, a quoted one as
    written, its doubled quotes undone."""
    raw = text[x.start:x.end]
    if x.kind is Kind.IDENT:
        return raw[1:-1].replace('""', '"') if raw.startswith('"') else raw
    return raw.translate(_LOWER)


_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _has_alias(text: str, after: Lexeme | None) -> bool:
    """Does the FROM item whose name is followed by ``after`` have an alias?"""
    if after is None:
        return False
    if after.kind is Kind.IDENT:
        return True
    word = text[after.start:after.end].lower()
    return after.kind is Kind.WORD and (word == "as" or word not in _NOT_ALIAS)


@dataclass(frozen=True, slots=True)
class Attached:
    """One statement that gives the new relation something the old one has. ``index``: for a
    statement that creates an index (also one behind a PRIMARY KEY / UNIQUE / EXCLUDE
    constraint), (the temporary name it is created under, the original name it takes at the
    swap), both in the new relation's schema; None otherwise."""

    part: str  # one of PARTS
    statement: sql.Composable
    index: tuple[str, str] | None = None


PARTS = frozenset({"options", "indexes", "primary_key", "constraints", "foreign_keys",
                   "triggers", "rules", "policies", "grants", "comments", "owner",
                   "replica_identity", "statistics"})


def temp_name(name: str, job: int, tag: str = "rb") -> str:
    """``<name>__<tag><job>``, the base cut so that the whole fits in 63 bytes (PostgreSQL's
    identifier limit), never in the middle of a UTF-8 character.

    >>> temp_name("orders", 42), len(temp_name("é" * 40, 7).encode())
    ('orders__rb42', 63)
    """
    suffix = f"__{tag}{job}"
    room = NAME_BYTES - len(suffix.encode())
    if room < 1:
        raise ValueError(f"the suffix {suffix!r} leaves no room for a name")
    base = name.encode()[:room].decode(errors="ignore")
    return base + suffix


def attached_ddl(conn: Conn, relation: int, new: QualifiedName, job: int, *,
                 include: frozenset[str]) -> list[Attached]:
    """Statements that give the relation ``new`` what ``relation`` has attached, for the parts
    named in ``include`` (see PARTS), in an order that runs; index names are
    ``temp_name(original, job)``."""
    raise NotImplementedError
