"""The library's ``Job``: a job id with the means to watch and steer it from any process.

``mvgraph.submit`` and ``mvgraph.submit_refresh`` return one. A ``Job`` *is* its id (an ``int``
subclass), so code that stored, compared or passed job ids to SQL keeps working; each method
reads or writes the job tables (nothing in-process), on a connection of its own unless the job
was made with one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg

from mvgraph.db.connect import session as open_session
from mvgraph.db.install import require_schema
from mvgraph.db.queries import query
from mvgraph.errors import JobTimeout, NoJobRunner, UsageError
from mvgraph.jobs import store
from mvgraph.jobs.store import JobInfo, StepInfo
from mvgraph.model.status import JobStatus

Conn = psycopg.Connection[tuple[object, ...]]
Target = str | Conn | None
POLL_S = 0.5  # how often ``wait`` looks when no notification comes
RUNNER_GRACE_S = 2.0  # no worker seen for this long: ``wait`` says so and ends
DAEMON_ALIVE_S = 10.0  # a daemon heard from within this long is alive (heartbeat every 2 s)
REAP_EVERY_S = 5.0  # how often it closes jobs whose owner died (row locks: not every look)


@contextmanager
def session(target: Target, application_name: str = "mvgraph") -> Iterator[Conn]:
    """An autocommit connection for job reads and steering (the given one, or a new one from
    a DSN), with mvgraph's schema checked (read-only). Lighter than the refresh session: no
    graph library, no change-log check (``mvgraph cancel`` must answer at once)."""
    with open_session(target, require_schema, application_name=application_name) as conn:
        yield conn


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a job is: finished steps of all, percent, seconds run and estimated left (None:
    no past duration known, or the job ended without finishing)."""

    done: int
    total: int
    percent: float
    elapsed_s: float | None
    eta_s: float | None

    @classmethod
    def of(cls, info: JobInfo) -> Progress:
        """The progress part of a job row."""
        return cls(info.done_steps, info.total_steps, info.percent, info.elapsed_s, info.eta_s)


def wait_for(conn: Conn, job: int, timeout: float | None = None, *, poll_s: float = POLL_S,
             on_suspended: Callable[[JobInfo], None] | None = None,
             need_runner: bool = True) -> JobInfo:
    """Block until the job is done, failed or cancelled; returns its final row.

    Wakes on ``NOTIFY mvgraph_jobs`` carrying the job's id (a job's end notifies) and looks every
    ``poll_s`` seconds anyway (a queued job cancelled, a job whose owner died). A suspended job
    is not over: the wait goes on (``on_suspended`` is told once).

    ``need_runner``: a job that waits for a worker (queued, or its worker's lease ran out)
    while no worker and no daemon with workers is alive (:func:`runner_missing`) ends the wait
    once that has held for ``RUNNER_GRACE_S`` (a worker reconnecting or just starting is not
    taken for gone).

    Raises:
        NotFound: no such job.
        JobTimeout: still unfinished after ``timeout`` seconds.
        NoJobRunner: nothing alive would run it.
    """
    if timeout is not None and timeout < 0:
        raise UsageError("the timeout must be 0 or more seconds")
    deadline = None if timeout is None else time.monotonic() + timeout
    store.listen(conn)
    told = False
    reaped = float("-inf")
    missing_since: float | None = None
    try:
        while True:
            if time.monotonic() - reaped >= REAP_EVERY_S:  # a job whose owner died ends
                store.reap(conn)
                reaped = time.monotonic()
            info = store.job_info(conn, job)
            if info.status.finished:
                return info
            if info.status is JobStatus.SUSPENDED and not told and on_suspended is not None:
                on_suspended(info)
                told = True
            nap = poll_s
            if need_runner and runner_missing(conn, job):
                if missing_since is None:
                    missing_since = time.monotonic()
                elif time.monotonic() - missing_since >= RUNNER_GRACE_S:
                    raise NoJobRunner(job, info.status.value)
                nap = min(poll_s, RUNNER_GRACE_S)
            else:
                missing_since = None
            left = nap if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise JobTimeout(job, info.status, timeout or 0.0)
            _sleep_until_notified(conn, job, min(nap, left))
    finally:
        conn.execute("UNLISTEN mvgraph_jobs")


def runner_missing(conn: Conn, job: int) -> bool:
    """Whether the job waits for a worker (queued, or running in the background with its
    lease expired) while no worker is connected to the database and no daemon with workers
    sent a heartbeat lately. A foreground run, a running job with a live lease and a
    suspended job need no worker now."""
    row = conn.execute(query("job_needs_a_runner"),
                       {"job": job, "within": DAEMON_ALIVE_S}).fetchone()
    return bool(row and row[0] and not row[1])


def _sleep_until_notified(conn: Conn, job: int, seconds: float) -> None:
    """Return when a notification about ``job`` comes, or after ``seconds``."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        for note in conn.notifies(timeout=left, stop_after=1):
            if note.payload == str(job):
                return


class Job(int):
    """A job: its id (``int(job)``, ``job.id``) and how to watch and steer it.

    Example::

        job = mvgraph.submit_refresh(dsn, "mv5", "cascade backward")
        job.progress()   # Progress(done=1, total=3, percent=33.3, elapsed_s=2.1, eta_s=4.0)
        job.wait(60)     # JobStatus.DONE; raises JobTimeout (a TimeoutError) after 60 s
    """

    _target: Target

    def __new__(cls, job_id: int, target: Target = None) -> Job:
        """The job ``job_id`` in the database of ``target`` (a DSN, a connection, or None for
        the default DSN). Nothing is read until a method is called."""
        self = super().__new__(cls, job_id)
        self._target = target
        return self

    def __repr__(self) -> str:
        return f"Job({int(self)})"

    def __str__(self) -> str:  # the id, as before: str(job) goes into messages and commands
        return int.__repr__(self)

    @property
    def id(self) -> int:
        """The job id, as a plain int."""
        return int(self)

    def info(self) -> JobInfo:
        """The job's row: status, progress, times, owner, error (raises NotFound)."""
        with session(self._target) as conn:
            return store.job_info(conn, self.id)

    def status(self) -> JobStatus:
        """Where the job is: queued, running, suspended, done, failed or cancelled."""
        return self.info().status

    def progress(self) -> Progress:
        """Finished steps, total, percent, seconds run and estimated seconds left."""
        return Progress.of(self.info())

    def steps(self) -> list[StepInfo]:
        """The job's steps in order (empty until a worker plans a job submitted from SQL)."""
        with session(self._target) as conn:
            store.job_info(conn, self.id)  # NotFound for an unknown id
            return store.steps(conn, self.id)

    def wait(self, timeout: float | None = None, *, need_runner: bool = True) -> JobStatus:
        """Block until the job ends (a suspended job has not); returns DONE, FAILED or
        CANCELLED. Raises JobTimeout (also a TimeoutError) after ``timeout`` seconds, and
        NoJobRunner at once when the job waits for a worker and none is alive (no worker
        connected, no daemon with workers heard from); ``need_runner=False`` waits anyway
        (for a worker that starts later)."""
        with session(self._target) as conn:
            return wait_for(conn, self.id, timeout, need_runner=need_runner).status

    def cancel(self) -> str:
        """Cancel: the running statement at once; returns the status or ``cancelling``."""
        with session(self._target) as conn:
            return store.cancel(conn, self.id)

    def suspend(self) -> str:
        """Stop after the running steps; returns the status or ``suspending``."""
        with session(self._target) as conn:
            return store.suspend(conn, self.id)

    def resume(self) -> str:
        """Queue a suspended job again; returns its status."""
        with session(self._target) as conn:
            return store.resume(conn, self.id)

    def result(self) -> dict[str, Any]:
        """``mvgraph.job_result``: status, error, steps counted by status, and the result."""
        with session(self._target) as conn:
            return store.result(conn, self.id)
