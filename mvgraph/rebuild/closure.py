"""What a rebuild must carry over: a relation and everything built on or attached to it,
read from the catalog (the ``prepare`` step), as DDL that recreates each piece under a new
name. The interface the rebuild engine codes against; the parts live in ``rename`` (token-by-
token rewrites of server-written SQL, temporary names), ``attached`` (:func:`attached_ddl`)
and ``reading`` (the named queries of ``queries.sql``, read with ``search_path`` = '').

Every statement is built with ``psycopg.sql`` (identifiers quoted) or is text the server
itself wrote (``pg_get_viewdef``, ``pg_get_indexdef``, ``pg_get_constraintdef``,
``pg_get_triggerdef``, ``pg_get_expr``), with the names it holds rewritten token by token
(:func:`rename_relations`), never by pattern over the text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import networkx as nx

from mvgraph.rebuild.attached import PARTS, Attached, attached_ddl
from mvgraph.rebuild.reading import Conn, one, qualified_names, rows
from mvgraph.rebuild.rename import QualifiedName, rename_relations, temp_name

__all__ = ["PARTS", "Attached", "Closure", "Column", "Conn", "Dependent", "QualifiedName",
           "attached_ddl", "qualified_names", "read_closure", "rename_relations", "temp_name"]


@dataclass(frozen=True, slots=True)
class Column:
    """A column of the rebuilt table."""

    name: str
    type_sql: str  # format_type(atttypid, atttypmod)
    not_null: bool
    default_sql: str | None  # pg_get_expr(adbin): None when there is none; for a generated
    # column, its expression
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
    # pg_get_viewdef(oid) read with search_path = '' (every name qualified), without its
    # trailing semicolon; what to run after creating it (options such as check_option,
    # indexes, INSTEAD OF triggers, rules, grants, comments, owner): attached_ddl(oid, ...)
    definition: str
    populated: bool  # a materialized view's relispopulated (views: True)
    depends_on: tuple[QualifiedName, ...]  # the closure's relations it reads directly (the
    # rebuilt relation included), also through a row type (``ROW(...)::s.t``)


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
    problems: tuple[str, ...]  # why it cannot be rebuilt (one line each); empty: it can.
    # Not checked here: privileges and ownership (the server's, when the DDL runs)


def read_closure(conn: Conn, relation: int) -> Closure:
    """Read ``relation`` (a table or materialized view oid) and its dependent closure."""
    with qualified_names(conn):
        row = one(conn, "rb_relation", oid=relation)
        columns = tuple(Column(**r) for r in rows(conn, "rb_columns", oid=relation))
        pk = rows(conn, "rb_primary_key", oid=relation)
        graph = nx.DiGraph()
        graph.add_node(relation)
        graph.add_edges_from((r["input"], r["dependent"])
                             for r in rows(conn, "rb_closure_edges", oid=relation))
        found = {r["oid"]: r for r in rows(conn, "rb_dependents", oids=list(graph))}
        members = {oid: (str(r["schema"]), str(r["name"])) for oid, r in found.items()}
        outside = rows(conn, "rb_outside_dependencies", oid=relation, oids=list(graph))
        fks = rows(conn, "rb_referencing_fks", oid=relation)
        sequences = rows(conn, "rb_owned_sequences", oid=relation)
        publications = rows(conn, "rb_publications", oid=relation)
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
