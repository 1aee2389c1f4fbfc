"""The library's entry points: the same operations the CLI offers, returning typed values."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from mvgraph.errors import UsageError

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
        UndefinedReference: with ``strict``.
        ConnectionFailed: the database cannot be reached. (A cycle among the database's views
            is not an error: a warning, and its views are left out, ``graph.cycles``.)
    """
    if sql is not None and (dsn is not None or conn is not None):
        raise UsageError("give SQL files or a database, not both; to let a server resolve what "
                         "sqlglot cannot parse, pass it as resolve_with")
    if resolve_with is not None and sql is None:
        raise UsageError("resolve_with needs SQL files (sql=...) to resolve")
    if sql is not None:
        from mvgraph.sql.sqlfiles import graph_from_sql

        resolver = None
        if resolve_with is not None:
            from mvgraph.sql.serverparse import server_resolver

            resolver = server_resolver(resolve_with)
        return graph_from_sql(sql, search_path=search_path, schemas=schemas, strict=strict,
                              use_cache=use_cache, encoding=encoding, keep_going=keep_going,
                              resolver=resolver)
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


_LEVEL_WORDS = frozenset({"viewer", "operator", "worker", "admin"})


def _looks_like_dsn(value: object) -> bool:
    """A connection, a URI, a ``key=value`` conninfo or ``embedded`` (a role name is none)."""
    return not isinstance(value, str) or "=" in value or "://" in value or value == "embedded"


def _old_order(call: str, new: str) -> None:
    warnings.warn(f"mvgraph.{call}: the DSN comes first now ({new}); the old order still "
                  "works for now", DeprecationWarning, stacklevel=3)


def grant(dsn: str | psycopg.Connection[tuple[object, ...]] | None = None,
          role: str | None = None, level: str | None = None, *,
          target: str | psycopg.Connection[tuple[object, ...]] | None = None) -> list[str]:
    """``grant(dsn, role, level)``: give ``role`` one of mvgraph's privilege levels (viewer,
    operator, worker, admin), replacing any other, as ``mvgraph grant`` does; returns the
    GRANT / REVOKE commands run. The DSN comes first, as in every library call; keywords work
    too (``grant(role=..., level=..., dsn=...)``; ``target=`` is the old name of ``dsn``), and
    the old order ``grant(role, level[, target])`` is still understood (with a
    DeprecationWarning) because its second argument is a level word.

    Raises:
        UsageError: no such level, or no role given.
        PermissionDenied: the caller is not an mvgraph administrator.
    """
    from mvgraph.db.connect import session
    from mvgraph.db.install import require_schema
    from mvgraph.security import levels

    if isinstance(dsn, str) and isinstance(role, str) and role.lower() in _LEVEL_WORDS and (
            level is None or not (isinstance(level, str) and level.lower() in _LEVEL_WORDS)):
        _old_order("grant", "grant(dsn, role, level)")
        dsn, role, level = level, dsn, role  # grant(role, level[, target])
    dsn = target if dsn is None else dsn
    if role is None or level is None:
        raise UsageError("grant needs a role and a level: mvgraph.grant(dsn, role, level)")
    with session(dsn, require_schema) as conn:
        return levels.grant(conn, role, level)


def revoke(dsn: str | psycopg.Connection[tuple[object, ...]] | None = None,
           role: str | None = None, *,
           target: str | psycopg.Connection[tuple[object, ...]] | None = None) -> list[str]:
    """``revoke(dsn, role)``: take every mvgraph privilege from ``role`` (at once, also in its
    open sessions), as ``mvgraph revoke`` does; returns the REVOKE commands run. Keywords work
    too (``revoke(role=..., dsn=...)``; ``target=`` is the old name of ``dsn``); the old order
    ``revoke(role[, target])`` is still understood, with a DeprecationWarning, when the role
    comes alone or the second argument is plainly a DSN or a connection.

    Raises:
        UsageError: no role given.
    """
    from mvgraph.db.connect import session
    from mvgraph.db.install import require_schema
    from mvgraph.security import levels

    if isinstance(dsn, str) and (
            (role is None and not _looks_like_dsn(dsn))
            or (role is not None and _looks_like_dsn(role) and not _looks_like_dsn(dsn))):
        _old_order("revoke", "revoke(dsn, role)")
        dsn, role = role, dsn  # revoke(role[, target])
    dsn = target if dsn is None else dsn
    if role is None:
        raise UsageError("revoke needs a role: mvgraph.revoke(dsn, role)")
    with session(dsn, require_schema) as conn:
        return levels.revoke(conn, role)


# ---- jobs (the graph above is another module's; these are the jobs' entry points) -----------

@overload
def submit(dsn: str | None, statement: str, /) -> Job: ...
@overload
def submit(statement: str, /, *, dsn: str | None = None) -> Job: ...
@overload
def submit(*, dsn: str | None = None, statement: str) -> Job: ...


def submit(*args: str | None, dsn: str | None = None, statement: str | None = None) -> Job:
    """``submit(dsn, statement)``: queue a statement as a background job, as ``SELECT
    mvgraph.submit(statement)`` does: a REFRESH form is planned as a refresh, CREATE
    MATERIALIZED VIEW is created WITH NO DATA now and populated by the job, any other
    statement runs as it is. Returns the ``Job`` (an int: its id), to watch (``progress``,
    ``steps``, ``wait``) and steer (``cancel``, ``suspend``).

    The DSN comes first, as in ``refresh(dsn, ...)`` and ``submit_refresh(dsn, ...)``; the
    keyword form ``submit(statement, dsn=...)`` works too (a lone argument is the statement).

    Raises:
        UsageError: no statement, or more than two arguments.
    """
    from mvgraph.jobs import store
    from mvgraph.jobs.handle import Job
    from mvgraph.refresh.service import submit_session

    target, text = _dsn_and(args, dsn, statement, "submit", "statement")
    if not isinstance(text, str):
        raise UsageError("submit needs a statement: mvgraph.submit(dsn, statement)")
    with submit_session(target) as conn:
        return Job(store.submit(conn, text), target)


def _dsn_and(args: tuple[Any, ...], dsn: str | None, value: Any, call: str, what: str
             ) -> tuple[str | None, Any]:
    """``(dsn, value)`` from ``call(dsn, value)``, ``call(value, dsn=...)`` or keywords."""
    if len(args) > 2 or (len(args) == 2 and (dsn is not None or value is not None)) or (
            len(args) == 1 and value is not None and dsn is not None):
        raise UsageError(f"mvgraph.{call} takes (dsn, {what}); got {len(args)} positional "
                         "arguments and keywords that repeat them")
    if len(args) == 2:
        return args[0], args[1]
    if len(args) == 1:
        return (args[0], value) if value is not None else (dsn, args[0])
    return dsn, value


def _job_args(args: tuple[Any, ...], dsn: str | None, job: int | None, call: str
              ) -> tuple[str | None, int]:
    """``(dsn, job)`` from ``call(dsn, job)``, ``call(job, dsn=...)`` or keywords: the job is
    the int."""
    target, found = _dsn_and(args, dsn, job, call, "job")
    if not isinstance(found, int) or isinstance(found, bool):
        raise UsageError(f"mvgraph.{call} needs a job id (an int): mvgraph.{call}(dsn, job)")
    return target, found


def job_result(*args: Any, dsn: str | None = None, job: int | None = None) -> dict[str, Any]:
    """``job_result(dsn, job)`` (or ``job_result(job, dsn=...)``), as SQL's
    ``mvgraph.job_result(id)``: status, error, steps by status and the job's result (a
    background statement's tag, notices, columns, first rows as JSON values, truncated)."""
    from mvgraph.jobs import store
    from mvgraph.refresh.service import submit_session

    target, found = _job_args(args, dsn, job, "job_result")
    with submit_session(target) as conn:
        return store.result(conn, found)


def submit_refresh(dsn: str | None, targets: str | Sequence[str], behavior: str | None = None,
                   **options: Any) -> Job:
    """Plan a refresh now and queue it as a background job (``mvgraph refresh --background``);
    takes the options of ``mvgraph.refresh``; returns the ``Job`` (an int: its id)."""
    from mvgraph.jobs.handle import Job
    from mvgraph.refresh.service import submit_refresh as queue

    return Job(queue(dsn, targets, behavior, **options), dsn)


def rebuild_relation(dsn: str | None, target: str, *, actions: str | Sequence[str] = (),
            query: str | None = None, keep_source: bool = False, params: Sequence[str] = (),
            background: bool = False) -> Job:
    """Rebuild a table (``actions``: "ALTER COLUMN v TYPE bigint", ...) or a materialized view
    (``query``: its new query) online, with its dependent views (``mvgraph rebuild``; Hologres'
    ASYNC REBUILD). ``params``: ``WITH`` items ("binlog_mode", "batch_rows = 50000", ...).
    ``background``: queue it (a worker runs it) and return at once; otherwise run it here and
    return when it ended (done, cancelled or suspended).

    Example::

        job = mvgraph.rebuild_relation(dsn, "public.orders",
                                       actions="ALTER COLUMN qty TYPE bigint")
        job.status()  # JobStatus.DONE

    Raises:
        UsageError: neither or both of ``actions`` and ``query``, or an action that is not one.
        RebuildFailed: run here and failed; the message is PostgreSQL's or mvgraph's reason
            (the originals are as they were).
    """
    from mvgraph.jobs.handle import Job
    from mvgraph.model.status import RunStatus
    from mvgraph.rebuild import service
    from mvgraph.rebuild.control import RebuildFailed
    from mvgraph.refresh.service import submit_session

    text = service.statement_text(target, actions=[actions] if isinstance(actions, str)
                                  else list(actions), query_sql=query, keep_source=keep_source,
                                  params=params, asynchronous=background)
    with submit_session(dsn) as conn:
        if background:
            return Job(service.submit(conn, text), dsn)
        job, status = service.run_here(conn, text)
        if status is RunStatus.FAILED:
            raise RebuildFailed(f"rebuild {job} failed: {service.job_error(conn, job)}")
    return Job(job, dsn)


def list_jobs(dsn: str | None = None, *, every: bool = False) -> list[JobInfo]:
    """Unfinished jobs and those finished in the last hour (``every``: all kept), with progress,
    elapsed time and estimated time left, after closing or requeueing jobs whose owner died."""
    from mvgraph.jobs import store
    from mvgraph.jobs.handle import session

    with session(dsn) as conn:
        store.reap(conn)
        return store.jobs(conn, every)


def cancel_job(*args: Any, dsn: str | None = None, job: int | None = None) -> str:
    """``cancel_job(dsn, job)`` (or ``cancel_job(job, dsn=...)``): cancel a job from any
    process; returns its status, or ``cancelling``."""
    target, found = _job_args(args, dsn, job, "cancel_job")
    return _steer("cancel", found, target)


def suspend_job(*args: Any, dsn: str | None = None, job: int | None = None) -> str:
    """``suspend_job(dsn, job)`` (or ``suspend_job(job, dsn=...)``): suspend a job after its
    running steps; returns its status, or ``suspending``."""
    target, found = _job_args(args, dsn, job, "suspend_job")
    return _steer("suspend", found, target)


def resume_job(*args: Any, dsn: str | None = None, job: int | None = None) -> str:
    """``resume_job(dsn, job)`` (or ``resume_job(job, dsn=...)``): queue a suspended job again
    (a worker continues from its first unfinished step)."""
    target, found = _job_args(args, dsn, job, "resume_job")
    return _steer("resume", found, target)


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
                           behavior=_lag_behavior(target_lag, behavior), overlap=overlap,
                           search_path=search_path)


def _lag_behavior(target_lag: str | None, behavior: str | None) -> str | None:
    """A freshness target always runs CASCADE BACKWARD (``mvgraph.scheduler.lag``): stored as
    such, so that its schedule shows what the daemon runs; another behaviour is refused."""
    from mvgraph.refresh.behavior import RefreshBehavior
    from mvgraph.scheduler.lag import BEHAVIOR

    if target_lag is None:
        return behavior
    if behavior is not None and RefreshBehavior.parse(behavior) is not BEHAVIOR:
        raise UsageError(f"a freshness target (--target-lag) always runs "
                         f"{BEHAVIOR.value}, its whole upstream cascade; drop "
                         f"the behaviour {behavior!r}")
    return BEHAVIOR.value


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
                             behavior=_lag_behavior(target_lag, behavior), overlap=overlap,
                             search_path=search_path)


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
