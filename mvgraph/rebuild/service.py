"""Rebuild as a job: submitted (``ASYNC REBUILD``, ``mvgraph rebuild --background``), run here
(``REBUILD``, ``mvgraph rebuild``), or run by a worker; cleaned up after an interruption."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import psycopg

from mvgraph.db.connect import connect
from mvgraph.db.queries import query
from mvgraph.errors import MvgraphError, SqlParseError, UsageError, translate
from mvgraph.jobs import store
from mvgraph.model.status import JobKind, RunStatus
from mvgraph.rebuild.control import Control
from mvgraph.rebuild.parse import parse_actions, parse_rebuild
from mvgraph.rebuild.runner import Runner, drop_made
from mvgraph.rebuild.spec import RebuildStatement

if TYPE_CHECKING:
    from mvgraph.jobs.store import ClaimedJob

Conn = psycopg.Connection[tuple[object, ...]]


def statement_text(target: str, *, actions: Sequence[str] = (), query_sql: str | None = None,
                   keep_source: bool = False, params: Sequence[str] = (),
                   asynchronous: bool = True) -> str:
    """The rebuild statement for ``mvgraph rebuild``'s options (checked by the parser)."""
    with_items = (["keep_source"] if keep_source else []) + list(params)
    with_sql = f" WITH ({', '.join(with_items)})" if with_items else ""
    head = "ASYNC REBUILD" if asynchronous else "REBUILD"
    if query_sql is not None:
        if actions:
            raise UsageError("rebuild takes --action (a table) or --sql (a materialized view), "
                             "not both")
        text = f"{head} MATERIALIZED VIEW {target}{with_sql} AS {query_sql}"
    else:
        if not actions:
            raise UsageError("rebuild needs --action \"...\" (a table) or --sql \"...\" (a "
                             "materialized view's new query)")
        for action in actions:
            try:
                parse_actions(action)  # each one alone: a clear error names it
            except SqlParseError as exc:
                raise UsageError(f"--action {action!r}: {exc.message}") from None
        text = f"{head} TABLE {target}{with_sql} {', '.join(actions)}"
    parsed = parse_rebuild(text)
    if parsed is None:  # pragma: no cover - the text above always starts with REBUILD
        raise UsageError(f"not a rebuild: {text}")
    return text


def submit(conn: Conn, text: str) -> int:
    """Queue a rebuild statement as a job (``mvgraph.submit``); returns its id."""
    parse_rebuild(text)  # a malformed statement fails here, not in a worker
    return store.submit(conn, text)


def twin(conn: Conn, name: str) -> Conn:
    """A second autocommit connection with the same login as ``conn``."""
    params = conn.info.get_parameters()
    if conn.info.password:
        params["password"] = conn.info.password
    params["application_name"] = name
    return psycopg.Connection.connect(psycopg.conninfo.make_conninfo(**params),
                                      autocommit=True)


def run_here(conn: Conn, text: str, control: Control | None = None) -> tuple[int, RunStatus]:
    """Run a rebuild in this process (its job is a foreground job of this session; progress
    is written on a second connection of the same login)."""
    stmt = _parse(text)
    row = conn.execute(query("current_search_path")).fetchone()
    path = str(row[0]) if row else "public"
    job = store.create_running(conn, JobKind.REBUILD, text, {"search_path_setting": path})
    with twin(conn, f"mvgraph rebuild {job}") as book:
        runner = Runner(conn, book, job, None, stmt, path, control)
        try:
            status = runner.run()
        finally:
            if not conn.closed and not conn.broken:
                conn.rollback()
                conn.execute(query("unlock_job"), {"job": job})
    return job, status


def run_job(conn: Conn, owner_dsn: str, job: ClaimedJob, control: Control) -> RunStatus:
    """A worker runs a claimed rebuild job on ``conn`` (the submitter's login)."""
    stmt = _parse(job.statement)
    path = str(job.options.get("search_path_setting") or '"$user", public')
    with connect(owner_dsn, application_name=f"mvgraph rebuild {job.id}") as book:
        book.autocommit = True
        try:
            return Runner(conn, book, job.id, job.attempt, stmt, path, control).run()
        finally:
            if not conn.closed and not conn.broken:
                conn.rollback()
                conn.execute(query("discard_all"))


def clean(conn: Conn, job: int) -> list[str]:
    """``mvgraph rebuild cleanup ID``: drop what an interrupted rebuild left (with this
    session's rights); the job, if not finished, ends cancelled."""
    try:
        names = drop_made(conn, job)
        conn.execute(query("rebuild_cleaned"), {"job": job})
    except psycopg.Error as exc:
        raise translate(exc) from exc
    return names


def progress(conn: Conn, job: int) -> list[tuple[object, ...]]:
    """``mvgraph.rebuild_progress(id)`` rows."""
    try:
        return conn.execute(query("rebuild_progress"), {"job": str(job)}).fetchall()
    except psycopg.Error as exc:
        raise translate(exc) from exc


def job_error(conn: Conn, job: int) -> str | None:
    """Why a rebuild job failed (None: it did not)."""
    row = conn.execute(query("job_error"), {"job": job}).fetchone()
    return None if row is None or row[0] is None else str(row[0])


def _parse(text: str) -> RebuildStatement:
    stmt = parse_rebuild(text)
    if stmt is None:
        raise MvgraphError(f"not a rebuild statement: {text[:80]}")
    return stmt


