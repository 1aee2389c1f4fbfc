"""One step of a run: its transaction, its retries, its outcome.

Each step is one transaction, sent in one round trip: ``BEGIN``, a lock that keeps compaction
away, ``mvgraph.refresh_step(...)`` (the view's advisory lock, a check that its last refresh is
still the one the plan saw, ``REFRESH MATERIALIZED VIEW [CONCURRENTLY]`` and the record of what
the refresh saw, all server-side: see ``0003_refresh_step.sql``), ``COMMIT``. When the plan's
verdict may be out of date, the step decides again from fresh facts read under the view's lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext, suppress
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg
from psycopg import errors as pgerrors

from mvgraph.catalog import Relation
from mvgraph.db.outage import session_lost
from mvgraph.db.queries import query
from mvgraph.errors import MvgraphError
from mvgraph.graph import MVGraph
from mvgraph.jobs import store
from mvgraph.model.events import JobFinished, JobStarted, Listener, StepFinished, StepStarted
from mvgraph.model.names import RelationName
from mvgraph.model.results import StepResult
from mvgraph.model.status import JobStatus, StepStatus
from mvgraph.refresh.behavior import Action, Plan, Step, decide
from mvgraph.refresh.changes import CatalogState, gather_facts
from mvgraph.refresh.locks import LockMode, describe_holder
from mvgraph.refresh.stops import (
    JOB_REQUEST,
    MAX_RETRIES,
    RACED,
    STOPPED,
    Conn,
    StopMode,
    Stoppable,
    _is_request,
    _message,
    _rollback,
    advisory_key,
)


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


@dataclass
class StepRunner(Stoppable):
    """The state of a run and the running of one step (the base of ``Executor``)."""

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
    restore_settings: bool = True  # False: the session's settings stay the run's (a worker)
    # with restore_settings False: statements sent in the round trip of the run's settings
    setup: Callable[[Conn], None] | None = None
    defer_finish: bool = False  # True: the job is not closed; deferred_finish says how to
    deferred_finish: tuple[JobStatus, str | None] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._init_stops()
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

    def _view_key(self, oid: int) -> int | None:
        """The advisory key a step locks; None in lock mode off (no lock)."""
        return None if self.options.lock_mode is LockMode.OFF else advisory_key(oid)

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

    def _record_step(self, conn: Conn, r: StepResult) -> None:
        store.record_step(conn, self.job_id, self.seq[r.name], r)

    def _emit(self, event: JobStarted | StepStarted | StepFinished | JobFinished) -> None:
        if self.listener is not None:
            self.listener(event)

    def _finished(self, name: RelationName, result: StepResult) -> None:
        self._emit(StepFinished(self.job_id, name, result))

    # ---- one step -------------------------------------------------------------------------
    def _begin_step(self, conn: Conn, step: Step) -> None:
        """Open the step's transaction (READ COMMITTED) and mark the step running in it, with
        the session named for the step until COMMIT (others see it running by that name, and
        whom to cancel) and compaction kept away until COMMIT: no commit of its own."""
        conn.execute(query("begin_step"))
        store.step_started(conn, self.job_id, self.seq[step.name])

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
        with conn.pipeline():
            self._begin_step(conn, step)
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
            with conn.pipeline():
                self._begin_step(conn, step)
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
