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

This module keeps ``Executor`` (its public surface, setup and bookkeeping, the serial and
parallel scheduling of the plan); ``step`` runs one step, ``batch`` batches of steps,
``atomic`` an atomic run, ``stops`` the stop modes, ``connections`` the parallel run's pool.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager, nullcontext, suppress
from dataclasses import dataclass
from graphlib import TopologicalSorter
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from mvgraph.db.queries import query
from mvgraph.errors import MvgraphError, StatementTimeout, UnknownRelation, translate
from mvgraph.jobs import store
from mvgraph.model.events import JobFinished, JobStarted
from mvgraph.model.names import RelationName
from mvgraph.model.results import StepResult
from mvgraph.model.status import RunStatus, StepStatus
from mvgraph.refresh.atomic import AtomicRunner, repeatable_read
from mvgraph.refresh.batch import BatchRunner
from mvgraph.refresh.behavior import Action, Plan, Step
from mvgraph.refresh.changes import freshness_inputs, read_state
from mvgraph.refresh.connections import _Connections
from mvgraph.refresh.locks import CONNECTION_CHECK, LockMode, global_lock
from mvgraph.refresh.step import RefreshOptions
from mvgraph.refresh.stops import Conn, StopMode, _message, advisory_key, log

EXACT_WIDTH_UP_TO = 300  # steps; above that the number of refreshing steps bounds the width

__all__ = ["Executor", "RefreshOptions", "RefreshReport", "StepResult", "StopMode",
           "advisory_key", "plan_width", "repeatable_read"]


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


@dataclass
class Executor(BatchRunner, AtomicRunner):
    """Runs the plan of one job against one database."""

    def run(self) -> RefreshReport:
        """Run the plan and return what happened (never raises for a failed step)."""
        if not self.job_id:
            raise MvgraphError("a run needs a job: create it with mvgraph.jobs.store first")
        start = time.monotonic()
        with self._session_settings(self.conn), ExitStack() as held:
            self._held = held  # the global lock, when the run takes it: released at the end
            return self._run(start)

    def _apply_settings(self, conn: Conn, values: tuple[str | None, ...] | None = None,
                        *, previous: bool = True) -> tuple[str | None, ...] | None:
        """Set commit mode, timeouts and application name (``mvgraph job N``) for this
        session, and in lock mode global its idle timeout and client check; returns the
        previous values (``previous`` False: nothing is fetched, for a pipeline)."""
        o = self.options
        new = values or (o.synchronous_commit, o.lock_timeout, o.statement_timeout,
                         f"mvgraph job {self.job_id}", "notice", "read committed")
        cur = conn.execute(query("set_session"), dict(zip(
            ("synchronous_commit", "lock_timeout", "statement_timeout", "application_name",
             "client_min_messages", "default_transaction_isolation"),
            new[:6], strict=True)))
        row = cur.fetchone() if previous else None
        was: tuple[str | None, ...] | None = tuple(str(v) for v in row[:6]) if row else None
        if o.lock_mode is LockMode.GLOBAL and (values is None or len(values) == 8):
            idle, check = (values[6], values[7]) if values else (o.global_lock_idle_timeout,
                                                                 CONNECTION_CHECK)
            cur = conn.execute(query("set_global_lock_session"), {"idle": idle, "check": check})
            row = cur.fetchone() if previous else None
            if was is not None and row is not None:
                was += (str(row[0]), None if row[1] is None else str(row[1]))
        return was

    def _configure(self, conn: Conn) -> None:
        """A pool connection's setup: the run's settings (the pool closes it after the run)."""
        self._apply_settings(conn)

    @contextmanager
    def _session_settings(self, conn: Conn) -> Iterator[None]:
        """The run's commit mode and timeouts on this connection, restored afterwards; with
        ``restore_settings`` False (a worker resets the connection after the job) they are
        set by ``_prepare``, in its round trip, and not restored."""
        if not self.restore_settings:
            yield
            return
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
            self._send_setup()
            raise UnknownRelation(f"{missing[0]} does not exist in the database; reload the graph")
        stats = {oid for oid, (mode, _) in state.modes.items() if mode == "stats"}
        self.stats_inputs = {n: [self.rels[i] for i in sorted(self.inputs[n])
                                 if i in self.rels and self.rels[i].oid in stats] for n in names}
        self._send_setup({"oids": [self.rels[n].oid for n in names],
                          "names": [str(n) for n in names]})

    def _send_setup(self, views: dict[str, list[Any]] | None = None) -> None:
        """The views' state rows (``views``); before them, without restore_settings, the run's
        settings and the caller's ``setup``, all in one round trip."""
        try:
            with self.conn.pipeline() if not self.restore_settings else nullcontext():
                if not self.restore_settings:
                    self._apply_settings(self.conn, previous=False)
                    if self.setup is not None:
                        self.setup(self.conn)
                if views is not None:
                    self.conn.execute(query("ensure_mv_state"), views)
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
                unrecorded = late + [u for u in self._unrecorded if u not in late]
                if unrecorded:  # an empty pipeline would still cost a round trip
                    with self.conn.pipeline():
                        for r in unrecorded:
                            store.record_step(self.conn, self.job_id, self.seq[r.name], r)
            except psycopg.Error as exc:
                raise translate(exc) from exc
            job_status = status.job_status
            assert job_status is not None
            if self.defer_finish:  # the caller closes the job (with its next round trip)
                self.deferred_finish = (job_status, error)
            else:
                store.finish(self.conn, self.job_id, job_status, error, attempt=self.attempt,
                             foreground=self.foreground)
        self._emit(JobFinished(self.job_id, status, time.monotonic() - start))

    # ---- strategies -----------------------------------------------------------------------------
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
