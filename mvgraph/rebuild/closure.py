"""What a rebuild must carry over: a relation and everything built on or attached to it,
read from the catalog (the ``prepare`` step), as DDL that recreates each piece under a new
name.

Every statement here is built with ``psycopg.sql`` (identifiers quoted) or is text the server
itself wrote (``pg_get_viewdef``, ``pg_get_indexdef``, ``pg_get_constraintdef``,
``pg_get_triggerdef``, ``pg_get_expr``), with the names it holds rewritten token by token
(:func:`rename_relations`), never by pattern over the text.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

Conn = psycopg.Connection[tuple[object, ...]]
QualifiedName = tuple[str, str]  # (schema, name), as stored in the catalog (not quoted)


@dataclass(frozen=True, slots=True)
class Column:
    """A column of the rebuilt table."""

    name: str
    type_sql: str  # format_type(atttypid, atttypmod)
    not_null: bool
    default_sql: str | None  # pg_get_expr(adbin): None when there is none
    generated: bool  # GENERATED ALWAYS AS (...) STORED: never copied, computed by the server
    identity: str  # '' , 'a' (ALWAYS) or 'd' (BY DEFAULT)


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
    raise NotImplementedError


def rename_relations(definition: str, renames: dict[QualifiedName, QualifiedName]) -> str:
    """``definition`` (server-written SQL with every relation name schema-qualified) with each
    reference to a relation in ``renames`` replaced by its new name; a reference with no
    alias gets its old name as alias, so column references stay valid."""
    raise NotImplementedError


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
    identifier limit), never in the middle of a UTF-8 character."""
    raise NotImplementedError


def attached_ddl(conn: Conn, relation: int, new: QualifiedName, job: int, *,
                 include: frozenset[str]) -> list[Attached]:
    """Statements that give the relation ``new`` what ``relation`` has attached, for the parts
    named in ``include`` (see PARTS), in an order that runs; index names are
    ``temp_name(original, job)``."""
    raise NotImplementedError
