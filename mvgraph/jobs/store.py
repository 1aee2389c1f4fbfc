"""Job persistence: every job and step row is written here, and only here.

A job's life: ``create_running`` (a foreground run, owned by its session's advisory lock) or
``queue`` (a background job) -> ``claim`` by a worker (a lease renewed by ``heartbeat``) ->
steps move pending -> running -> done / skipped / failed / blocked / cancelled -> ``finish``
(done, failed, cancelled; or suspended / queued again). ``reap`` closes or requeues running jobs
whose owner is gone. Every write goes through a SECURITY DEFINER function of ``0015_security.sql``
(no role but the schema's owner may write the tables), shared with the SQL API
(``mvgraph.submit`` and friends).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from mvgraph.db.queries import query
from mvgraph.errors import NotFound, UnknownRelation, translate, translated
from mvgraph.model.results import StepResult
from mvgraph.model.status import JobKind, JobStatus, StepStatus
from mvgraph.version import __version__

Conn = psycopg.Connection[tuple[object, ...]]
StepRow = tuple[int, str, StepStatus, str | None, str | None]  # seq, name, status, reason, error
CHANNEL = "mvgraph_jobs"  # NOTIFY channel: a job was queued, or a worker job finished


@dataclass(frozen=True, slots=True)
class PlannedStep:
    """A step row to write: name, view oid, planned action and reason."""

    name: str
    mv: int
    planned: str
    reason: str


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job a worker took from the queue, for one attempt."""

    id: int
    kind: JobKind
    statement: str
    options: dict[str, Any]
    owner: str
    attempt: int
    login: str = ""  # the login that submitted it; the job runs logged in as it
    # read by the claim in its round trip (None: not read, the worker reads them itself)
    settings: dict[str, str] | None = None  # the stored settings (how to run)
    fingerprint: str | None = None  # the catalog's fingerprint, read after the claim
    steps: tuple[StepRow, ...] | None = None  # its step rows, as step_rows returns them
    event_triggers: frozenset[str] | None = None  # mvgraph's, installed and enabled

    @property
    def run_login(self) -> str:
        """The login a worker connects as to run the job."""
        return self.login or self.owner


@dataclass(frozen=True, slots=True)
class JobInfo:
    """One row of ``mvgraph.jobs``, with the seconds it has run and an estimate of the seconds
    left (both from the server's clock; ``eta_s`` is None when no past duration is known)."""

    id: int
    kind: str
    statement: str
    status: JobStatus
    request: str | None
    done_steps: int
    total_steps: int
    submitted_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    owner: str
    worker: str | None
    error: str | None
    elapsed_s: float | None = None
    eta_s: float | None = None

    @property
    def percent(self) -> float:
        """Finished steps in percent (a done job without steps: 100)."""
        if self.total_steps:
            return round(100.0 * self.done_steps / self.total_steps, 1)
        return 100.0 if self.status is JobStatus.DONE else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The documented ``mvgraph jobs --json`` shape."""
        def iso(t: datetime | None) -> str | None:
            return t.isoformat() if t else None
        return {"id": self.id, "kind": self.kind, "statement": self.statement,
                "status": self.status.value, "request": self.request,
                "done_steps": self.done_steps, "total_steps": self.total_steps,
                "percent": self.percent,
                "submitted_at": iso(self.submitted_at), "started_at": iso(self.started_at),
                "finished_at": iso(self.finished_at), "elapsed_s": _round(self.elapsed_s),
                "eta_s": _round(self.eta_s), "owner": self.owner,
                "worker": self.worker, "error": self.error}


@dataclass(frozen=True, slots=True)
class StepInfo:
    """One step of a job, as ``mvgraph job ID`` shows it: ``done_at`` is how many of the job's
    ``total`` steps had finished when this one ended (while it runs: so far; pending: None)."""

    seq: int
    name: str
    status: StepStatus
    planned: str
    done_at: int | None
    total: int
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    backend_pid: int | None
    reason: str | None
    error: str | None

    @property
    def message(self) -> str:
        """The error when the step failed, else its reason."""
        return self.error or self.reason or ""

    @property
    def progress(self) -> str:
        """``m/n`` of the job at this step, ``-`` for a step not started."""
        return "-" if self.done_at is None else f"{self.done_at}/{self.total}"

    def to_dict(self) -> dict[str, Any]:
        """The ``mvgraph job ID --json`` shape of a step."""
        def iso(t: datetime | None) -> str | None:
            return t.isoformat() if t else None
        return {"seq": self.seq, "step": self.name, "status": self.status.value,
                "planned": self.planned, "progress": self.progress, "done_at": self.done_at,
                "total_steps": self.total, "started_at": iso(self.started_at),
                "finished_at": iso(self.finished_at), "duration_s": _round(self.duration_s),
                "backend_pid": self.backend_pid, "message": self.message,
                "reason": self.reason, "error": self.error}


def create_running(conn: Conn, kind: JobKind, statement: str, options: dict[str, Any]) -> int:
    """A foreground run's job, running at once and owned by this session (advisory lock)."""
    with translated():
        row = conn.execute(query("create_job"), {
            "kind": kind.value, "statement": statement, "options": json.dumps(options),
            "host": socket.gethostname()}).fetchone()
    assert row is not None
    return int(str(row[0]))


def queue(conn: Conn, kind: JobKind, statement: str, options: dict[str, Any],
          steps: Sequence[PlannedStep] = (), *, for_schedules: Sequence[int] = ()) -> int:
    """A background job with its planned steps, queued in one transaction; workers are woken.
    ``for_schedules``: a daemon's job for these schedules, owned by their owner."""
    with translated(), conn.transaction():
        if for_schedules:
            row = conn.execute(query("submit_for_schedules"), {
                "ids": list(for_schedules), "statement": statement,
                "options": json.dumps(options), "host": socket.gethostname()}).fetchone()
        else:
            row = conn.execute(query("queue_job"), {
                "kind": kind.value, "statement": statement, "options": json.dumps(options),
                "host": socket.gethostname()}).fetchone()
        assert row is not None
        job = int(str(row[0]))
        write_steps(conn, job, steps)
        conn.execute(query("notify_jobs"), {"job": job})
    return job


def submit(conn: Conn, statement: str) -> int:
    """``mvgraph.submit(statement)``: what a psql user calls, from Python.

    Raises:
        UnknownRelation: a REFRESH of a view that does not exist or is no materialized view
            (validated at submit, as in the foreground; nothing is queued).
    """
    try:
        row = conn.execute(query("submit"), {"statement": statement}).fetchone()
    except (psycopg.errors.UndefinedTable, psycopg.errors.WrongObjectType) as exc:
        message = exc.diag.message_primary or str(exc)
        if not message.startswith("mvgraph.submit: "):
            raise translate(exc) from exc
        hint = f"; {exc.diag.message_hint}" if exc.diag.message_hint else ""
        raise UnknownRelation(f"{message.removeprefix('mvgraph.submit: ')}{hint}") from None
    except psycopg.Error as exc:
        raise translate(exc) from exc
    assert row is not None
    return int(str(row[0]))


def write_steps(conn: Conn, job: int, steps: Sequence[PlannedStep]) -> None:
    """A new job's steps, numbered 1.. in plan order."""
    with translated():
        conn.execute(query("create_steps"), {
            "job": job, "seqs": list(range(1, len(steps) + 1)),
            "names": [s.name for s in steps], "mvs": [s.mv for s in steps],
            "planned": [s.planned for s in steps], "reasons": [s.reason for s in steps]})


def replan(conn: Conn, job: int, steps: Sequence[PlannedStep],
           rows: Sequence[tuple[object, ...]] | None = None) -> dict[str, int]:
    """Merge a fresh plan of the job's unfinished work into its step rows; returns each
    planned step's number. ``rows``: the job's step rows (``step_rows``) when the caller has
    read them; a job with none (submitted from SQL, claimed the first time) gets its steps
    written as they are, without the merge."""
    if rows is not None and not rows:
        write_steps(conn, job, steps)
        return {s.name: seq for seq, s in enumerate(steps, 1)}
    with translated():
        conn.execute(query("replan_steps"), {
            "job": job, "names": [s.name for s in steps], "mvs": [s.mv for s in steps],
            "planned": [s.planned for s in steps], "reasons": [s.reason for s in steps]})
        return {name: seq for seq, name, *_ in step_rows(conn, job)}


def step_rows(conn: Conn, job: int) -> list[StepRow]:
    """Every step of a job: (seq, name, status, reason, error), in order."""
    with translated():
        rows = conn.execute(query("job_steps"), {"job": job}).fetchall()
    return [_step_row(r) for r in rows]


def _step_row(r: Sequence[object]) -> StepRow:
    return (int(str(r[0])), str(r[1]), StepStatus(str(r[2])),
            None if r[3] is None else str(r[3]), None if r[4] is None else str(r[4]))


def step_running(conn: Conn, job: int, seq: int) -> None:
    """Mark a step running on this connection's backend (what ``cancel`` interrupts)."""
    conn.execute(query("step_running"), {"job": job, "seq": seq})


def step_started(conn: Conn, job: int, seq: int) -> None:
    """In a step's transaction, first: mark it running (seen when it commits) and name the
    session ``mvgraph job N step S`` until then (what ``mvgraph.job_step`` shows running and
    ``cancel`` interrupts); keep compaction away until COMMIT."""
    conn.execute(query("step_started"), {"job": job, "seq": seq,
                                         "app": f"mvgraph job {job} step {seq}"})


def record_step(conn: Conn, job: int, seq: int, result: StepResult) -> None:
    """A step's outcome; a step left unfinished (PENDING) goes back to pending."""
    if result.status is StepStatus.PENDING:
        conn.execute(query("step_pending"), {"job": job, "seq": seq})
        return
    conn.execute(query("step_finished"), {
        "status": result.status.value, "reason": result.reason, "duration": result.duration_s,
        "error": result.error, "concurrent": result.concurrently, "job": job, "seq": seq})


def bookkeeping_commit(conn: Conn) -> None:
    """Commit this session's job bookkeeping (claims, steps, ends, slots) with the stored
    ``synchronous_commit`` of refresh transactions (default off: no WAL flush to wait for at
    each of a job's few commits; after a server crash the last fraction of a second of them
    may be lost, as of the refreshes themselves: the job then runs again)."""
    with translated():
        conn.execute(query("bookkeeping_commit"))


def ended_attempt(conn: Conn, job: int, attempt: int) -> bool:
    """Whether this attempt of a job has ended by itself (its heartbeat then says 'lost', and
    means nothing: no one else took the job)."""
    row = conn.execute(query("job_attempt_ended"), {"job": job, "attempt": attempt}).fetchone()
    return bool(row and row[0])


def pending_request(conn: Conn, job: int, attempt: int | None) -> str:
    """What a running job was asked: '' nothing, 'cancel', 'suspend', or 'lost' when the job
    is no longer this attempt's (another worker took it, or it ended)."""
    row = conn.execute(query("job_request"), {"job": job}).fetchone()
    if row is None:
        return "lost"
    req, status, att = str(row[0]), str(row[1]), int(str(row[2]))
    if req:
        return req
    if status != JobStatus.RUNNING or (attempt is not None and att != attempt):
        return "lost"
    return ""


def finish(conn: Conn, job: int, status: JobStatus, error: str | None, *,
           attempt: int | None = None, foreground: bool = False) -> bool:
    """Close (done, failed, cancelled), suspend or requeue this attempt of a job; a foreground
    run releases its lock; either notifies (a worker's job frees a slot under the cap, and
    ``mvgraph wait`` wakes). Returns False when the job was not this attempt's, or (requeue)
    not running any more."""
    params = {"status": status.value, "error": error, "job": job, "attempt": attempt}
    try:
        if not foreground:  # one statement, one round trip
            row = conn.execute(query("finish_job_notify"), params).fetchone()
            return bool(row and row[0])
        row = conn.execute(query("finish_job"), params).fetchone()
        changed = bool(row and row[0])
        conn.execute(query("unlock_job"), {"job": job})  # after the end committed
        conn.execute(query("notify_jobs"), {"job": job})
    except psycopg.Error as exc:
        raise translate(exc) from exc
    return changed


def send_finish(conn: Conn, job: int, status: JobStatus, error: str | None, *,
                attempt: int | None) -> None:
    """``finish`` for a worker's job, its outcome not fetched: for a pipeline (a worker sends
    it with the reset of the job's connection, in one round trip)."""
    with translated():
        conn.execute(query("finish_job_notify"), {"status": status.value, "error": error,
                                                  "job": job, "attempt": attempt})


def reap(conn: Conn) -> int:
    """Fail or requeue running jobs whose owner is gone; returns how many."""
    with translated():
        row = conn.execute(query("reap_jobs")).fetchone()
    return int(str(row[0])) if row else 0


def claim(conn: Conn, worker: str, lease_s: float) -> ClaimedJob | None:
    """The oldest queued job, unless the cap of running worker jobs is reached."""
    jobs = claim_many(conn, worker, lease_s, 1)
    return jobs[0] if jobs else None


def claim_many(conn: Conn, worker: str, lease_s: float, wanted: int) -> list[ClaimedJob]:
    """Up to ``wanted`` queued jobs, oldest first, in one round trip (the cap of running
    worker jobs applies), each with what starting it needs: the stored settings, the catalog's
    fingerprint and its step rows (``mvgraph.claim_jobs_start``)."""
    with translated():
        rows = conn.execute(query("claim_jobs_start"), {"worker": worker, "lease": lease_s,
                                                        "wanted": wanted}).fetchall()
    return [_claimed(r) for r in rows]


def _claimed(row: tuple[object, ...]) -> ClaimedJob:
    options = row[3] if isinstance(row[3], dict) else {}
    settings = row[7] if isinstance(row[7], dict) else {}
    steps = row[9] if isinstance(row[9], list) else []
    return ClaimedJob(int(str(row[0])), JobKind(str(row[1])), str(row[2]), options,
                      str(row[4]), int(str(row[5])), str(row[6] or row[4]),
                      settings={str(k): str(v) for k, v in settings.items()},
                      fingerprint=str(row[8]), steps=tuple(_step_row(r) for r in steps),
                      event_triggers=frozenset(str(t) for t in row[10] or ())
                      if isinstance(row[10], list) else None)


def heartbeat(conn: Conn, job: int, attempt: int, lease_s: float) -> str:
    """Renew a worker's lease: '' nothing asked, 'cancel', 'suspend', or 'lost'."""
    row = conn.execute(query("job_heartbeat"), {"job": job, "attempt": attempt,
                                                "lease": lease_s}).fetchone()
    return str(row[0]) if row else "lost"


def _steer(conn: Conn, name: str, job: int) -> str:
    try:
        row = conn.execute(query(name), {"job": job}).fetchone()
    except psycopg.errors.NoDataFound:
        raise NotFound(f"no job {job}; list jobs with `mvgraph jobs --all`") from None
    except psycopg.Error as exc:
        raise translate(exc) from exc
    return str(row[0]) if row else ""


def cancel(conn: Conn, job: int) -> str:
    """Cancel a job from any process; returns its status or ``cancelling``."""
    return _steer(conn, "cancel_job", job)


def suspend(conn: Conn, job: int) -> str:
    """Suspend a job after its running steps; returns its status or ``suspending``."""
    return _steer(conn, "suspend_job", job)


def resume(conn: Conn, job: int) -> str:
    """Queue a suspended job again; returns its status."""
    return _steer(conn, "resume_job", job)


def result(conn: Conn, job: int) -> dict[str, Any]:
    """``mvgraph.job_result(id)``: status, error, steps by status, result."""
    try:
        row = conn.execute(query("job_result"), {"job": job}).fetchone()
    except psycopg.errors.NoDataFound:
        raise NotFound(f"no job {job}; list jobs with `mvgraph jobs --all`") from None
    except psycopg.Error as exc:
        raise translate(exc) from exc
    assert row is not None and isinstance(row[0], dict)
    return row[0]


def jobs(conn: Conn, every: bool = False, job: int | None = None, *,
         active: bool = False) -> list[JobInfo]:
    """Jobs unfinished or finished within the hour (``every``: all kept jobs; ``active``: the
    unfinished ones only, work in progress, as SHOW JOBS lists; ``job``: that one only,
    whatever its age), oldest first."""
    with translated():
        rows = conn.execute(query("list_jobs"), {"all": every, "id": job,
                                                 "active": active}).fetchall()
    return [JobInfo(int(str(r[0])), str(r[1]), str(r[2]), JobStatus(str(r[3])),
                    _opt(r[4]), int(str(r[5])), int(str(r[6])), _time(r[7]) or datetime.min,
                    _time(r[8]), _time(r[9]), str(r[10]), _opt(r[11]), _opt(r[12]),
                    _float(r[13]), _float(r[14]))
            for r in rows]


def job_info(conn: Conn, job: int) -> JobInfo:
    """One job, whatever its age.

    Raises:
        NotFound: no such job (never was, or pruned).
    """
    found = jobs(conn, job=job)
    if not found:
        raise NotFound(f"no job {job}; list jobs with `mvgraph jobs --all`")
    return found[0]


def steps(conn: Conn, job: int) -> list[StepInfo]:
    """A job's steps in order, with progress, times, backend and message."""
    with translated():
        rows = conn.execute(query("job_step_info"), {"job": job}).fetchall()
    return [StepInfo(int(str(r[0])), str(r[1]), StepStatus(str(r[2])), str(r[3]),
                     None if r[4] is None else int(str(r[4])), int(str(r[5])), _time(r[6]),
                     _time(r[7]), _float(r[8]), None if r[9] is None else int(str(r[9])),
                     _opt(r[10]), _opt(r[11]))
            for r in rows]


def purge(conn: Conn, days: int | None = None) -> int:
    """Delete finished jobs older than ``days`` (default: the retention_days setting)."""
    with translated():
        row = conn.execute(query("purge_jobs"), {"days": days}).fetchone()
    return int(str(row[0])) if row else 0


def beat_worker(conn: Conn, worker_id: int | None, name: str, concurrency: int,
                heartbeat_s: float) -> int:
    """A worker's heartbeat row (``mvgraph.worker``): renewed, or written when it has none
    yet (or it was deleted); returns its id."""
    with translated():
        if worker_id is not None:
            row = conn.execute(query("worker_heartbeat"), {"id": worker_id}).fetchone()
            if row is not None:
                return worker_id
        row = conn.execute(query("worker_register"), {
            "name": name, "host": socket.gethostname(), "pid": os.getpid(),
            "concurrency": concurrency, "heartbeat_s": heartbeat_s,
            "version": __version__}).fetchone()
    assert row is not None
    return int(str(row[0]))


def remove_worker(conn: Conn, worker_id: int) -> None:
    """A worker that stops deletes its heartbeat row."""
    with translated():
        conn.execute(query("worker_remove"), {"id": worker_id})


def listen(conn: Conn) -> None:
    """Subscribe this (autocommit) connection to job notifications."""
    with translated():
        conn.execute(query("listen_jobs"))


def _opt(v: object) -> str | None:
    return None if v is None else str(v)


def _time(v: object) -> datetime | None:
    return v if isinstance(v, datetime) else None


def _float(v: object) -> float | None:
    return None if v is None else float(str(v))


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)
