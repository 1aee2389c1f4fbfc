"""Stopping a run early, and what the runner's modules share.

A run stops early in one of four ways (``StopMode``): cancel (running statements cancelled,
steps not run cancelled), suspend (running steps finish, the rest stay pending), requeue (a
worker shutting down: the same, after its grace period running statements are cancelled and
go back to pending), lost (another worker took the job over: nothing more is written). ``Stoppable``
keeps the mode asked and the connections whose statements a stop cancels.
"""

from __future__ import annotations

import logging
import threading
from contextlib import suppress
from enum import Enum

import psycopg
from psycopg import errors as pgerrors

from mvgraph.db.queries import query
from mvgraph.errors import translate
from mvgraph.model.status import StepStatus
from mvgraph.refresh.locks import LOCK_NAMESPACE

log = logging.getLogger("mvgraph")
Conn = psycopg.Connection[tuple[object, ...]]
MAX_RETRIES = 5
JOB_REQUEST = "MVJ01"  # refresh_step: the job has a request (cancel, suspend) or is not ours
RACED = "raced"  # refresh_step: the view was refreshed elsewhere since the plan; decide again
STOPPED = (StepStatus.FAILED, StepStatus.BLOCKED, StepStatus.CANCELLED)


class StopMode(Enum):
    """Why a run stops starting steps."""

    CANCEL = "cancel"
    SUSPEND = "suspend"
    REQUEUE = "requeue"
    LOST = "lost"


def advisory_key(oid: int) -> int:
    """The advisory lock key of a view: a namespace in the high bits, its oid in the low bits."""
    return (LOCK_NAMESPACE << 32) | oid


class _Cancelled(Exception):
    """The run was cancelled before this step started."""


class Stoppable:
    """The stop state of a run: the mode asked, and the statements running (one connection per
    thread) that a stop cancels."""

    _cancel: threading.Event  # set: start no more steps (see self._mode)
    _mode: StopMode | None
    _active: dict[int, Conn]
    _lock: threading.Lock

    def _init_stops(self) -> None:
        self._cancel = threading.Event()
        self._mode = None
        self._active = {}
        self._lock = threading.Lock()

    def cancel(self) -> None:
        """Cancel running statements at once; steps not started are cancelled."""
        self.stop(StopMode.CANCEL)

    def suspend(self) -> None:
        """Start no more steps; running ones finish; the rest stay pending (job suspended)."""
        self.stop(StopMode.SUSPEND)

    def stop(self, mode: StopMode, cancel_running: bool | None = None) -> None:
        """Start no more steps, for ``mode``; running statements are cancelled for CANCEL and
        LOST (or when ``cancel_running``). The first mode asked wins, except that a cancel
        overrides a suspend or requeue."""
        with self._lock:
            if self._mode is None or (mode is StopMode.CANCEL and self._mode is not
                                      StopMode.LOST):
                self._mode = mode
            self._cancel.set()
            if cancel_running is None:
                cancel_running = mode in (StopMode.CANCEL, StopMode.LOST)
            if cancel_running:
                for c in list(self._active.values()):
                    with suppress(psycopg.Error):
                        c.cancel_safe()

    @property
    def stop_mode(self) -> StopMode | None:
        """Why the run stops early, if it does."""
        return self._mode

    def _check_cancel(self) -> None:
        if self._cancel.is_set():
            raise _Cancelled()

    def _register(self, conn: Conn) -> None:
        with self._lock:
            self._active[threading.get_ident()] = conn

    def _unregister(self) -> None:
        with self._lock:
            self._active.pop(threading.get_ident(), None)


def _is_request(exc: psycopg.Error) -> bool:
    """A statement cancelled (by ``mvgraph.cancel_job`` perhaps) or refused by refresh_step
    because the job has a request."""
    return isinstance(exc, pgerrors.QueryCanceled) or exc.sqlstate == JOB_REQUEST


def _rollback(conn: Conn) -> None:
    """End a failed or interrupted transaction, if the connection still has one."""
    if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        with suppress(psycopg.Error):
            conn.execute(query("rollback"))


def _message(exc: BaseException) -> str:
    if isinstance(exc, psycopg.Error):
        return str(translate(exc))
    return str(exc) or type(exc).__name__
