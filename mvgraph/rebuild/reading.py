"""Reading the catalog for a rebuild: named queries of ``mvgraph/rebuild/queries.sql``, run
with ``search_path`` = '' so that the server qualifies every name it writes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row

from mvgraph.db.queries import query

Conn = psycopg.Connection[tuple[object, ...]]


@contextmanager
def qualified_names(conn: Conn) -> Iterator[None]:
    """A transaction (a savepoint inside one) with ``search_path`` set to '' (SET LOCAL), so
    that everything the server writes (``pg_get_viewdef``, ``pg_get_expr``...) names each
    relation, type and function with its schema; the caller's path is back afterwards."""
    with conn.transaction():
        old = one(conn, "rb_set_search_path", path="")["old"]
        yield
        one(conn, "rb_set_search_path", path=old)


def rows(conn: Conn, name: str, **params: object) -> list[dict[str, Any]]:
    """The rows of a named query of mvgraph/rebuild/queries.sql, as dicts."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query(name, "mvgraph.rebuild"), params).fetchall()


def one(conn: Conn, name: str, **params: object) -> dict[str, Any]:
    """The first row of a named query; LookupError when there is none."""
    found = rows(conn, name, **params)
    if not found:
        raise LookupError(f"relation {params.get('oid')} does not exist")
    return found[0]
