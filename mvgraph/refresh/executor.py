"""Running a plan for a job: one transaction per view, advisory locks, parallel workers.

The runner runs the plan of one job (created by the caller through ``mvgraph.jobs.store``),
records each step's transitions through the store, closes the job, and emits typed events
(``mvgraph.model.events``). It creates no jobs and does no housekeeping.

Each step is one transaction, sent in one round trip: ``BEGIN``, a lock that keeps compaction
away, ``mvgraph.refresh_step(...)`` (the view's advisory lock, a check that its last refresh is
still the one the plan saw, ``REFRESH MATERIALIZED VIEW [CONCURRENTLY]`` and the record of what
the refresh saw, all server-side: see ``0003_refresh_step.sql``), ``COMMIT``. A view is therefore
either refreshed and recorded, or untouched. When the plan's verdict may be out of date (another
process refreshed the view meanwhile, or an upstream step's content did not change), the step
decides again from fresh facts read under the view's lock.

An atomic run is one READ COMMITTED transaction that first takes the advisory locks of all its
views, in oid order; each ``REFRESH`` then reads with a snapshot taken after the locks.

A run stops early in one of four ways (``StopMode``): cancel (running statements cancelled,
steps not run cancelled), suspend (running steps finish, the rest stay pending), requeue (a
worker shutting down: the same, after its grace period running statements are cancelled and
go back to pending), lost (another worker took the job over: nothing more is written). Requests
from other processes (``mvgraph.cancel_job``, ``suspend_job``) reach the run through
``refresh_step``, which refuses to start a step of a job with a request (SQLSTATE MVJ01), and
through ``pg_cancel_backend`` of its running step.
"""

from __future__ import annotations

import heapq
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager, nullcontext, suppress
from dataclasses import dataclass, field, replace
from enum import Enum
from graphlib import TopologicalSorter
from typing import Any

import psycopg
from psycopg import errors as pgerrors
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb

from mvgraph.catalog import Relation
from mvgraph.db.outage import session_lost
from mvgraph.db.queries import query
from mvgraph.errors import MvgraphError, StatementTimeout, UnknownRelation, translate
from mvgraph.graph import MVGraph
from mvgraph.jobs import store
from mvgraph.model.events import JobFinished, JobStarted, Listener, StepFinished, StepStarted
from mvgraph.model.names import RelationName
from mvgraph.model.results import StepResult
from mvgraph.model.status import RunStatus, StepStatus
from mvgraph.refresh.behavior import Action, Plan, Step, decide
from mvgraph.refresh.changes import CatalogState, freshness_inputs, gather_facts, read_state
from mvgraph.refresh.locks import (
    CONNECTION_CHECK,
    LOCK_NAMESPACE,
    LockMode,
    describe_holder,
    global_lock,
)
from mvgraph.tracking.triggers import stat_counters

log = logging.getLogger("mvgraph")
Conn = psycopg.Connection[tuple[object, ...]]
MAX_RETRIES = 5
EXACT_WIDTH_UP_TO = 300  # steps; above that the number of refreshing steps bounds the width
JOB_REQUEST = "MVJ01"  # refresh_step: the job has a request (cancel, suspend) or is not ours
RACED = "raced"  # refresh_step: the view was refreshed elsewhere since the plan; decide again
STOPPED = (StepStatus.FAILED, StepStatus.BLOCKED, StepStatus.CANCELLED)
BATCH_NOTICE = "mvgraph step"  # refresh_batch: one NOTICE per step start and end

__all__ = ["Executor", "RefreshOptions", "RefreshReport", "StepResult", "StopMode",
           "advisory_key", "plan_width", "repeatable_read"]


class StopMode(Enum):
    """Why a run stops starting steps."""

    CANCEL = "cancel"
    SUSPEND = "suspend"
    REQUEUE = "requeue"
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class RefreshOptions:
    """How to run a plan."""

    parallel: int = 1
    atomic: bool = False
    # auto | always | never. CONCURRENTLY needs a populated view with a usable unique index:
    # 'always' (asked for CONCURRENTLY) uses it wherever a view allows it and refreshes the
    # others plainly, each step's reason saying so, never failing on them (issue 18, item 8)
    concurrently: str = "auto"
    lock_timeout: str = "10s"
    statement_timeout: str = "0"
    # Refreshes rebuild derived data: committing them asynchronously cannot break consistency
    # (the view and mvgraph's record of it commit together); a crash may only lose the latest.
    synchronous_commit: str = "off"
    # A foreground run sends the steps of one connection in batches (one CALL of
    # mvgraph.refresh_batch each, a transaction per step on the server) instead of one round
    # trip per step; False runs every step from the client, as a worker does.
    batch: bool = True
    # What the run locks (mvgraph.refresh.locks): each view's advisory lock (view), also one
    # lock for the whole database held from start to end (global), or nothing (off).
    lock_mode: LockMode = LockMode.VIEW
    global_lock_timeout: str | None = None  # the wait for the global lock (None: lock_timeout)
    global_lock_idle_timeout: str | None = None  # idle in transaction while holding it


@dataclass(frozen=True, slots=True)
class RefreshReport:
    """The outcome of a run: ``status`` is ok, failed or cancelled (a job run by a worker may
    also end suspended, queued again, or lost)."""

    status: RunStatus
    steps: tuple[StepResult, ...]
    job_id: int | None
    elapsed_s: float
    plan: Plan

    @property
    def refreshed(self) -> list[RelationName]:
        """Views that were refreshed."""
        return [s.name for s in self.steps if s.status is StepStatus.DONE]

    @property
    def skipped(self) -> list[RelationName]:
        """Views that were skipped as unchanged."""
        return [s.name for s in self.steps if s.status is StepStatus.SKIPPED]

    def to_dict(self) -> dict[str, Any]:
        """The documented ``--json`` shape."""
        return {"status": self.status.value, "job_id": self.job_id,
                "elapsed_s": round(self.elapsed_s, 4),
                "steps": [s.to_dict() for s in self.steps]}


def advisory_key(oid: int) -> int:
    """The advisory lock key of a view: a namespace in the high bits, its oid in the low bits."""
    return (LOCK_NAMESPACE << 32) | oid


@contextmanager
def repeatable_read(conn: Conn) -> Iterator[None]:
    """BEGIN ISOLATION LEVEL REPEATABLE READ ... COMMIT, rolled back on any exception."""
    conn.execute(query("begin_rr"))
    try:
        yield
    except BaseException:
        _rollback(conn)
        raise
    conn.execute(query("commit"))


class _Cancelled(Exception):
    """The run was cancelled before this step started."""


@dataclass
class Executor:
    """Runs the plan of one job against one database."""

    conn: Conn  # control connection (autocommit); also runs the steps when parallel == 1
    graph: MVGraph
    plan: Plan
    options: RefreshOptions = field(default_factory=RefreshOptions)
    listener: Listener | None = None
    catalog: CatalogState | None = None  # read by planning; read again when not given
    job_id: int = 0  # the job whose plan this is (its step rows exist: see jobs.store)
    seqs: dict[RelationName, int] | None = None  # step numbers; default: plan order from 1
    attempt: int | None = None  # a worker's claim: steps refuse to start once it is lost
    run_as: str | None = None  # REFRESH with this role's rights (a worker running a job)
    foreground: bool = True  # the job is owned by this session's lock (else by a lease)
    prior: dict[RelationName, StepResult] = field(default_factory=dict)  # earlier attempts

    def __post_init__(self) -> None:
        self._cancel = threading.Event()  # set: start no more steps (see self._mode)
        self._mode: StopMode | None = None
        self._active: dict[int, Conn] = {}
        self._lock = threading.Lock()
        self._held = ExitStack()  # locks held for the whole run (set again by run())
        self.rels: dict[RelationName, Relation] = {}
        self.inputs: dict[RelationName, set[RelationName]] = {}
        self.stats_inputs: dict[RelationName, list[Relation]] = {}
        self.seq = self.seqs or {s.name: i + 1 for i, s in enumerate(self.plan.steps)}
        self.results: dict[RelationName, StepResult] = {}
        self._atomic_counters: dict[int, tuple[int, int]] = {}
        self._unrecorded: list[StepResult] = []  # skipped without a transaction; recorded last
        self._changed: dict[RelationName, bool] = {}  # refreshed views: did their content change
        self._running: set[RelationName] = set()  # steps started and not yet finished
        self._no_batch: set[RelationName] = set()  # raced in a batch: run from the client
        self._started_at: dict[RelationName, float] = {}  # batch steps: when they started
        self.results.update(self.prior)
        # a view refreshed by an earlier attempt counts as changed for the steps after it
        self._changed.update({n: r.status is StepStatus.DONE for n, r in self.prior.items()})

    # ---- public ---------------------------------------------------------------------------------
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

    def run(self) -> RefreshReport:
        """Run the plan and return what happened (never raises for a failed step)."""
        if not self.job_id:
            raise MvgraphError("a run needs a job: create it with mvgraph.jobs.store first")
        start = time.monotonic()
        with self._session_settings(self.conn), ExitStack() as held:
            self._held = held  # the global lock, when the run takes it: released at the end
            return self._run(start)

    def _apply_settings(self, conn: Conn, values: tuple[str | None, ...] | None = None
                        ) -> tuple[str | None, ...] | None:
        """Set commit mode, timeouts and application name (``mvgraph job N``) for this
        session, and in lock mode global its idle timeout and client check; returns the
        previous values."""
        o = self.options
        new = values or (o.synchronous_commit, o.lock_timeout, o.statement_timeout,
                         f"mvgraph job {self.job_id}", "notice", "read committed")
        row = conn.execute(query("set_session"), dict(zip(
            ("synchronous_commit", "lock_timeout", "statement_timeout", "application_name",
             "client_min_messages", "default_transaction_isolation"),
            new[:6], strict=True))).fetchone()
        previous: tuple[str | None, ...] | None = tuple(str(v) for v in row[:6]) if row else None
        if o.lock_mode is LockMode.GLOBAL and (values is None or len(values) == 8):
            idle, check = (values[6], values[7]) if values else (o.global_lock_idle_timeout,
                                                                 CONNECTION_CHECK)
            row = conn.execute(query("set_global_lock_session"),
                               {"idle": idle, "check": check}).fetchone()
            if previous is not None and row is not None:
                previous += (str(row[0]), None if row[1] is None else str(row[1]))
        return previous

    def _configure(self, conn: Conn) -> None:
        """A pool connection's setup: the run's settings (the pool closes it after the run)."""
        self._apply_settings(conn)

    @contextmanager
    def _session_settings(self, conn: Conn) -> Iterator[None]:
        """The run's commit mode and timeouts on this connection, restored afterwards."""
        previous = self._apply_settings(conn)
        try:
            yield
        finally:
            if previous is not None and not conn.closed:
                with suppress(psycopg.Error):
                    self._apply_settings(conn, previous)

    def _hold_global(self) -> None:
        """Lock mode global: wait for the database's refresh lock (``global_lock_timeout``,
        else the lock timeout) and hold it until the run ends. A cancel interrupts the wait."""
        o = self.options
        self._register(self.conn)
        try:
            self._held.enter_context(global_lock(self.conn, o.global_lock_timeout or
                                                 o.lock_timeout, o.lock_timeout))
        except StatementTimeout:
            if not self._cancel.is_set():
                raise
        finally:
            self._unregister()

    def _view_key(self, oid: int) -> int | None:
        """The advisory key a step locks; None in lock mode off (no lock)."""
        return None if self.options.lock_mode is LockMode.OFF else advisory_key(oid)

    def _run(self, start: float) -> RefreshReport:
        try:
            self._prepare()
            if self.options.lock_mode is LockMode.GLOBAL:
                self._hold_global()
            self._emit(JobStarted(self.job_id, len(self.plan.steps)))
            workers = 1 if self.options.atomic else self._workers()
            if self.options.atomic:
                self._run_atomic()
            elif workers > 1:
                self._run_parallel(workers)
            else:
                self._run_serial()
        except KeyboardInterrupt:
            self.cancel()
            if self.options.atomic:
                self.results.clear()  # the one transaction was rolled back
        except BaseException as exc:  # an mvgraph bug or a lost connection: close the job
            done = tuple(self.results.get(s.name) or StepResult(
                s.name, StepStatus.CANCELLED, f"not run: {_message(exc)}")
                for s in self.plan.steps)
            with suppress(Exception):
                self._finish(RunStatus.FAILED, done, start, _message(exc))
            raise
        ordered = tuple(self.results.get(s.name) or self._not_run(s) for s in self.plan.steps)
        self._finish(self._status(ordered), ordered, start)
        return RefreshReport(self._status(ordered), ordered, self.job_id,
                             time.monotonic() - start, self.plan)

    def _not_run(self, step: Step) -> StepResult:
        """The result of a step the run never finished."""
        mode = self._mode
        if mode in (StopMode.SUSPEND, StopMode.REQUEUE, StopMode.LOST):
            return StepResult(step.name, StepStatus.PENDING, f"not run yet: job {mode.value}"
                              f"{'ed' if mode is StopMode.SUSPEND else ''}"
                              if mode is not StopMode.LOST else "not run: job lost")
        reason = "run cancelled" if self._cancel.is_set() else "not run"
        return StepResult(step.name, StepStatus.CANCELLED, "cancelled while running"
                          if step.name in self._running else reason)

    def _status(self, ordered: tuple[StepResult, ...]) -> RunStatus:
        mode = self._mode
        if mode is StopMode.CANCEL:
            return RunStatus.CANCELLED
        if mode is StopMode.LOST:
            return RunStatus.LOST
        if mode is StopMode.REQUEUE and any(r.status is StepStatus.PENDING for r in ordered):
            return RunStatus.QUEUED
        if mode is StopMode.SUSPEND and any(r.status is StepStatus.PENDING for r in ordered):
            return RunStatus.SUSPENDED
        if any(r.status in (StepStatus.FAILED, StepStatus.BLOCKED) for r in ordered):
            return RunStatus.FAILED
        if any(r.status is StepStatus.CANCELLED for r in ordered):
            return RunStatus.CANCELLED
        return RunStatus.OK

    # ---- setup and bookkeeping ------------------------------------------------------------------
    def _prepare(self) -> None:
        names = [s.name for s in self.plan.steps]
        self.inputs = {n: freshness_inputs(self.graph, n) for n in names}
        state = self.catalog or read_state(self.conn, self.graph, names)
        self.catalog = state
        self.rels = dict(state.rels)  # updated as views get populated
        missing = [n for n in names if n not in self.rels]
        if missing:
            raise UnknownRelation(f"{missing[0]} does not exist in the database; reload the graph")
        stats = {oid for oid, (mode, _) in state.modes.items() if mode == "stats"}
        self.stats_inputs = {n: [self.rels[i] for i in sorted(self.inputs[n])
                                 if i in self.rels and self.rels[i].oid in stats] for n in names}
        oids = [self.rels[n].oid for n in names]
        try:
            self.conn.execute(query("ensure_mv_state"), {"oids": oids,
                                                         "names": [str(n) for n in names]})
        except psycopg.Error as exc:
            raise translate(exc) from exc

    def _finish(self, status: RunStatus, results: tuple[StepResult, ...], start: float,
                cause: str | None = None) -> None:
        error = next((f"{r.name}: {r.error}" for r in results if r.error), cause)
        if status is not RunStatus.LOST:
            try:
                late = [r for r in results  # steps not recorded by a worker
                        if r.name not in self.prior and (self.options.atomic or r.status in (
                            StepStatus.BLOCKED, StepStatus.CANCELLED, StepStatus.PENDING))]
                with self.conn.pipeline():
                    for r in late + [u for u in self._unrecorded if u not in late]:
                        store.record_step(self.conn, self.job_id, self.seq[r.name], r)
            except psycopg.Error as exc:
                raise translate(exc) from exc
            job_status = status.job_status
            assert job_status is not None
            store.finish(self.conn, self.job_id, job_status, error, attempt=self.attempt,
                         foreground=self.foreground)
        self._emit(JobFinished(self.job_id, status, time.monotonic() - start))

    def _record_step(self, conn: Conn, r: StepResult) -> None:
        store.record_step(conn, self.job_id, self.seq[r.name], r)

    def _emit(self, event: JobStarted | StepStarted | StepFinished | JobFinished) -> None:
        if self.listener is not None:
            self.listener(event)

    def _finished(self, name: RelationName, result: StepResult) -> None:
        self._emit(StepFinished(self.job_id, name, result))

    # ---- strategies -----------------------------------------------------------------------------
    @property
    def _batching(self) -> bool:
        """Steps go to the server in batches: a foreground, non-atomic run (a worker's stop
        modes other than cancel must take effect between steps, which only the client knows)."""
        return self.options.batch and self.foreground and not self.options.atomic

    def _run_serial(self) -> None:
        if self._batching:
            self._run_chain(self.conn, [s for s in self.plan.steps if s.name not in self.prior])
            return
        for step in self.plan.steps:
            if step.name not in self.prior:
                self.results[step.name] = self._guarded(self.conn, step, self.results)

    def _workers(self) -> int:
        """How many views to refresh at once: at most ``parallel``, never more than the steps
        that can run side by side, and within the connections the server has room for (always
        leaving some free for others; one warning when that is fewer than asked)."""
        wanted = min(self.options.parallel, len(self.plan.to_refresh))
        if wanted <= 1:
            return 1
        try:
            row = self.conn.execute(query("connection_room")).fetchone()
        except psycopg.Error as exc:
            raise translate(exc) from exc
        assert row is not None
        total, reserved, in_use = (int(str(v)) for v in row)
        keep_free = max(2, total // 20)
        room = 1 + max(0, total - reserved - in_use - keep_free)  # this connection works too
        if wanted > room:
            width = plan_width(self.plan)
            if min(wanted, width) > room:
                log.warning("--parallel %d: the server has room for %d more connection(s) "
                            "(max_connections %d, %d reserved, %d in use, %d kept free for "
                            "others); refreshing at most %d view(s) at once",
                            self.options.parallel, room - 1, total, reserved, in_use, keep_free,
                            room)
            wanted = min(wanted, width, room)
        return wanted

    def _run_parallel(self, workers: int) -> None:
        results = self.results
        priority = self._priorities()
        sorter = TopologicalSorter({s.name: set(s.after) for s in self.plan.steps})
        sorter.prepare()
        steps = {s.name: s for s in self.plan.steps}
        ready: list[tuple[float, str, RelationName]] = []
        running: dict[Future[None], list[RelationName]] = {}
        info = self.conn.info
        dsn = make_conninfo(info.dsn, password=info.password) if info.password else info.dsn
        with _Connections(self.conn, dsn, workers, self._configure) as conns, \
                ThreadPoolExecutor(workers) as pool:

            def task(group: list[Step]) -> None:
                rest = []
                for step in group:
                    result = self._early(step, results)  # a skipped step needs no connection
                    if result is None:
                        rest.append(step)
                    else:
                        results[step.name] = result
                if not rest:
                    return
                with conns.connection() as c:
                    if self._batching:
                        self._run_chain(c, rest)
                    else:
                        results[rest[0].name] = self._run_step(c, rest[0])

            while sorter.is_active():
                for name in sorter.get_ready():
                    if name in self.prior:  # finished by an earlier attempt of the job
                        sorter.done(name)
                    else:
                        heapq.heappush(ready, (-priority[name], str(name), name))
                while ready and len(running) < workers:
                    # batching: half a share of the ready steps per connection (never all of
                    # them for the only free one: the others, soon free too, would wait for it;
                    # half, so that unequal steps even out)
                    size = -(-len(ready) // (2 * workers)) if self._batching else 1
                    group: list[Step] = []
                    while ready and len(group) < size:
                        _, _, name = heapq.heappop(ready)
                        early = self._precheck(steps[name], results)
                        if early is not None:
                            results[name] = early
                            sorter.done(name)
                            self._finished(name, early)
                            continue
                        group.append(steps[name])
                    if group:
                        running[pool.submit(task, group)] = [s.name for s in group]
                if not running:
                    continue
                try:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                except KeyboardInterrupt:
                    self.cancel()  # before the pools' exits wait for the workers
                    raise
                for fut in done:
                    names = running.pop(fut)
                    fut.result()
                    for name in names:
                        sorter.done(name)

    def _run_atomic(self) -> None:
        """All steps in one REPEATABLE READ transaction, every view built from its one snapshot.

        The advisory locks of all its views are taken first, at session level, in oid order,
        before the transaction (and so its snapshot) exists: a refresh elsewhere of one of them
        either committed before the snapshot (nothing stale, no REFRESH CONCURRENTLY against
        rows the snapshot cannot see) or waits for this run; two atomic runs wait in one order,
        never for each other. (LOCK TABLE, which takes no snapshot, refuses materialized views;
        a transaction-level advisory lock is taken by a statement, which fixes the snapshot
        before its wait.) A deadlock can still arise outside those locks, rarely: a plain
        REFRESH here waits for ACCESS EXCLUSIVE on a view that a refresh elsewhere is reading,
        while that refresh waits to read a view this run refreshed plainly. Its victim is
        rolled back whole, so the run starts again, at most MAX_RETRIES times."""
        keys = sorted(k for s in self.plan.steps
                      if (k := self._view_key(self.rels[s.name].oid)) is not None)
        for _attempt in range(MAX_RETRIES):
            self._atomic_counters = self._stat_counters()
            results = self.results
            results.clear()
            results.update(self.prior)
            self._changed = {n: r.status is StepStatus.DONE for n, r in self.prior.items()}
            try:
                self._register(self.conn)
                with self._atomic_transaction(keys):
                    for step in self.plan.steps:
                        if step.name in self.prior:
                            continue
                        self._check_cancel()
                        self._emit(StepStarted(self.job_id, step.name))
                        result = self._attempt(self.conn, step, in_transaction=True)
                        results[step.name] = result
                        self._finished(step.name, result)
                return
            except (pgerrors.DeadlockDetected, pgerrors.SerializationFailure):
                continue
            except (psycopg.Error, _Cancelled) as exc:
                if isinstance(exc, psycopg.Error) and _is_request(exc):
                    self._learn_request(self.conn)
                self.results = self._atomic_failure(dict(results), exc)
                return
            finally:
                self._unregister()
        self.results = self._atomic_failure({}, MvgraphError("too many concurrent refreshes"))

    def _stat_counters(self) -> dict[int, tuple[int, int]]:
        """Write counters of the run's 'stats' inputs, read before its transaction begins."""
        stats = {r.oid for rs in self.stats_inputs.values() for r in rs}
        return stat_counters(self.conn, stats) if stats else {}

    @contextmanager
    def _atomic_transaction(self, keys: list[int]) -> Iterator[None]:
        """Every view's advisory lock at session level (lock_timeout applies), then the
        REPEATABLE READ transaction with compaction kept away; the locks are released after
        COMMIT or ROLLBACK (a lost connection releases them too)."""
        try:
            if keys:  # none in lock mode off
                self.conn.execute(query("lock_views"), {"keys": keys})
            with repeatable_read(self.conn):
                self.conn.execute(query("keep_compaction_away"))  # LOCK takes no snapshot
                yield
        finally:
            if keys and not self.conn.closed:
                with suppress(psycopg.Error):  # keys not held (a failed lock) only warn
                    self.conn.execute(query("unlock_views"), {"keys": keys})

    def _atomic_failure(self, done: dict[RelationName, StepResult],
                        exc: BaseException) -> dict[RelationName, StepResult]:
        cancelled = self._cancel.is_set() or isinstance(exc, _Cancelled)
        failed_at = next((s.name for s in self.plan.steps if s.name not in done), None)
        message = _message(exc)
        out = {}
        for s in self.plan.steps:
            if self._mode in (StopMode.SUSPEND, StopMode.REQUEUE, StopMode.LOST):
                out[s.name] = StepResult(s.name, StepStatus.PENDING,
                                         f"rolled back: job {self._mode.value}")
            elif cancelled:
                out[s.name] = StepResult(s.name, StepStatus.CANCELLED,
                                         "run cancelled; rolled back")
            elif s.name == failed_at:
                out[s.name] = StepResult(s.name, StepStatus.FAILED, s.reason, error=message)
            else:
                out[s.name] = StepResult(s.name, StepStatus.CANCELLED,
                                         f"rolled back: the atomic run failed at {failed_at}")
        return out

    # ---- one step -------------------------------------------------------------------------
    def _begin_step(self, conn: Conn, step: Step, pipe: psycopg.Pipeline) -> None:
        """Mark the step running (committed first, by a Sync of its own: others see it, and
        whom to cancel), then open its transaction: READ COMMITTED, compaction kept away until
        COMMIT."""
        store.step_running(conn, self.job_id, self.seq[step.name])
        pipe.sync()
        conn.execute(query("begin_step"))
        conn.execute(query("keep_compaction_away"))

    def _precheck(self, step: Step,
                  results: dict[RelationName, StepResult]) -> StepResult | None:
        if self._cancel.is_set():
            if self._mode is StopMode.CANCEL:
                return StepResult(step.name, StepStatus.CANCELLED,
                                  "run cancelled before this step")
            return self._not_run(step)
        for up in step.after:
            r = results.get(up) or self.prior.get(up)
            if r is not None and r.status in STOPPED:
                cause = up if r.status is StepStatus.FAILED else r.reason.removeprefix(
                    "blocked by ")
                return StepResult(step.name, StepStatus.BLOCKED, f"blocked by {cause}")
        return None

    def _still_unchanged(self, step: Step) -> bool:
        """A step the plan skips, with no upstream step changed in this run, is skipped without
        a transaction: its facts were read moments ago by the plan. A write committed since then
        is not lost; it counts for the next run, as if it had come a moment later."""
        return (step.action is Action.SKIP and not step.forced
                and not any(self._changed.get(a) for a in step.after))

    def _guarded(self, conn: Conn, step: Step,
                 results: dict[RelationName, StepResult]) -> StepResult:
        return self._early(step, results) or self._run_step(conn, step)

    def _early(self, step: Step, results: dict[RelationName, StepResult]) -> StepResult | None:
        """The step's outcome when it needs no transaction (blocked, cancelled, still skipped)."""
        early = self._precheck(step, results)
        if early is None and self._still_unchanged(step):
            early = StepResult(step.name, StepStatus.SKIPPED, step.reason)
            self._unrecorded.append(early)
        if early is not None:
            self._finished(step.name, early)
        return early

    def _run_step(self, conn: Conn, step: Step, announced: bool = False) -> StepResult:
        if not announced:
            self._emit(StepStarted(self.job_id, step.name))
        self._running.add(step.name)
        result = self._with_retries(conn, step)
        self._running.discard(step.name)
        self._finished(step.name, result)
        return result

    # ---- batches of steps -----------------------------------------------------------------------
    def _run_chain(self, conn: Conn, steps: list[Step]) -> None:
        """Run ``steps`` in order on one connection: a step that needs no transaction at once,
        the longest run of steps the server can decide alone in one batch (one CALL), any other
        step from the client; results land in ``self.results`` as steps finish."""
        rest = list(steps)
        while rest:
            step = rest[0]
            early = self._early(step, self.results)
            if early is not None:
                self.results[step.name] = early
                rest.pop(0)
                continue
            batch = self._batchable(rest)
            if not batch:
                announced = step.name in self._running  # raced in a batch, StepStarted sent
                self.results[step.name] = self._run_step(conn, step, announced=announced)
                rest.pop(0)
                continue
            self._call_batch(conn, batch)
            rest = [s for s in rest if s.name not in self.results]

    def _batchable(self, rest: list[Step]) -> list[dict[str, Any]]:
        """The steps at the head of ``rest`` the server can run one after the other without
        the client: each forced, stale by its own inputs, after an upstream step that changed,
        or (decided on the server) after an upstream step of the same batch that changes."""
        out: list[dict[str, Any]] = []
        names: set[RelationName] = set()
        for step in rest:
            if (step.name in self._no_batch or step.name in self.prior
                    or self._precheck(step, self.results) is not None):
                break
            after = [str(a) for a in step.after if a in names]
            if step.action is Action.SKIP and not step.forced:
                if not self._still_unchanged(step):
                    break  # after an upstream step that changed: decided from fresh facts
                out.append({"seq": self.seq[step.name], "name": str(step.name), "skip": True,
                            "after": after})
                names.add(step.name)
                continue
            reason = self._verdict_holds(step)
            if reason is None and not (step.propagated and after):
                break
            if reason is None and self._plain_note(self.rels[step.name]):
                break  # the server would word the reason without the note: the client does
            params = self._step_params(step, reason or "", check=not step.forced)
            out.append({"seq": params["seq"], "oid": params["oid"], "name": params["name"],
                        "key": params["key"], "concurrently": params["concurrently"],
                        "reason": None if reason is None else params["reason"], "after": after,
                        "inputs": params["inputs"],
                        "stats": params["stats"], "check": params["check"],
                        "seen": None if step.seen is None else step.seen.isoformat()})
            names.add(step.name)
        return out

    def _call_batch(self, conn: Conn, batch: list[dict[str, Any]]) -> None:
        """One CALL of mvgraph.refresh_batch; progress arrives by NOTICE as steps start and
        finish. A step that stopped the batch is left to the caller; a failed one is recorded
        here (retried from the client after a serialization failure or deadlock)."""
        by_seq = {self.seq[s.name]: s for s in self.plan.steps
                  if self.seq.get(s.name) in {b["seq"] for b in batch}}

        def on_notice(diag: psycopg.errors.Diagnostic) -> None:
            if diag.message_primary != BATCH_NOTICE or not diag.message_detail:
                return
            data = json.loads(diag.message_detail)
            step = by_seq.get(int(data["seq"]))
            if step is None:
                return
            if data["event"] == "started":
                self._started_at[step.name] = time.monotonic()
                self._running.add(step.name)
                self._emit(StepStarted(self.job_id, step.name))
            else:
                self._batch_done(step, data)

        conn.add_notice_handler(on_notice)
        self._register(conn)
        try:
            try:
                row = conn.execute(query("refresh_batch"), {
                    "job": self.job_id, "attempt": self.attempt, "run_as": self.run_as,
                    "steps": Jsonb(batch)}).fetchone()
            finally:
                conn.remove_notice_handler(on_notice)
                self._unregister()
        except psycopg.Error as exc:
            self._batch_failed(conn, [by_seq[b["seq"]] for b in batch], exc)
            return
        assert row is not None
        outcome: dict[str, Any] = row[0]  # type: ignore[assignment]
        for item in outcome["done"]:  # the same results, should a notice have been missed
            self._batch_done(by_seq[int(item["seq"])], item)
        if outcome["why"] == "raced":  # refreshed elsewhere since the plan: decide again
            self._no_batch.add(by_seq[int(outcome["stopped"])].name)

    def _batch_done(self, step: Step, data: dict[str, Any]) -> None:
        """A step of a batch committed, or stayed skipped: its result and StepFinished (once)."""
        if step.name in self.results:
            return
        if data["outcome"] == StepStatus.SKIPPED.value:  # as _early: recorded with the run's end
            skipped = StepResult(step.name, StepStatus.SKIPPED, step.reason)
            self._unrecorded.append(skipped)
            self.results[step.name] = skipped
            self._finished(step.name, skipped)
            return
        result = self._step_result(step, (data["outcome"], data["took"], data["changed"],
                                          data["reason"]))
        assert result is not None  # a raced step reports no end
        self.results[step.name] = result
        self._running.discard(step.name)
        self._finished(step.name, result)

    def _batch_failed(self, conn: Conn, batch: list[Step], exc: psycopg.Error) -> None:
        """The CALL failed at the first step of ``batch`` without a result: the steps before it
        committed, its own transaction was rolled back (unless it committed just before the
        error); record it as a one-step run would, the rest of the batch is left to the caller."""
        step = next((s for s in batch if s.name not in self.results), None)
        if step is None:
            return
        if step.name not in self._running:
            self._running.add(step.name)
            self._emit(StepStarted(self.job_id, step.name))
        row = None
        if not conn.closed:
            with suppress(psycopg.Error):
                row = conn.execute(query("step_state"), {
                    "job": self.job_id, "seq": self.seq[step.name]}).fetchone()
        if row is not None and row[0] == StepStatus.DONE.value:  # committed before the error
            self._batch_done(step, {"outcome": row[0], "took": row[2], "changed": True,
                                    "reason": row[1]})
            return
        if isinstance(exc, (pgerrors.SerializationFailure, pgerrors.DeadlockDetected)):
            result = self._with_retries(conn, step)  # lost a race: decide again, as usual
        else:
            if _is_request(exc) and not conn.closed:
                self._learn_request(conn)  # a cancel or suspend from another process
            took = time.monotonic() - self._started_at.get(step.name, time.monotonic())
            result = self._interrupted(step, exc, took, conn)
            if self._mode is not StopMode.LOST:
                with suppress(psycopg.Error):
                    self._record_step(conn, result)
        self.results[step.name] = result
        self._running.discard(step.name)
        self._finished(step.name, result)

    def _with_retries(self, conn: Conn, step: Step) -> StepResult:
        self._register(conn)
        started = time.monotonic()
        try:
            for _attempt in range(MAX_RETRIES):
                if self._cancel.is_set():
                    result = self._precheck(step, {}) or self._not_run(step)
                    if self._mode is not StopMode.LOST:
                        self._record_step(conn, result)
                    return result
                try:
                    return self._attempt(conn, step, in_transaction=False)
                except (pgerrors.SerializationFailure, pgerrors.DeadlockDetected):
                    continue  # lost a race with another process: decide again
            raise MvgraphError(f"{step.name} kept being refreshed by other processes; retry")
        except (psycopg.Error, MvgraphError) as exc:
            if isinstance(exc, psycopg.Error) and _is_request(exc) and not conn.closed:
                self._learn_request(conn)  # a cancel or suspend from another process
            result = self._interrupted(step, exc, time.monotonic() - started, conn)
            if self._mode is not StopMode.LOST:
                with suppress(psycopg.Error):
                    self._record_step(conn, result)
            return result
        finally:
            self._unregister()

    def _interrupted(self, step: Step, exc: BaseException, took: float,
                     conn: Conn) -> StepResult:
        """A step that raised: cancelled or not run when the run is stopping, else failed."""
        if not self.foreground and session_lost(exc, conn):  # the worker's connection is
            self.stop(StopMode.LOST)  # gone (a restart: 57P01): requeued once it reconnects
        stopped = self._mode is StopMode.LOST or (self._cancel.is_set() and (
            isinstance(exc, pgerrors.QueryCanceled)
            or (isinstance(exc, psycopg.Error) and exc.sqlstate == JOB_REQUEST)))
        if not stopped:
            return StepResult(step.name, StepStatus.FAILED, step.reason, took,
                              self._explain(conn, step, exc))
        if self._mode is StopMode.CANCEL:
            return StepResult(step.name, StepStatus.CANCELLED, "cancelled while running", took)
        return self._not_run(step)

    def _learn_request(self, conn: Conn) -> None:
        """Read what was asked of the job (after a cancelled or refused statement) and stop
        accordingly; a statement timeout asks nothing and changes nothing."""
        try:
            asked = store.pending_request(conn, self.job_id, self.attempt)
        except psycopg.Error:
            return
        mode = {"cancel": StopMode.CANCEL, "suspend": StopMode.SUSPEND,
                "lost": StopMode.LOST}.get(asked)
        if mode is not None:
            self.stop(mode)

    def _attempt(self, conn: Conn, step: Step, in_transaction: bool) -> StepResult:
        """One try at one step; inside the atomic transaction when ``in_transaction``."""
        reason = self._verdict_holds(step)
        if reason is not None:  # the plan's verdict stands unless the view was refreshed since
            if in_transaction:
                result = self._refresh(conn, step, reason, check=not step.forced)
            else:
                result = self._refresh_in_own_transaction(conn, step, reason)
            if result is not None:
                return result
        with nullcontext() if in_transaction else self._transaction(conn, step):
            key = self._view_key(self.rels[step.name].oid)
            if key is not None:
                conn.execute(query("lock_view"), {"key": key})
            assert self.catalog is not None  # set by _prepare
            facts = gather_facts(conn, self.graph, [step.name], replace(
                self.catalog, rels=self.rels))[step.name]
            action, reason = decide(facts)
            if action is Action.SKIP:
                skipped = StepResult(step.name, StepStatus.SKIPPED, reason)
                if not in_transaction:
                    self._record_step(conn, skipped)
                return skipped
            result = self._refresh(conn, step, reason, check=False)
            assert result is not None  # without the check the call always refreshes
            return result

    def _verdict_holds(self, step: Step) -> str | None:
        """The reason to refresh when the plan's verdict needs no fresh facts: forced, stale by
        its own inputs, or after an upstream step whose content changed in this run."""
        if step.forced or (step.action is Action.REFRESH and not step.propagated):
            return step.reason
        changed = [a for a in step.after if self._changed.get(a)]
        if step.propagated and changed:
            return f"input {changed[0]} was refreshed earlier in this run"
        return None

    @contextmanager
    def _transaction(self, conn: Conn, step: Step) -> Iterator[None]:
        """A step's transaction (READ COMMITTED, compaction kept away); rolled back on error."""
        with conn.pipeline() as pipe:
            self._begin_step(conn, step, pipe)
        try:
            yield
        except BaseException:
            _rollback(conn)
            raise
        conn.execute(query("commit"))

    def _refresh_in_own_transaction(self, conn: Conn, step: Step,
                                    reason: str) -> StepResult | None:
        """BEGIN, lock, refresh_step, COMMIT in one round trip; None if the view was raced."""
        try:
            with conn.pipeline() as pipe:
                self._begin_step(conn, step, pipe)
                cur = conn.execute(query("refresh_step"),
                                   self._step_params(step, reason, check=not step.forced))
                conn.execute(query("commit"))
        except BaseException:
            _rollback(conn)
            raise
        return self._step_result(step, cur.fetchone())

    def _refresh(self, conn: Conn, step: Step, reason: str, check: bool) -> StepResult | None:
        """Refresh and record one view in the current transaction; None if it was raced."""
        row = conn.execute(query("refresh_step"),
                           self._step_params(step, reason, check)).fetchone()
        return self._step_result(step, row)

    def _step_params(self, step: Step, reason: str, check: bool) -> dict[str, Any]:
        rel = self.rels[step.name]
        inputs = [self.rels[i] for i in sorted(self.inputs[step.name]) if i in self.rels]
        stats = [r.oid for r in self.stats_inputs[step.name]]
        given = self._atomic_counters if self.options.atomic else None  # read before BEGIN
        return {
            "oid": rel.oid, "name": str(step.name), "key": self._view_key(rel.oid),
            "concurrently": self._concurrently(rel), "job": self.job_id,
            "seq": self.seq[step.name],
            "reason": "; ".join(filter(None, (reason, self._plain_note(rel)))),
            "inputs": list(dict.fromkeys(o for r in inputs for o in r.change_oids)),
            "stats": stats,
            "counters": None if given is None else [given.get(o, (None, None))[0] for o in stats],
            "filenodes": None if given is None else [given.get(o, (None, None))[1] for o in stats],
            "check": check, "seen": step.seen, "attempt": self.attempt, "run_as": self.run_as}

    def _step_result(self, step: Step, row: tuple[object, ...] | None) -> StepResult | None:
        """The outcome refresh_step returned (its reason as recorded); None if raced."""
        assert row is not None
        if row[0] == RACED:
            return None
        rel = self.rels[step.name]
        self._changed[step.name] = bool(row[2])
        if rel.relkind == "m" and not rel.populated:
            self.rels[step.name] = Relation(rel.name, rel.oid, rel.relkind, True,
                                            rel.concurrent_index)
        return StepResult(step.name, StepStatus.DONE, str(row[3]), float(str(row[1])),
                          concurrently=self._concurrently(rel))

    def _concurrently(self, rel: Relation) -> bool:
        """CONCURRENTLY where the view allows it (populated, a usable unique index), unless
        told never; 'always' too, never a step failing on a view that cannot."""
        if self.options.concurrently == "never" or not rel.populated:
            return False
        return rel.concurrent_index

    def _plain_note(self, rel: Relation) -> str:
        """With CONCURRENTLY asked for ('always'), why this view is refreshed plainly; empty
        when it is refreshed concurrently or was not asked to be."""
        if self.options.concurrently != "always" or self._concurrently(rel):
            return ""
        why = "not populated" if not rel.populated else \
            "no unique index on plain columns without WHERE"
        return f"refreshed plainly, not CONCURRENTLY ({why}): readers wait for it"

    def _explain(self, conn: Conn, step: Step, exc: BaseException) -> str:
        """A one-line error; for lock timeouts, who holds the lock."""
        message = _message(exc)
        if isinstance(exc, pgerrors.LockNotAvailable):
            rel = self.rels[step.name]
            try:
                row = conn.execute(query("lock_holders"), {
                    "key": advisory_key(rel.oid), "oid": rel.oid}).fetchone()
            except psycopg.Error:
                row = None
            holder = describe_holder(conn, row[:3]) if row else "another session"
            message = (f"{step.name} is locked by {holder}; waited {self.options.lock_timeout}. "
                       "Retry later or raise --lock-timeout")
        return message

    def _priorities(self) -> dict[RelationName, float]:
        """Longest remaining path (by past durations) from each step to the end of the plan."""
        names = [str(s.name) for s in self.plan.steps]
        rows = self.conn.execute(query("past_durations"), {"names": names}).fetchall()
        past = {str(r[0]): float(str(r[1])) for r in rows if r[1] is not None}
        default = sum(past.values()) / len(past) if past else 1.0
        weight = {s.name: past.get(str(s.name), default) for s in self.plan.steps}
        after_of: dict[RelationName, list[RelationName]] = {s.name: [] for s in self.plan.steps}
        for s in self.plan.steps:
            for up in s.after:
                after_of[up].append(s.name)
        remaining: dict[RelationName, float] = {}
        for s in reversed(self.plan.steps):
            remaining[s.name] = weight[s.name] + max(
                (remaining[d] for d in after_of[s.name]), default=0.0)
        return remaining

    def _check_cancel(self) -> None:
        if self._cancel.is_set():
            raise _Cancelled()

    def _register(self, conn: Conn) -> None:
        with self._lock:
            self._active[threading.get_ident()] = conn

    def _unregister(self) -> None:
        with self._lock:
            self._active.pop(threading.get_ident(), None)


class _Connections:
    """Connections for parallel steps: the run's own first; another is opened only when every
    open one is busy (so never more than the steps running at once), up to ``limit``. When the
    server refuses one, the run goes on with those it has, after one warning."""

    def __init__(self, first: Conn, dsn: str, limit: int,
                 setup: Callable[[Conn], None]) -> None:
        self._idle = [first]
        self._opened: list[Conn] = []
        self._count, self._limit = 1, limit
        self._dsn, self._setup = dsn, setup
        self._refusal: psycopg.Error | None = None
        self._cond = threading.Condition()

    def __enter__(self) -> _Connections:
        return self

    def __exit__(self, *exc: object) -> None:
        for conn in self._opened:
            conn.close()

    @contextmanager
    def connection(self) -> Iterator[Conn]:
        """A connection of its own for one step."""
        conn = self._take()
        try:
            yield conn
        finally:
            with self._cond:
                self._idle.append(conn)
                self._cond.notify()

    def _take(self) -> Conn:
        with self._cond:
            while not self._idle and self._count >= self._limit:
                self._cond.wait()  # a busy connection comes back when its step ends
            if self._idle:
                return self._idle.pop()
            self._count += 1
        try:
            conn = psycopg.connect(self._dsn, autocommit=True, application_name="mvgraph")
        except psycopg.Error as exc:
            self._refused(exc)
            return self._take()
        try:
            self._setup(conn)
        except psycopg.Error as exc:
            conn.close()
            self._refused(exc)
            return self._take()
        with self._cond:
            self._opened.append(conn)
        return conn

    def _refused(self, exc: psycopg.Error) -> None:
        with self._cond:
            self._count -= 1
            first, self._refusal = self._refusal is None, exc
            self._limit = self._count  # stop growing: go on with the connections open
            count = self._count
        if first:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else _message(exc)
            log.warning("cannot open another connection (%s); refreshing at most %d view(s) at "
                        "once", reason, count)


def plan_width(plan: Plan) -> int:
    """The most refreshing steps that can run at once: the largest set of them none of which
    depends on another (Dilworth: their number less a maximum matching of the "runs before"
    relation). Above ``EXACT_WIDTH_UP_TO`` steps, their number.

    >>> from mvgraph.refresh.behavior import RefreshBehavior
    >>> a, b, c = (RelationName("public", n) for n in "abc")
    >>> plan_width(Plan(RefreshBehavior.DEFAULT, (), (Step(a, Action.REFRESH, ""),
    ...     Step(b, Action.REFRESH, "", after=(a,)), Step(c, Action.REFRESH, "", after=(a,)))))
    2
    """
    steps = [s for s in plan.steps if s.action is Action.REFRESH]
    if len(steps) > EXACT_WIDTH_UP_TO:
        return len(steps)
    index = {s.name: i for i, s in enumerate(plan.steps)}
    below = [0] * len(plan.steps)  # bit j: step j runs before step i (transitively)
    for i, s in enumerate(plan.steps):
        for a in s.after:
            below[i] |= below[index[a]] | (1 << index[a])
    refreshing = [index[s.name] for s in steps]
    later = {i: [j for j in refreshing if below[j] >> i & 1] for i in refreshing}
    match: dict[int, int] = {}  # later step -> the earlier step its chain continues

    def augment(i: int, seen: set[int]) -> bool:
        for j in later[i]:
            if j not in seen:
                seen.add(j)
                if j not in match or augment(match[j], seen):
                    match[j] = i
                    return True
        return False

    return len(steps) - sum(augment(i, set()) for i in refreshing)


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
