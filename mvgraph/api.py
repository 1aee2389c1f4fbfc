"""The library's entry points: the same operations the CLI offers, returning typed values."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import psycopg

from mvgraph.catalog import read_definitions
from mvgraph.db.connect import connect
from mvgraph.errors import UsageError
from mvgraph.graph import MVGraph


def load_graph(
    *,
    sql: Iterable[str | Path] | None = None,
    dsn: str | None = None,
    conn: psycopg.Connection[tuple[object, ...]] | None = None,
    search_path: Sequence[str] = ("public",),
    schemas: Sequence[str] | None = None,
    strict: bool = False,
    use_cache: bool = True,
) -> MVGraph:
    """Build the graph from SQL files (``sql``) or from a live database (``dsn`` or ``conn``).

    Example::

        g = load_graph(sql=["mvgraph/examples/gaussdb_nested"])
        [str(n) for n in g.select("+mv6")]
        # ['public.test_table', 'public.mv1', 'public.mv5', 'public.mv6']

    Raises:
        UsageError: both or neither source given.
        CycleError, UndefinedReference (strict), SqlParseError, ConnectionFailed.
    """
    if sql is not None and (dsn is not None or conn is not None):
        raise UsageError("give SQL files or a database, not both")
    if sql is not None:
        from mvgraph.sqlfiles import load_sql

        loaded = load_sql(sql, search_path=search_path, use_cache=use_cache)
        defs = loaded.definitions
        if schemas:
            defs = [d for d in defs if d.name.schema in set(schemas)]
        graph = MVGraph.from_definitions(defs, strict=strict)
        graph.ignored_statements = loaded.ignored
        return graph
    if conn is not None:
        return MVGraph.from_definitions(read_definitions(conn, schemas), strict=strict)
    with connect(dsn) as own:
        return MVGraph.from_definitions(read_definitions(own, schemas), strict=strict)
