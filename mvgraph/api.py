"""The library's entry points: the same operations the CLI offers, returning typed values."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mvgraph.errors import SqlLoadErrors, UsageError

# psycopg, the catalog and the graph module (networkx) are imported by the calls that use
# them: a graph from SQL files with a warm parse cache needs no driver and no parser.
if TYPE_CHECKING:
    import psycopg

    from mvgraph.db.install import InitReport
    from mvgraph.graph import MVGraph
    from mvgraph.jobs.handle import Job
    from mvgraph.jobs.store import JobInfo
    from mvgraph.scheduler.service import SyncReport
    from mvgraph.scheduler.store import ScheduleInfo, SlotRecord


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
    from mvgraph.graph import MVGraph

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
        # the only cycles left are views reading themselves: warned about and left out
        graph = MVGraph.from_definitions(defs, strict=strict, on_cycle="warn")
        graph.ignored_statements = loaded.ignored
        graph.warnings[:0] = loaded.warnings
        graph.load_errors = loaded.errors
        return graph
    from mvgraph.catalog import catalog_graph
    from mvgraph.db.connect import connect

    if conn is not None:
        return catalog_graph(conn, schemas, strict=strict)
    with connect(dsn) as own:
        return catalog_graph(own, schemas, strict=strict)


def init(target: str | psycopg.Connection[tuple[object, ...]] | None = None) -> InitReport:
    """Install or upgrade mvgraph's schema and, as a superuser, its event triggers, as
    ``mvgraph init`` does; the only call that creates anything of mvgraph's. The other calls
    raise ``SchemaError`` (one line: run ``mvgraph init``) on a database it was not run in.

    Raises:
        PermissionDenied: the role may not create or alter the schema.
        SchemaError: the schema is newer than this mvgraph.
    """
    from mvgraph.db.connect import session
    from mvgraph.db.install import init as install

    with session(target, lambda _conn: None) as conn:
        return install(conn)


def grant(role: str, level: str,
          target: str | psycopg.Connection[tuple[object, ...]] | None = None) -> list[str]:
    """Give ``role`` one of mvgraph's privilege levels (viewer, operator, worker, admin),
    replacing any other, as ``mvgraph grant`` does; returns the GRANT / REVOKE commands run.

    Raises:
        UsageError: no such level.
        PermissionDenied: the caller is not an mvgraph administrator.
    """
    from mvgraph.db.connect import session
    from mvgraph.db.install import require_schema
    from mvgraph.security import levels

    with session(target, require_schema) as conn:
        return levels.grant(conn, role, level)


def revoke(role: str,
           target: str | psycopg.Connection[tuple[object, ...]] | None = None) -> list[str]:
    """Take every mvgraph privilege from ``role`` (at once, also in its open sessions), as
    ``mvgraph revoke`` does; returns the REVOKE commands run."""
    from mvgraph.db.connect import session
    from mvgraph.db.install import require_schema
    from mvgraph.security import levels

    with session(target, require_schema) as conn:
        return levels.revoke(conn, role)


# ---- jobs (the graph above is another module's; these are the jobs' entry points) -----------

def submit(statement: str, *, dsn: str | None = None) -> Job:
    """Queue a statement as a background job, as ``SELECT mvgraph.submit(statement)`` does:
    a REFRESH form is planned as a refresh, CREATE MATERIALIZED VIEW is created WITH NO DATA
    now and populated by the job, any other statement runs as it is. Returns the ``Job`` (an
    int: its id), to watch (``progress``, ``steps``, ``wait``) and steer (``cancel``,
    ``suspend``)."""
    from mvgraph.jobs import store
    from mvgraph.jobs.handle import Job
    from mvgraph.refresh.service import submit_session

    with submit_session(dsn) as conn:
        return Job(store.submit(conn, statement), dsn)


def job_result(job: int, *, dsn: str | None = None) -> dict[str, Any]:
    """``mvgraph.job_result(id)``: status, error, steps by status and the job's result (a
    background statement's tag, notices, columns, first rows, truncated)."""
    from mvgraph.jobs import store
    from mvgraph.refresh.service import submit_session

    with submit_session(dsn) as conn:
        return store.result(conn, job)


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


# ---- schedules (`mvgraph daemon` fires them) -------------------------------------------------

def add_schedule(view: str, *, every: str | None = None, start: str | None = None,
                 cron: str | None = None, target_lag: str | None = None, tz: str | None = None,
                 behavior: str | None = None, overlap: str = "skip", dsn: str | None = None,
                 search_path: Sequence[str] = ("public",)) -> ScheduleInfo:
    """Schedule a materialized view: ``every`` (with an optional ``start``), ``cron`` or
    ``target_lag``, read in time zone ``tz`` (default UTC); one schedule per view.

    Example::

        s = mvgraph.add_schedule("mv5", every="1 hour", behavior="cascade backward")
        s.next_slot()  # the next full hour

    Raises:
        UnknownRelation (exit 4), UsageError (bad interval, cron, zone: exit 2),
        DatabaseError (the view already has a schedule: exit 1).
    """
    from mvgraph.refresh.service import session
    from mvgraph.scheduler import service

    with session(dsn) as conn:
        return service.add(conn, view, service.Clock(every, start, cron, target_lag, tz),
                           behavior=behavior, overlap=overlap, search_path=search_path)


def alter_schedule(view: str, *, every: str | None = None, start: str | None = None,
                   cron: str | None = None, target_lag: str | None = None,
                   tz: str | None = None, behavior: str | None = None,
                   overlap: str | None = None, dsn: str | None = None,
                   search_path: Sequence[str] = ("public",)) -> ScheduleInfo:
    """Change what is given of a view's schedule (``every`` alone keeps the start)."""
    from mvgraph.refresh.service import session
    from mvgraph.scheduler import service

    with session(dsn) as conn:
        return service.alter(conn, view, service.Clock(every, start, cron, target_lag, tz),
                             behavior=behavior, overlap=overlap, search_path=search_path)


def list_schedules(dsn: str | None = None) -> list[ScheduleInfo]:
    """Every schedule; ``next_slot()`` gives its next run without a daemon."""
    from mvgraph.refresh.service import session
    from mvgraph.scheduler import store

    with session(dsn) as conn:
        return store.schedules(conn)


def remove_schedule(view: str, *, dsn: str | None = None,
                    search_path: Sequence[str] = ("public",)) -> str:
    """Remove a view's schedule; returns its name."""
    from mvgraph.refresh.service import session
    from mvgraph.scheduler import service

    with session(dsn) as conn:
        return service.remove(conn, view, search_path)


def pause_schedule(view: str, *, dsn: str | None = None,
                   search_path: Sequence[str] = ("public",)) -> ScheduleInfo:
    """Stop firing a schedule until resumed."""
    return _enable(view, False, dsn, search_path)


def resume_schedule(view: str, *, dsn: str | None = None,
                    search_path: Sequence[str] = ("public",)) -> ScheduleInfo:
    """Fire a paused or broken schedule again (clears is_broken and the failure count)."""
    return _enable(view, True, dsn, search_path)


def _enable(view: str, enabled: bool, dsn: str | None,
            search_path: Sequence[str]) -> ScheduleInfo:
    from mvgraph.refresh.service import session
    from mvgraph.scheduler import service

    with session(dsn) as conn:
        return service.set_enabled(conn, view, enabled, search_path)


def run_schedule_now(view: str, *, dsn: str | None = None,
                     search_path: Sequence[str] = ("public",)) -> int:
    """Queue the schedule's refresh as a job now (linked to it in its history); the job id."""
    from mvgraph.refresh.service import session
    from mvgraph.scheduler import service

    with session(dsn) as conn:
        return service.run_now(conn, view, search_path)


def schedule_history(view: str, *, dsn: str | None = None,
                     search_path: Sequence[str] = ("public",),
                     limit: int = 100) -> list[SlotRecord]:
    """The schedule's firings, newest first: slot, status, job id, its status, start, end."""
    from mvgraph.refresh.service import session
    from mvgraph.scheduler import store

    with session(dsn) as conn:
        return store.history(conn, store.get(conn, view, list(search_path)).id, limit)


def sync_schedules(paths: Sequence[str | Path], *, dsn: str | None = None,
                   search_path: Sequence[str] = ("public",)) -> SyncReport:
    """Make the schedules match the ``REFRESH ... EVERY`` clauses of SQL files."""
    from mvgraph.refresh.service import session
    from mvgraph.scheduler import service

    with session(dsn) as conn:
        return service.sync_from_sql(conn, paths, search_path)
