"""Runs one rebuild job: its steps in order, resumable, steerable (cancel, suspend, resume).

The rebuild's own connection (``conn``, logged in as the submitter) does the work; a second
connection of the same login (``book``) writes progress, so that it shows while ``conn`` holds
the transaction that blocks writers. A failure or a cancel before the swap drops what the
rebuild made (recorded as it was made) and leaves the originals as they were; a suspend keeps
it for RESUME; a lost session keeps it for the next worker, which resumes at the first
unfinished step (the write-block window's steps run again together: their transaction died
with the session, and with it the lock).
"""

from __future__ import annotations

import logging
from contextlib import suppress

import psycopg
from psycopg import sql

from mvgraph.db.queries import query
from mvgraph.errors import MvgraphError, translate
from mvgraph.jobs import store
from mvgraph.model.status import JobStatus, RunStatus, StepStatus
from mvgraph.rebuild.book import WINDOW, Book
from mvgraph.rebuild.control import Control, NothingToRebuild, RebuildFailed, Stopped
from mvgraph.rebuild.matview import ViewRebuild
from mvgraph.rebuild.spec import RebuildStatement
from mvgraph.rebuild.table import TableRebuild

log = logging.getLogger("mvgraph.rebuild")
Conn = psycopg.Connection[tuple[object, ...]]


class Runner:
    """One attempt at a rebuild job."""

    def __init__(self, conn: Conn, book_conn: Conn, job: int, attempt: int | None,
                 stmt: RebuildStatement, search_path: str, control: Control | None = None,
                 foreground: bool = False) -> None:
        self.conn = conn
        self.job = job
        self.attempt = attempt
        self.stmt = stmt
        self.search_path = search_path
        self.control = control or Control()
        self.control.cancel_query = conn.cancel_safe
        self.foreground = foreground
        kind: type[TableRebuild] | type[ViewRebuild] = (
            TableRebuild if stmt.kind == "table" else ViewRebuild)
        self.book = Book(book_conn, job, kind.STEPS, conn.info.backend_pid)
        self.work: TableRebuild | ViewRebuild = kind(self)

    # ---- steering ---------------------------------------------------------------------------
    def check(self) -> None:
        """Between steps and batches: stop when asked to."""
        asked = self.control.asked or self.book.request()
        if asked in ("cancel", "suspend", "lost"):
            raise Stopped(asked)

    def in_window(self) -> bool:
        return any(self.book.steps[n].status is StepStatus.RUNNING for n in WINDOW
                   if n in self.book.steps)

    # ---- running ----------------------------------------------------------------------------
    def run(self) -> RunStatus:
        """Run the unfinished steps; the job ends done, failed, cancelled or suspended (or is
        left for the next worker when this attempt lost its session or its lease)."""
        if not self.book.done("swap"):
            self.book.redo(tuple(n for n in WINDOW if n in self.book.steps))
        try:
            self._session()
            self.work.run()
        except NothingToRebuild as nothing:
            for name in self.book.steps:
                self.book.skip(name, str(nothing))
        except Stopped as stop:
            return self._stopped(stop.how)
        except (psycopg.OperationalError, MvgraphError) as exc:
            if isinstance(exc, psycopg.OperationalError) and self._session_lost(exc):
                log.warning("rebuild %d: session lost (%s)", self.job, exc)
                raise
            asked = self._asked(exc)
            return self._stopped(asked) if asked else self._failed(exc)
        except psycopg.Error as exc:
            asked = self._asked(exc)
            return self._stopped(asked) if asked else self._failed(exc)
        except Exception as exc:  # an mvgraph bug: the job says so, nothing is left behind
            log.exception("rebuild %d: internal error", self.job)
            return self._failed(RebuildFailed(f"internal error: {type(exc).__name__}: {exc}"))
        store.finish(self.book.conn, self.job, JobStatus.DONE, None, attempt=self.attempt,
                     foreground=self.foreground)
        log.info("rebuild %d: done", self.job)
        return RunStatus.OK

    def _asked(self, exc: BaseException) -> str:
        """What stops this attempt, after ``exc``: what the worker passed on, else, for a
        cancelled statement, the job's own request (CANCEL interrupts the backend its steps
        name, this rebuild's bookkeeping session, before the heartbeat passes it on)."""
        asked = self.control.asked
        if not asked and isinstance(exc, psycopg.errors.QueryCanceled):
            with suppress(psycopg.Error):
                asked = self.book.request()
        return asked if asked in ("cancel", "suspend", "lost") else ""

    def _session(self) -> None:
        """The session's search path (the submitter's, for the types and expressions of the
        statement) and the statement's ``rebuild_guc_*`` settings."""
        self.conn.execute(query("rebuild_set_guc"), {"name": "search_path",
                                                     "value": self.search_path})
        for name, value in self.stmt.params.gucs:
            self.conn.execute(query("rebuild_set_guc"), {"name": name, "value": value})

    def _session_lost(self, exc: psycopg.OperationalError) -> bool:
        from mvgraph.db.outage import session_lost
        return session_lost(exc, self.conn) or self.conn.broken

    def _rollback(self) -> None:
        with suppress(psycopg.Error):
            self.conn.rollback()

    def _stopped(self, how: str) -> RunStatus:
        self._rollback()
        if how == "lost":
            log.warning("rebuild %d: stopped (lease lost or worker stopping)", self.job)
            with suppress(psycopg.Error, MvgraphError):
                self.book.redo(tuple(n for n in self.book.steps
                                     if self.book.steps[n].status is StepStatus.RUNNING))
            return RunStatus.LOST
        if how == "suspend":
            self.book.redo(tuple(n for n in self.book.steps
                                 if self.book.steps[n].status is StepStatus.RUNNING))
            store.finish(self.book.conn, self.job, JobStatus.SUSPENDED, None,
                         attempt=self.attempt, foreground=self.foreground)
            log.info("rebuild %d: suspended", self.job)
            return RunStatus.SUSPENDED
        self.book.fail_running("cancelled", StepStatus.CANCELLED)
        self.clean()
        store.finish(self.book.conn, self.job, JobStatus.CANCELLED, "cancelled",
                     attempt=self.attempt, foreground=self.foreground)
        log.info("rebuild %d: cancelled", self.job)
        return RunStatus.CANCELLED

    def _failed(self, exc: BaseException) -> RunStatus:
        self._rollback()
        message = str(translate(exc)) if isinstance(exc, psycopg.Error) else str(exc)
        detail = exc.diag.message_detail if isinstance(exc, psycopg.Error) else None
        if detail and detail not in message:  # e.g. the key a new primary key finds twice
            message = f"{message}: {detail}"
        message = " ".join(message.split())
        self.book.fail_running(message)
        if not self.book.done("swap"):
            self.clean()
        store.finish(self.book.conn, self.job, JobStatus.FAILED, message,
                     attempt=self.attempt, foreground=self.foreground)
        log.info("rebuild %d: failed: %s", self.job, message)
        return RunStatus.FAILED

    def clean(self) -> None:
        """Drop what this rebuild made (as recorded), newest first; the originals stay."""
        drop_made(self.conn, self.job)


def drop_made(conn: Conn, job: int) -> list[str]:
    """Drop the temporary objects of a rebuild that still exist as recorded (with this
    session's rights), newest first; returns their names."""
    dropped: list[str] = []
    rows = conn.execute(query("rebuild_objects"), {"job": job}).fetchall()
    with conn.transaction():
        for kind, obj, schema, name in rows:
            if kind == "trigger":
                conn.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                    sql.Identifier(str(name)), sql.SQL(str(_regclass(conn, int(str(obj)))))))
            elif kind == "function":
                conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(
                    sql.Identifier(str(schema), str(name))))
            else:
                relkind = _relkind(conn, int(str(obj)))
                word = {"v": "VIEW", "m": "MATERIALIZED VIEW"}.get(relkind, "TABLE")
                conn.execute(sql.SQL("DROP {} IF EXISTS {}").format(
                    sql.SQL(word), sql.Identifier(str(schema), str(name))))
            dropped.append(f"{schema}.{name}")
        conn.execute(query("rebuild_forget"), {"job": job})
    return dropped


def _regclass(conn: Conn, oid: int) -> str:
    row = conn.execute(query("rebuild_regclass"), {"oid": oid}).fetchone()
    return str(row[0]) if row else ""


def _relkind(conn: Conn, oid: int) -> str:
    row = conn.execute(query("rebuild_relkind"), {"oid": oid}).fetchone()
    return str(row[0]) if row else ""
