"""``mvgraph worker``: runs queued jobs.

One main loop claims jobs (``mvgraph.claim_jobs_start``: oldest first, ``FOR UPDATE SKIP LOCKED``,
within ``max_concurrent_jobs`` across every worker) on a dedicated autocommit connection that
LISTENs on ``mvgraph_jobs``, so a submitted job starts at once; polling every ``poll_s`` is the
fallback; every ``heartbeat_s`` (``row_beat_s`` when set) it also renews the worker's row in
``mvgraph.worker`` (deleted when it stops; a daemon alerts a row gone silent). Each job runs
in a thread on its own connection; a heartbeat thread renews the lease of each (every
``heartbeat_s``, for ``lease_s``) and passes on cancel and suspend requests. A job whose worker
died is requeued by the next claim after its lease expires, and resumes from its
first unfinished step. SIGTERM / SIGINT: claim nothing more, let running steps finish for up to
``shutdown_s``, then cancel them and requeue what is left. The database going away never stops
the worker: it reconnects with backoff, and requeues the jobs it lost.

Rights: the worker's own login claims, renews leases and closes jobs (mvgraph's ``worker``
level); it never runs a job's work. Each job runs on a connection that logs in as the job's
login with its owner's role (:mod:`mvgraph.jobs.logins`), so PostgreSQL bounds what the job can
do by its submitter's rights whatever its statement does; such a connection serves later jobs
of the same login and owner only, reset (``DISCARD ALL``) in between.

Per-job fixed costs are kept small: the catalog graph is read once and kept while the catalog's
fingerprint (``catalog_fingerprint``: relations, rules, schemas, function volatility; about
1 ms) stays the same, so DDL invalidates it; the claim returns with the job the fingerprint, the
stored settings and the job's step rows (one round trip, not four); a job's connection is kept
for the next job of the same submitter;
housekeeping (purge, compaction) runs after a job at most every ``housekeeping_s`` (claims reap
lost jobs every time).
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import Any

import psycopg

from mvgraph import maintenance
from mvgraph.db import outage
from mvgraph.db.connect import connect
from mvgraph.db.listen import wait_notifies
from mvgraph.db.queries import query
from mvgraph.errors import ConnectionFailed, MvgraphError, UsageError
from mvgraph.graph import MVGraph
from mvgraph.jobs import kinds, store
from mvgraph.jobs.store import ClaimedJob
from mvgraph.model.events import Event, JobFinished, StepFinished
from mvgraph.model.results import StepResult
from mvgraph.model.status import JobKind, JobStatus, RunStatus
from mvgraph.rebuild.control import Control
from mvgraph.refresh.executor import Executor, RefreshReport, StopMode
from mvgraph.refresh.graphcache import GraphCache
from mvgraph.retrylog import Outage
from mvgraph.security import logins

log = logging.getLogger("mvgraph.worker")
Conn = psycopg.Connection[tuple[object, ...]]
MAX_BACKOFF_S = 30.0


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """How a worker runs; the defaults are the documented ones."""

    dsn: str | None = field(default=None, repr=False)  # never in a repr: it may hold a password
    concurrency: int = 1
    lease_s: float = 30.0
    heartbeat_s: float = 10.0
    poll_s: float = 5.0
    shutdown_s: float = 30.0
    housekeeping_s: float = 2.0  # purge and compaction after a job, at most this often
    owner_dsn: str | None = None  # how to log in as a job's login: a template with {role}
    name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    row_beat_s: float | None = None  # the mvgraph.worker row's period (default: heartbeat_s)

    def check(self) -> None:
        """Refuse settings that cannot work."""
        if self.concurrency < 1:
            raise UsageError("--concurrency must be at least 1")
        if not 0 < self.heartbeat_s < self.lease_s:
            raise UsageError("the heartbeat must be shorter than the lease (defaults: 10s, 30s)")
        if self.row_beat_s is not None and self.row_beat_s <= 0:
            raise UsageError("the worker row's heartbeat must be positive")

    @property
    def row_period_s(self) -> float:
        """How often the worker's ``mvgraph.worker`` row is renewed."""
        return self.heartbeat_s if self.row_beat_s is None else self.row_beat_s


@dataclass
class _Running:
    job: ClaimedJob
    thread: threading.Thread
    executor: Executor | Control | None = None


class Worker:
    """Claims and runs jobs until stopped."""

    def __init__(self, config: WorkerConfig, graphs: GraphCache | None = None) -> None:
        """``graphs``: the planning-graph cache to share (a daemon's); default: its own."""
        config.check()
        self.config = config
        self._stopping = threading.Event()
        self._hurry = threading.Event()  # the grace period is over: cancel running steps
        self._jobs: dict[int, _Running] = {}
        self._lock = threading.Lock()
        self._graphs = graphs or GraphCache()  # the catalog's graph, by fingerprint
        self._idle_conns: dict[str, list[Conn]] = {}  # job connections kept, by their DSN
        self._spare_claims: list[Conn] = []  # claim connections of freed slots, kept
        self._worker_user: str | None = None  # this worker's own login
        self._worker_id: int | None = None  # its heartbeat row in mvgraph.worker
        self._last_housekeeping = 0.0
        self._outage = Outage(log)  # one warning per outage of the claim loop's connection

    # ---- control --------------------------------------------------------------------------------
    def stop(self) -> None:
        """Claim nothing more; running jobs get the grace period, then are requeued."""
        self._stopping.set()

    def hurry(self) -> None:
        """End the grace period now: running steps are cancelled and their jobs requeued."""
        self._hurry.set()

    def run(self) -> None:
        """Run until ``stop`` (or SIGTERM / SIGINT when called in the main thread)."""
        self._install_signals()
        beat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        beat.start()
        log.info("worker %s started (concurrency %d)", self.config.name, self.config.concurrency)
        try:
            self._main_loop()
        finally:
            self._shutdown()
            beat.join(self.config.heartbeat_s + 5)
            with self._lock:
                idle = [c for conns in self._idle_conns.values() for c in conns]
                idle += self._spare_claims
                self._idle_conns, self._spare_claims = {}, []
            for conn in idle:
                conn.close()
            log.info("worker %s stopped", self.config.name)

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            if self._stopping.is_set():  # a second signal: no more grace
                self.hurry()
            log.info("signal %d: stopping (running steps get %.0fs)", signum,
                     self.config.shutdown_s)
            self.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    # ---- the claim loop -------------------------------------------------------------------------
    def _main_loop(self) -> None:
        conn: Conn | None = None
        backoff = 0.5
        last_poll = last_beat = 0.0
        while not self._stopping.is_set():
            try:
                if conn is None or conn.closed:
                    conn = self._connect()
                    store.listen(conn)
                    self._outage.ok()
                    backoff = 0.5
                    last_poll = last_beat = 0.0
                if time.monotonic() - last_beat >= self.config.row_period_s:
                    last_beat = time.monotonic()  # this worker is alive (mvgraph.worker)
                    self._worker_id = store.beat_worker(
                        conn, self._worker_id, self.config.name, self.config.concurrency,
                        self.config.row_period_s)
                if time.monotonic() - last_poll >= self.config.poll_s:
                    last_poll = time.monotonic()
                    self._claim(conn)
                woken = False
                if wait_notifies(conn, min(1.0, self.config.poll_s)):
                    woken = True
                if woken:
                    self._claim(conn)
            except (psycopg.Error, MvgraphError) as exc:
                self._outage.failed("database unavailable (%s); retrying in %.1fs",
                                    _first_line(exc), backoff)
                if conn is not None:
                    conn.close()
                conn = None
                if outage.wait_to_retry(self.config.dsn, backoff, self._stopping):
                    backoff = 0.5  # the server is back: reconnect, LISTEN and claim at once
                else:
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
        if conn is not None:
            self._unregister(conn)
            conn.close()

    def _unregister(self, conn: Conn) -> None:
        """Delete this worker's heartbeat row (a stop is no silence)."""
        if self._worker_id is None or conn.closed:
            return
        try:
            store.remove_worker(conn, self._worker_id)
            self._worker_id = None
        except (psycopg.Error, MvgraphError) as exc:  # its row goes stale instead
            log.info("could not remove the worker's heartbeat row (%s)", _first_line(exc))

    def _connect(self, application_name: str | None = None) -> Conn:
        """A new connection, the schema checked (read-only: SchemaError when ``mvgraph init``
        is needed)."""
        from mvgraph.refresh.service import prepare

        conn = connect(self.config.dsn,
                       application_name=application_name or f"mvgraph worker {self.config.name}")
        try:
            prepare(conn)
            store.bookkeeping_commit(conn)
        except BaseException:
            conn.close()
            raise
        self._worker_user = conn.info.user
        return conn

    def _claim(self, conn: Conn) -> None:
        """Claim jobs while this worker has free slots (the cap may say no), as many as it has
        free slots in each round trip."""
        while not self._stopping.is_set():
            with self._lock:
                free = self.config.concurrency - len(self._jobs)
            if free <= 0:
                return
            jobs = store.claim_many(conn, self.config.name, self.config.lease_s, free)
            for job in jobs:
                log.info("job %d: claimed (attempt %d): %s", job.id, job.attempt, job.statement)
                thread = threading.Thread(target=self._run_job, args=(job,),
                                          name=f"job-{job.id}", daemon=True)
                with self._lock:
                    self._jobs[job.id] = _Running(job, thread)
                thread.start()
            if len(jobs) < free:
                return

    # ---- one job --------------------------------------------------------------------------------
    def _run_job(self, job: ClaimedJob) -> None:
        """Run a job; then, unless the worker is stopping, claim the next one on the same
        connection and run it in this thread (its slot passes on). Without this a slot freed
        by a finished job would wait for the next notification or poll."""
        with self._lock:  # this slot's connection for claims (the worker's login): one kept
            claims = self._spare_claims.pop() if self._spare_claims else None  # by a slot freed
        if claims is not None and not _idle_and_alive(claims):
            claims.close()  # the server ended it while it waited: a new one when needed
            claims = None
        current: ClaimedJob | None = job
        while current is not None:
            self._run_one(current)
            claims, current = self._claim_next(claims, current)
        if claims is not None:
            with self._lock:
                if not self._stopping.is_set() \
                        and len(self._spare_claims) < self.config.concurrency:
                    self._spare_claims.append(claims)  # for the next slot: no new session
                    claims = None
            if claims is not None:
                claims.close()

    def _owner_dsn(self, job: ClaimedJob) -> str:
        return logins.owner_dsn(self.config.dsn, job.run_login, job.owner,
                                template=self.config.owner_dsn, worker_user=self._worker_user)

    def _run_one(self, job: ClaimedJob) -> None:
        """Run one job on a connection logged in as its submitter (kept from an earlier job of
        the same submitter, or new); keep that connection for a later job when it is clean."""
        dsn = self._owner_dsn(job)
        try:
            conn: Conn | None = self._job_connection(dsn)
        except (ConnectionFailed, psycopg.Error) as exc:
            if self._server_answers():  # the login itself is refused: the job cannot run
                self._fail(None, job, logins.login_failure(job.id, job.run_login, job.owner,
                                                           dsn, exc))
            else:
                self._requeue_lost(job)
            return
        reusable = False
        closing: tuple[JobStatus, str | None] | None = None
        try:
            assert conn is not None
            report = self._execute(conn, job)
            closing = self._deferred_finish(job)
            if report is not None and report.status is RunStatus.LOST:
                self._requeue_lost(job)
            elif report is not None:
                self._housekeeping(conn, job.id)
            reusable = True
        except (ConnectionFailed, psycopg.OperationalError, MvgraphError) as exc:
            if outage.session_lost(exc, conn):  # a restart (57P01-57P03) or a closed socket,
                # also of a kept connection the restart killed while idle: not the job's fault
                log.warning("job %d: connection lost (%s)", job.id, _first_line(exc))
                self._requeue_lost(job)
            elif isinstance(exc, psycopg.OperationalError):  # e.g. a statement timeout the
                self._fail(None, job, _first_line(exc))  # job set for its own session
            else:
                self._fail(conn, job, str(exc))
        except Exception as exc:  # an mvgraph bug: the job says so, the worker goes on
            log.exception("job %d: internal error", job.id)
            self._fail(conn, job, f"internal error: {type(exc).__name__}: {exc}")
        if conn is not None:
            if reusable and self._clean(conn, job, closing):
                self._keep(dsn, conn)
            else:
                conn.close()
        elif closing is not None:
            self._close_elsewhere(job, closing)

    def _deferred_finish(self, job: ClaimedJob) -> tuple[JobStatus, str | None] | None:
        """How the run of a job wants it closed, when it left that to the worker."""
        with self._lock:
            running = self._jobs.get(job.id)
        ex = running.executor if running is not None else None
        return ex.deferred_finish if isinstance(ex, Executor) else None

    def _close_elsewhere(self, job: ClaimedJob, closing: tuple[JobStatus, str | None]) -> None:
        """Close a job on a connection of the worker's own login (its job connection failed
        before it could); if even that fails, the lease expires and the job is requeued."""
        try:
            with connect(self.config.dsn) as conn:
                store.finish(conn, job.id, closing[0], closing[1], attempt=job.attempt)
        except (psycopg.Error, MvgraphError) as exc:
            log.warning("job %d: cannot record its end (%s); its lease will expire", job.id,
                        _first_line(exc))

    def _keep(self, dsn: str, conn: Conn) -> None:
        """Keep a clean job connection for a later job of the same submitter."""
        with self._lock:
            if sum(len(c) for c in self._idle_conns.values()) < self.config.concurrency:
                self._idle_conns.setdefault(dsn, []).append(conn)
                return
        conn.close()

    def _claim_next(self, claims: Conn | None, done: ClaimedJob
                    ) -> tuple[Conn | None, ClaimedJob | None]:
        """The next job for this thread's slot, claimed on the slot's own connection (opened
        as the worker's login when needed); None when there is none or the worker is
        stopping (the slot is freed)."""
        job = None
        if not self._stopping.is_set():
            try:
                if claims is None or claims.closed:
                    claims = self._connect()
                job = store.claim(claims, self.config.name, self.config.lease_s)
            except (psycopg.Error, MvgraphError) as exc:
                log.warning("claim failed (%s)", _first_line(exc))
                if claims is not None:
                    claims.close()
                claims = None
        with self._lock:
            running = self._jobs.pop(done.id, None)
            if job is not None:
                thread = running.thread if running else threading.current_thread()
                self._jobs[job.id] = _Running(job, thread)
        if job is not None:
            log.info("job %d: claimed (attempt %d): %s", job.id, job.attempt, job.statement)
        return claims, job

    def _job_connection(self, dsn: str) -> Conn:
        """A connection logged in as a job's submitter: one kept from an earlier job of the
        same submitter, else a new one (no DDL, no schema check: the claim proved it)."""
        with self._lock:
            kept = self._idle_conns.get(dsn, [])
            found = kept.pop() if kept else None
        while found is not None:
            if _idle_and_alive(found):
                return found
            found.close()  # the server ended it while it waited (a restart): a new one
            with self._lock:
                found = kept.pop() if kept else None
        conn = connect(dsn, application_name="mvgraph job")
        conn.prepare_threshold = None  # a job may DEALLOCATE; nothing of ours is prepared
        try:
            store.bookkeeping_commit(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _server_answers(self) -> bool:
        """Whether the worker's own login still reaches the server (a job's login failing
        while it does is that login's problem, not an outage)."""
        try:
            with connect(self.config.dsn, application_name="mvgraph worker probe") as conn:
                conn.execute(query("clock_now"))
            return True
        except (ConnectionFailed, psycopg.Error):
            return False

    def _clean(self, conn: Conn, job: ClaimedJob,
               closing: tuple[JobStatus, str | None] | None) -> bool:
        """Close the job when its run left that to the worker (``closing``), and reset its
        connection for the next job of the same submitter: idle, then ``DISCARD ALL``
        (settings back to the connection's start, including its role; temporary objects,
        advisory locks, LISTENs and prepared statements gone) and the stored commit mode again;
        all in one round trip. False when it cannot serve another job."""
        if conn.closed or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            if closing is not None:
                self._close_elsewhere(job, closing)
            return False
        try:
            with conn.pipeline():  # DISCARD ALL first: it cannot run inside a transaction
                conn.execute(query("discard_all"))
                store.bookkeeping_commit(conn)
                if closing is not None:  # as the connection's own role again
                    store.send_finish(conn, job.id, closing[0], closing[1], attempt=job.attempt)
        except (psycopg.Error, MvgraphError):
            if closing is not None:
                self._close_elsewhere(job, closing)
            return False
        return True

    def _housekeeping(self, conn: Conn, job_id: int) -> None:
        """Purge and compaction after a job, at most every ``housekeeping_s`` (each costs
        milliseconds: after every one of many small jobs it would cost more than the jobs)."""
        with self._lock:
            if time.monotonic() - self._last_housekeeping < self.config.housekeeping_s:
                return
            self._last_housekeeping = time.monotonic()
        maintenance.housekeeping(conn, job_id)

    def _catalog_graph(self, conn: Conn, fingerprint: str | None = None) -> MVGraph:
        """The catalog's graph for planning, read again only when the catalog's fingerprint
        changed (DDL); the fingerprint is read first (by the claim, when given), so DDL that
        commits while the graph is read makes the next job read it again. Shared by this
        worker's jobs (and, in a daemon, its freshness tick): planning and running only read
        it."""
        return self._graphs.graph(conn, fingerprint)

    def _execute(self, conn: Conn, job: ClaimedJob) -> RefreshReport | None:
        """Run a claimed job by its kind: a refresh plan, a SQL statement, a creation (the
        connection was prepared when it was opened)."""
        if job.kind is JobKind.SQL:
            kinds.run_sql(conn, job)
            return None
        if job.kind is JobKind.CREATE:
            return self._create(conn, job)
        if job.kind is JobKind.REBUILD:
            return self._rebuild(conn, job)
        return self._refresh(conn, job, job_spec(job))

    def _rebuild(self, conn: Conn, job: ClaimedJob) -> RefreshReport | None:
        """Run a rebuild (its progress on a second connection of the submitter's login)."""
        from mvgraph.rebuild.service import run_job

        control = Control()
        with self._lock:
            running = self._jobs.get(job.id)
            if running is not None:
                running.executor = control  # the heartbeat passes requests on to it
            if self._stopping.is_set():
                control.stop(StopMode.REQUEUE)
        status = run_job(conn, self._owner_dsn(job), job, control)
        if status is RunStatus.LOST:
            self._requeue_lost(job)
        return None

    def _create(self, conn: Conn, job: ClaimedJob) -> RefreshReport | None:
        """Populate a view created in the background; its DROP cancels the job, and
        cancelling the job drops it (on this connection: the submitter's)."""
        if not kinds.view_exists(conn, job):
            kinds.dropped(conn, job)
            return None
        if kinds.cancelled_before_start(conn, job):
            return None
        with kinds.watch_drop(self.config.dsn, job) as seen:
            report = self._refresh(conn, job, job_spec(job))
        if report.status is not RunStatus.LOST and (seen.is_set()
                                                   or not kinds.view_exists(conn, job)):
            kinds.dropped(conn, job)
        elif report.status is RunStatus.CANCELLED:  # cancelled: the view goes too
            kinds.remove_cancelled(conn, job)
        return report

    def _refresh(self, conn: Conn, job: ClaimedJob, spec: Any) -> RefreshReport:
        """Plan a refresh from fresh facts and run what is unfinished."""
        from mvgraph.refresh.service import build_plan, planned_steps, run_options

        options = run_options(conn, spec, stored=job.settings)
        g, plan, state = build_plan(conn, spec.targets, spec.behavior, force=spec.force,
                                    search_path=spec.search_path,
                                    graph=self._catalog_graph(conn, job.fingerprint),
                                    event_triggers=job.event_triggers)
        rows = list(job.steps) if job.steps is not None else store.step_rows(conn, job.id)
        finished = {name: (status, reason, error)
                    for _seq, name, status, reason, error in rows if status.finished}
        prior = {s.name: StepResult(s.name, finished[str(s.name)][0],
                                    finished[str(s.name)][1] or "", 0.0,
                                    finished[str(s.name)][2])
                 for s in plan.steps if str(s.name) in finished}
        todo = planned_steps(replace(plan, steps=tuple(s for s in plan.steps
                                                      if s.name not in prior)), state)
        setup: Callable[[Conn], None] | None = None
        if rows:  # planned before (requeued, resumed): merged into its rows
            seqs = store.replan(conn, job.id, todo, rows)
        else:  # written with the run's settings, in one round trip
            seqs = {s.name: seq for seq, s in enumerate(todo, 1)}

            def setup(c: Conn) -> None:
                store.write_steps(c, job.id, todo)
        executor = Executor(conn, g, plan, options, _log_event, catalog=state, job_id=job.id,
                            seqs={s.name: seqs[str(s.name)] for s in plan.steps},
                            attempt=job.attempt, foreground=False, prior=prior,
                            restore_settings=False,  # DISCARD ALL resets them after the job
                            setup=setup, defer_finish=job.kind is JobKind.REFRESH)
        with self._lock:
            running = self._jobs.get(job.id)
            if running is not None:
                running.executor = executor
            if self._hurry.is_set():
                executor.stop(StopMode.REQUEUE, cancel_running=True)
            elif self._stopping.is_set():
                executor.stop(StopMode.REQUEUE, cancel_running=False)
        return executor.run()

    def _fail(self, conn: Conn | None, job: ClaimedJob, message: str) -> None:
        log.warning("job %d failed: %s", job.id, message)
        try:
            if conn is None or conn.closed or conn.broken \
                    or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn = connect(self.config.dsn)
            store.finish(conn, job.id, JobStatus.FAILED, message, attempt=job.attempt)
        except (psycopg.Error, MvgraphError) as exc:
            log.warning("job %d: cannot record its failure (%s); its lease will expire",
                        job.id, _first_line(exc))

    def _requeue_lost(self, job: ClaimedJob) -> None:
        """Hand a job whose connection died back to the queue once the database answers
        (while this worker still holds its lease); else the lease expires and any worker
        takes it over."""
        deadline = time.monotonic() + self.config.lease_s
        delay = 0.2
        never = threading.Event()
        while time.monotonic() < deadline:
            try:
                with connect(self.config.dsn) as conn:
                    requeued = store.finish(conn, job.id, JobStatus.QUEUED,
                                            "worker lost its connection; requeued",
                                            attempt=job.attempt)
                if requeued:
                    log.info("job %d: requeued", job.id)
                return
            except (psycopg.Error, MvgraphError):
                outage.wait_to_retry(self.config.dsn, delay, never)  # ends when it is back
                delay = min(delay * 2, 5.0)

    # ---- leases ---------------------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        conn: Conn | None = None
        while True:
            with self._lock:
                running = list(self._jobs.values())
            if not running and self._stopping.is_set():
                break
            try:
                if running and (conn is None or conn.closed):
                    conn = connect(self.config.dsn,
                                   application_name=f"mvgraph worker {self.config.name}")
                if running:
                    assert conn is not None
                    self._beat(conn, running)
            except (psycopg.Error, MvgraphError) as exc:
                log.warning("heartbeat failed (%s); retrying", _first_line(exc))
                if conn is not None:
                    conn.close()
                conn = None
            pause = (min(self.config.heartbeat_s, 0.5) if self._stopping.is_set() and
                     not running else self.config.heartbeat_s)
            # an idle worker's SIGTERM ends this wait at once; a stopping one beats on time
            (time.sleep if self._stopping.is_set() else self._stopping.wait)(pause)
        if conn is not None:
            conn.close()

    def _beat(self, conn: Conn, running: list[_Running]) -> None:
        """Renew the leases of running jobs and pass on what was asked of them. A 'lost' from
        a job whose attempt has just ended by itself is its own end racing the heartbeat (the
        heartbeat's update waited for the end's commit): nothing to stop, nothing to requeue
        (stopping it would make the run look lost, and the job run twice)."""
        for r in running:
            asked = store.heartbeat(conn, r.job.id, r.job.attempt, self.config.lease_s)
            if asked == "lost" and store.ended_attempt(conn, r.job.id, r.job.attempt):
                continue
            self._obey(r, asked)

    def _obey(self, running: _Running, asked: str) -> None:
        ex = running.executor
        if ex is None or not asked:
            return
        if asked == "cancel":
            ex.cancel()
        elif asked == "suspend":
            ex.suspend()
        elif asked == "lost":
            log.warning("job %d: lease lost (another worker took it over)", running.job.id)
            ex.stop(StopMode.LOST)

    # ---- stopping -------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        """Stop starting steps, wait ``shutdown_s`` for running ones, cancel the rest; every
        job not finished goes back to the queue."""
        with self._lock:
            running = list(self._jobs.values())
        for r in running:
            if r.executor is not None:
                r.executor.stop(StopMode.REQUEUE, cancel_running=False)
        deadline = time.monotonic() + self.config.shutdown_s
        for r in running:
            while r.thread.is_alive() and time.monotonic() < deadline \
                    and not self._hurry.is_set():
                r.thread.join(0.2)
        self._hurry.set()
        with self._lock:
            running = list(self._jobs.values())
        for r in running:
            if r.executor is not None:
                r.executor.stop(StopMode.REQUEUE, cancel_running=True)
        for r in running:
            r.thread.join(30)


def job_spec(job: ClaimedJob) -> Any:
    """What to refresh: the options written by ``refresh --background``, the view of a
    background CREATE, else the statement given to ``mvgraph.submit``, parsed by the SQL
    front-end."""
    from mvgraph.frontend import parse_refresh
    from mvgraph.refresh.service import RefreshSpec

    if job.options.get("asked") or job.options.get("targets"):
        return RefreshSpec.from_options(job.options)
    if job.kind is JobKind.CREATE:  # the view created at submit, and only it
        return RefreshSpec((str(job.options["name"]),), "restrict", force=True)
    parsed = parse_refresh(job.statement)
    if parsed is None:
        raise UsageError(f"job {job.id}: {job.statement!r} is not REFRESH MATERIALIZED VIEW "
                         "name [DEFAULT | RESTRICT | CASCADE FORWARD|BACKWARD|ALL]")
    return RefreshSpec((parsed.name,), parsed.behavior.value,
                       search_path=tuple(job.options.get("search_path") or ("public",)),
                       concurrently="always" if parsed.concurrently else "auto")


def _log_event(event: Event) -> None:
    if isinstance(event, StepFinished):
        r = event.result
        log.info("job %d: %s %s%s", event.job_id, r.name, r.action,
                 f": {r.error}" if r.error else "")
    elif isinstance(event, JobFinished):
        log.info("job %d: %s in %.2fs", event.job_id, event.status.value, event.elapsed_s)


def _idle_and_alive(conn: Conn) -> bool:
    """Whether a kept, idle connection can serve a job: open, and nothing arrived on it while
    it waited (a server that ends a session sends its FATAL message and closes the socket; a
    kept connection LISTENs to nothing, so anything readable means it is gone)."""
    if conn.closed or conn.broken:
        return False
    try:
        readable, _w, _x = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return False
    return not readable


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
