"""The library's entry points: the same operations the CLI offers, returning typed values."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from mvgraph.catalog import catalog_graph
from mvgraph.db.connect import connect
from mvgraph.errors import SqlLoadErrors, UsageError
from mvgraph.graph import MVGraph

if TYPE_CHECKING:
    from mvgraph.jobs.handle import Job
    from mvgraph.jobs.store import JobInfo


def load_graph(
    *,
    sql: Iterable[str | Path] | None = None,
    dsn: str | None = None,
    conn: psycopg.Connection[tuple[object, ...]] | None = None,
    search_path: Sequence[str] = ("public",),
    schemas: Sequence[str] | None = None,
    strict: bool = False,
    use_cache: bool = True,
    encoding: str = "utf-8",
    keep_going: bool = False,
    resolve_with: str | psycopg.Connection[tuple[object, ...]] | None = None,
) -> MVGraph:
    """Build the graph from SQL files (``sql``) or from a live database (``dsn`` or ``conn``).

    Example::

        g = load_graph(sql=["mvgraph/examples/gaussdb_nested"])
        [str(n) for n in g.select("+mv6")]
        # ['public.test_table', 'public.mv1', 'public.mv5', 'public.mv6']

    SQL files are decoded with ``encoding`` (a UTF-8 byte order mark is dropped); binary files
    found in folders are skipped with a warning (``graph.warnings``). Every file is read to its
    end: statements that do not parse, files that are not text and definitions in a cycle are
    all reported together, or, with ``keep_going``, left out of the graph and listed in
    ``graph.load_errors``.

    With ``resolve_with`` (a DSN or a connection not inside a transaction), the SQL files stay
    the source and that server resolves the views sqlglot cannot parse: each is created in a
    transaction that is always rolled back and its references read from pg_depend; its
    ``source`` then reads ``file.sql:12 (resolved by the server)``. The server is contacted only
    when a statement failed to parse; one it refuses too stays a failure, with its reason.

    Raises:
        UsageError: both or neither source given, a missing path, an unknown encoding.
        SqlLoadErrors: SQL files failed (one ``file:line: message`` per failure), unless
            ``keep_going``.
        UndefinedReference (strict), ConnectionFailed. A cycle among the database's views
            is not an error: a warning, and its views are left out (``graph.cycles``).
    """
    if sql is not None and (dsn is not None or conn is not None):
        raise UsageError("give SQL files or a database, not both; to let a server resolve what "
                         "sqlglot cannot parse, pass it as resolve_with")
    if resolve_with is not None and sql is None:
        raise UsageError("resolve_with needs SQL files (sql=...) to resolve")
    if sql is not None:
        from mvgraph.sqlfiles import load_sql

        resolver = None
        if resolve_with is not None:
            from mvgraph.serverparse import server_resolver

            resolver = server_resolver(resolve_with)
        loaded = load_sql(sql, search_path=search_path, use_cache=use_cache, encoding=encoding,
                          resolver=resolver)
        if loaded.errors and not keep_going:
            raise SqlLoadErrors(loaded.errors, len(loaded.files), loaded.warnings)
        defs = loaded.definitions
        if schemas:
            defs = [d for d in defs if d.name.schema in set(schemas)]
        graph = MVGraph.from_definitions(defs, strict=strict)
        graph.ignored_statements = loaded.ignored
        graph.warnings[:0] = loaded.warnings
        graph.load_errors = loaded.errors
        return graph
    if conn is not None:
        return catalog_graph(conn, schemas, strict=strict)
    with connect(dsn) as own:
        return catalog_graph(own, schemas, strict=strict)



# ---- jobs (the graph above is another module's; these are the jobs' entry points) -----------

def submit(statement: str, *, dsn: str | None = None) -> Job:
    """Queue a statement as a background job, as ``SELECT mvgraph.submit(statement)`` does
    (for now ``REFRESH MATERIALIZED VIEW name [behaviour]``); returns the ``Job`` (an int: its
    id), to watch (``progress``, ``steps``, ``wait``) and steer (``cancel``, ``suspend``)."""
    from mvgraph.jobs import store
    from mvgraph.jobs.handle import Job, session

    with session(dsn) as conn:
        return Job(store.submit(conn, statement), dsn)


def submit_refresh(dsn: str | None, targets: str | Sequence[str], behavior: str | None = None,
                   **options: Any) -> Job:
    """Plan a refresh now and queue it as a background job (``mvgraph refresh --background``);
    takes the options of ``mvgraph.refresh``; returns the ``Job`` (an int: its id)."""
    from mvgraph.jobs.handle import Job
    from mvgraph.refresh.service import submit_refresh as queue

    return Job(queue(dsn, targets, behavior, **options), dsn)


def list_jobs(dsn: str | None = None, *, every: bool = False) -> list[JobInfo]:
    """Unfinished jobs and those finished in the last hour (``every``: all kept), with progress,
    elapsed time and estimated time left, after closing or requeueing jobs whose owner died."""
    from mvgraph.jobs import store
    from mvgraph.jobs.handle import session

    with session(dsn) as conn:
        store.reap(conn)
        return store.jobs(conn, every)


def cancel_job(job: int, *, dsn: str | None = None) -> str:
    """Cancel a job from any process; returns its status, or ``cancelling``."""
    return _steer("cancel", job, dsn)


def suspend_job(job: int, *, dsn: str | None = None) -> str:
    """Suspend a job after its running steps; returns its status, or ``suspending``."""
    return _steer("suspend", job, dsn)


def resume_job(job: int, *, dsn: str | None = None) -> str:
    """Queue a suspended job again (a worker continues from its first unfinished step)."""
    return _steer("resume", job, dsn)


def prune_jobs(dsn: str | None = None, *, older_than_days: int | None = None) -> int:
    """Close jobs whose owner died, then delete finished jobs older than the retention
    (``older_than_days``, else the ``retention_days`` setting); returns how many went."""
    from mvgraph.jobs import store
    from mvgraph.refresh.service import session

    if older_than_days is not None and older_than_days < 0:
        raise UsageError("--older-than must be 0 or more days")
    with session(dsn) as conn:
        store.reap(conn)
        return store.purge(conn, older_than_days)


def _steer(verb: str, job: int, dsn: str | None) -> str:
    from mvgraph.jobs import store
    from mvgraph.jobs.handle import session

    with session(dsn) as conn:
        return str(getattr(store, verb)(conn, job))
