"""What a worker does for the job kinds other than ``refresh``.

``sql`` (any statement, like pg_background): one step, run on a connection logged in as the
submitter, with the search path recorded at submit and the ``statement_timeout`` and
``lock_timeout`` settings where they are set. The statement runs in a transaction together
with the writing of its outcome, so a worker that dies mid-statement leaves nothing done and
the job is safely run again; a statement that cannot run in a transaction (VACUUM, CREATE
INDEX CONCURRENTLY, ...) runs again in autocommit. A job of several statements runs them one
by one in that one transaction (as PostgreSQL runs a multi-statement query string) and keeps
each one's command tag (``tags``). The result kept in ``job.result``: the command tag, the
notices, the columns and the first rows of the (last) statement (at most ``ROW_LIMIT`` rows
and ``BYTE_LIMIT`` bytes of JSON; ``truncated`` says when more came).

``create`` (a background CREATE MATERIALIZED VIEW): the view exists WITH NO DATA since submit;
the job is a refresh of it. A DROP of the view cancels the job: the ``mvgraph_sql_drop`` event
trigger closes a job that is not running, ``watch_drop`` cancels the running REFRESH when a
DROP waits for it, and a job whose view is gone when it starts ends ``cancelled``. Cancelling
the job drops the view (``mvgraph.drop_cancelled_view``, with the submitter's rights): the
cancelling session does it for a job not yet running when it may; otherwise the worker does,
on the job's connection (the submitter's), once the REFRESH is cancelled
(``remove_cancelled``) or when it claims a creation cancelled by someone who may not drop the
view (``cancelled_before_start``).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
from psycopg import errors as pgerrors

from mvgraph.db.connect import connect
from mvgraph.db.outage import session_lost
from mvgraph.db.queries import query
from mvgraph.errors import MvgraphError, translate
from mvgraph.jobs import store
from mvgraph.jobs.store import ClaimedJob, Conn
from mvgraph.model.status import JobStatus, StepStatus

log = logging.getLogger("mvgraph.worker")
ROW_LIMIT = 100  # rows kept of a statement's result
BYTE_LIMIT = 64 * 1024  # bytes of JSON kept of a statement's rows
NOTICE_LIMIT = 100  # notices kept
WATCH_S = 0.2  # how often a running creation looks for a DROP waiting on its view

# Statements that return rows: streamed (others are read whole: they rarely return many).
_QUERY = re.compile(r"^\s*(\(\s*)*(SELECT|WITH|VALUES|TABLE|SHOW|EXPLAIN|FETCH)\b", re.IGNORECASE)


class _Outcome:
    """What one statement gave: tag, columns, the first rows, notices."""

    def __init__(self) -> None:
        self.tag = ""
        self.columns: list[str] = []
        self.rows: list[list[object]] = []
        self.row_count = 0
        self.rows_affected: int | None = None
        self.truncated = False
        self.notices: list[str] = []
        self.notices_dropped = 0
        self.tags: list[str] = []  # each statement's tag, in order (a job of several)
        self.statements = 1

    def next_statement(self) -> None:
        """Start the next statement of the job: the rows kept are the last statement's."""
        self.tag = ""
        self.columns = []
        self.rows = []
        self.row_count = 0
        self.rows_affected = None
        self.truncated = False

    def notice(self, diag: psycopg.errors.Diagnostic) -> None:
        if len(self.notices) >= NOTICE_LIMIT:
            self.notices_dropped += 1
            return
        self.notices.append(f"{diag.severity or 'NOTICE'}: {diag.message_primary or ''}")

    def to_json(self) -> str:
        out: dict[str, Any] = {"tag": self.tag, "columns": self.columns, "rows": self.rows,
                               "row_count": self.row_count, "truncated": self.truncated,
                               "notices": self.notices}
        if self.rows_affected is not None:
            out["rows_affected"] = self.rows_affected
        if self.notices_dropped:
            out["notices_dropped"] = self.notices_dropped
        if self.statements > 1:
            out["tags"] = self.tags
        return json.dumps(out, default=str)


def run_sql(conn: Conn, job: ClaimedJob) -> None:
    """Run a ``sql`` job's statement and record its outcome; the job ends done, failed or
    cancelled (or is left alone when another worker took it over). ``conn`` is logged in as
    the job's login with the role set to its owner (the worker's owner connection): what the
    statement may do is bounded by PostgreSQL, whatever it does."""
    path = str(job.options.get("search_path_setting") or '"$user", public')
    statements = _statements(job.statement)
    conn.execute(query("sql_job_step"), {"job": job.id, "reason": "background statement"})
    store.step_running(conn, job.id, 1)
    outcome = _Outcome()
    outcome.statements = len(statements)
    conn.add_notice_handler(outcome.notice)
    started = time.monotonic()
    try:
        try:
            with conn.transaction():
                _context(conn, path, local=True)
                for text in statements:
                    outcome.next_statement()
                    _run(conn, text, outcome)
                    outcome.tags.append(outcome.tag)
                conn.execute(query("sql_job_guard"))  # whatever the statement set
                row = conn.execute(query("sql_job_done"), {
                    "job": job.id, "attempt": job.attempt, "result": outcome.to_json(),
                    "duration": time.monotonic() - started,
                    "rows": outcome.rows_affected}).fetchone()
                if not row or not row[0]:
                    raise psycopg.Rollback()  # cancelled, or no longer this attempt's
        except pgerrors.ActiveSqlTransaction:  # VACUUM and friends: autocommit
            if len(statements) > 1:  # one transaction for them all, as PostgreSQL's
                raise
            conn.remove_notice_handler(outcome.notice)
            outcome = _Outcome()
            conn.add_notice_handler(outcome.notice)
            try:
                _context(conn, path, local=False)
                _run(conn, job.statement, outcome)
            finally:
                if not conn.closed and not conn.broken:
                    conn.execute(query("discard_all"))  # whatever the statement set
            row = conn.execute(query("sql_job_done"), {
                "job": job.id, "attempt": job.attempt, "result": outcome.to_json(),
                "duration": time.monotonic() - started, "rows": outcome.rows_affected}
            ).fetchone()
        if row and row[0]:
            log.info("job %d: done (%s)", job.id, outcome.tag)
            return
        _closed_otherwise(conn, job, outcome, started, None)
    except psycopg.OperationalError as exc:
        if session_lost(exc, conn):  # the connection is gone: the worker requeues the job
            raise
        _closed_otherwise(conn, job, outcome, started, exc)
    except psycopg.Error as exc:
        _closed_otherwise(conn, job, outcome, started, exc)


def _statements(text: str) -> list[str]:
    """The job's statements: the text as it is when it holds one (or none: PostgreSQL says
    so), else each statement of it, split as psql splits a script."""
    from mvgraph.sql.dialect import split_statements

    try:
        found = [statement for _line, statement in split_statements(text)]
    except MvgraphError:  # a text the lexer cannot split: PostgreSQL's message will say why
        return [text]
    return found if len(found) > 1 else [text]


def _context(conn: Conn, path: str, *, local: bool) -> None:
    conn.execute(query("sql_job_context"), {"path": path, "local": local})


def _run(conn: Conn, statement: str, outcome: _Outcome) -> None:
    """Run the statement, keeping the first rows of its result. A query is streamed, so only
    the kept rows stay in memory; every row is read (a statement with RETURNING completes)."""
    with conn.cursor() as cur:
        if _QUERY.match(statement):
            try:
                _keep(outcome, cur.stream(statement.encode()))  # bytes: no placeholders
            except psycopg.ProgrammingError as exc:  # it ran, but returned no rows
                if "didn't produce a result" not in str(exc):
                    raise
        else:
            cur.execute(statement.encode())
            if cur.description is not None:
                _keep(outcome, iter(cur))
        outcome.tag = cur.statusmessage or outcome.tag
        outcome.columns = [d.name for d in cur.description or ()]
        if cur.description is None and cur.rowcount >= 0:
            outcome.rows_affected = cur.rowcount


def _keep(outcome: _Outcome, rows: Iterator[tuple[object, ...]]) -> None:
    size = 0
    for row in rows:
        outcome.row_count += 1
        if outcome.truncated:
            continue
        cells: list[object] = [_plain(v) for v in row]
        n = len(json.dumps(cells, default=str))
        if len(outcome.rows) >= ROW_LIMIT or size + n > BYTE_LIMIT:
            outcome.truncated = True
            continue
        outcome.rows.append(cells)
        size += n
    if not outcome.tag:
        outcome.tag = f"SELECT {outcome.row_count}"


def _plain(value: object) -> object:
    from mvgraph.pgvalues import json_value  # JSON values: a jsonb object stays an object

    return json_value(value)


def _closed_otherwise(conn: Conn, job: ClaimedJob, outcome: _Outcome, started: float,
                      exc: psycopg.Error | None) -> None:
    """The statement failed, was cancelled, or the job is no longer this attempt's."""
    with suppress(psycopg.Error):  # settings the statement left in the session
        conn.execute(query("discard_all"))
    asked = store.pending_request(conn, job.id, job.attempt)
    if asked == "lost":
        log.warning("job %d: taken over elsewhere; its outcome here is dropped", job.id)
        return
    cancelled = asked == "cancel"
    if cancelled:
        error = "cancelled"
    elif exc is not None:
        error = str(translate(exc))
        if isinstance(exc, pgerrors.SyntaxError) and "multiple commands" in error:
            error += "; submit one statement per job"
        if outcome.statements > 1:
            error = f"statement {len(outcome.tags) + 1} of {outcome.statements}: {error}"
            if isinstance(exc, pgerrors.ActiveSqlTransaction):
                error += ("; a job's statements run in one transaction: submit this one as a "
                          "job of its own")
    else:
        error = "the job changed while its statement ran; nothing was kept"
    status = StepStatus.CANCELLED if cancelled else StepStatus.FAILED
    conn.execute(query("sql_job_result"), {"job": job.id, "attempt": job.attempt,
                                           "result": outcome.to_json()})
    conn.execute(query("step_finished"), {
        "status": status.value, "reason": "background statement",
        "duration": time.monotonic() - started, "error": error, "concurrent": False,
        "job": job.id, "seq": 1})
    store.finish(conn, job.id, JobStatus.CANCELLED if cancelled else JobStatus.FAILED,
                 error, attempt=job.attempt)
    log.info("job %d: %s", job.id, "cancelled" if cancelled else f"failed: {error}")


# ---- create -------------------------------------------------------------------------------------

def view_exists(conn: Conn, job: ClaimedJob) -> bool:
    """The view a ``create`` job populates is still there (same oid, same name)."""
    row = conn.execute(query("create_job_view"), {"oid": job.options.get("mv"),
                                                  "name": job.options.get("name")}).fetchone()
    return bool(row and row[0])


def dropped(conn: Conn, job: ClaimedJob) -> None:
    """Close a ``create`` job whose view was dropped: cancelled, with a message that says so."""
    message = f"cancelled: materialized view {job.options.get('name')} was dropped"
    conn.execute(query("cancel_pending_steps"), {"job": job.id})
    store.finish(conn, job.id, JobStatus.CANCELLED, message, attempt=job.attempt)
    log.info("job %d: %s", job.id, message)


@contextmanager
def watch_drop(dsn: str | None, job: ClaimedJob) -> Iterator[threading.Event]:
    """While a creation runs, cancel it when a DROP waits for its view (the DROP then goes
    ahead); the event is set when that happened."""
    seen = threading.Event()
    done = threading.Event()

    def watch() -> None:
        try:
            with connect(dsn, application_name=f"mvgraph job {job.id} watch") as conn:
                while not done.wait(WATCH_S):
                    row = conn.execute(query("drop_waiting"),
                                       {"oid": job.options.get("mv")}).fetchone()
                    if row and row[0]:
                        seen.set()
                        store.cancel(conn, job.id)
                        return
        except (psycopg.Error, Exception) as exc:  # the job goes on; a DROP then waits for it
            log.warning("job %d: cannot watch for a DROP of its view (%s)", job.id, exc)

    thread = threading.Thread(target=watch, name=f"job-{job.id}-watch", daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        done.set()
        thread.join(5)


def cancelled_before_start(conn: Conn, job: ClaimedJob) -> bool:
    """A creation cancelled before it ran by a role that may not drop its view (the job came
    back marked ``drop_on_cancel``): close it cancelled and drop the view here, logged in as
    its submitter. False (nothing done) for any other job."""
    if not job.options.get("drop_on_cancel"):
        return False
    conn.execute(query("cancel_steps"), {"job": job.id, "why": "job cancelled before this step"})
    store.finish(conn, job.id, JobStatus.CANCELLED, None, attempt=job.attempt)
    remove_cancelled(conn, job)
    return True


def remove_cancelled(conn: Conn, job: ClaimedJob) -> None:
    """Drop the view of a cancelled creation with the submitter's rights (this connection is
    logged in as the submitter), as RisingWave drops a cancelled background creation. A view
    something else now depends on is left in place, with a warning."""
    try:
        row = conn.execute(query("drop_cancelled_view"), {"job": job.id}).fetchone()
    except psycopg.Error as exc:
        log.warning("job %d: cannot drop the view it created (%s)", job.id, translate(exc))
        return
    if row and row[0]:
        log.info("job %d: cancelled; materialized view %s dropped", job.id, row[0])
    elif view_exists(conn, job):
        log.warning("job %d: cancelled; materialized view %s left in place (something depends "
                    "on it)", job.id, job.options.get("name"))
