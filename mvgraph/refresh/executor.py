"""Running a plan: one transaction per view, advisory locks, parallel workers.

Each step is one transaction, sent in one round trip: ``BEGIN``, a lock that keeps compaction
away, ``mvgraph.refresh_step(...)`` (the view's advisory lock, a check that its last refresh is
still the one the plan saw, ``REFRESH MATERIALIZED VIEW [CONCURRENTLY]`` and the record of what
the refresh saw, all server-side: see ``0003_refresh_step.sql``), ``COMMIT``. A view is therefore
either refreshed and recorded, or untouched. When the plan's verdict may be out of date (another
process refreshed the view meanwhile, or an upstream step's content did not change), the step
decides again from fresh facts read under the view's lock.
"""

from __future__ import annotations

import heapq
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, field, replace
from graphlib import TopologicalSorter
from typing import Any

import psycopg
from psycopg import errors as pgerrors
from psycopg.conninfo import make_conninfo

from mvgraph.db.queries import query
from mvgraph.errors import MvgraphError, translate
from mvgraph.graph import MVGraph
from mvgraph.names import RelationName
from mvgraph.refresh.behavior import Action, Plan, Step, decide
from mvgraph.refresh.changes import (
    CatalogState,
    Relation,
    freshness_inputs,
    gather_facts,
    read_state,
    stat_counters,
)

Conn = psycopg.Connection[tuple[object, ...]]
LOCK_NAMESPACE = 0x6D76  # "mv": high 32 bits of every per-view advisory lock key
MAX_RETRIES = 5


@dataclass(frozen=True, slots=True)
class RefreshOptions:
    """How to run a plan."""

    parallel: int = 1
    atomic: bool = False
    concurrently: str = "auto"  # auto | always | never
    lock_timeout: str = "10s"
    statement_timeout: str = "0"
    # Refreshes rebuild derived data: committing them asynchronously cannot break consistency
    # (the view and mvgraph's record of it commit together); a crash may only lose the latest.
    synchronous_commit: str = "off"


@dataclass(frozen=True, slots=True)
class StepResult:
    """What happened to one view."""

    name: RelationName
    action: str  # refreshed | skipped | failed | blocked | cancelled
    reason: str
    duration_s: float = 0.0
    error: str | None = None
    concurrently: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the documented ``--json`` step shape)."""
        out: dict[str, Any] = {"name": str(self.name), "action": self.action,
                               "reason": self.reason, "duration_s": round(self.duration_s, 4)}
        if self.error:
            out["error"] = self.error
        return out


@dataclass(frozen=True, slots=True)
class RefreshReport:
    """The outcome of a run: ``status`` is ok, failed or cancelled."""

    status: str
    steps: tuple[StepResult, ...]
    job_id: int | None
    elapsed_s: float
    plan: Plan

    @property
    def refreshed(self) -> list[RelationName]:
        """Views that were refreshed."""
        return [s.name for s in self.steps if s.action == "refreshed"]

    @property
    def skipped(self) -> list[RelationName]:
        """Views that were skipped as unchanged."""
        return [s.name for s in self.steps if s.action == "skipped"]

    def to_dict(self) -> dict[str, Any]:
        """The documented ``--json`` shape."""
        return {"status": self.status, "job_id": self.job_id,
                "elapsed_s": round(self.elapsed_s, 4),
                "steps": [s.to_dict() for s in self.steps]}


Listener = Callable[[str, RelationName, StepResult | None], None]


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
    """Runs one plan against one database."""

    conn: Conn  # control connection (autocommit); also runs the steps when parallel == 1
    graph: MVGraph
    plan: Plan
    options: RefreshOptions = field(default_factory=RefreshOptions)
    listener: Listener | None = None
    job_kind: str = "refresh"
    catalog: CatalogState | None = None  # read by planning; read again when not given

    def __post_init__(self) -> None:
        self._cancel = threading.Event()
        self._active: dict[int, Conn] = {}
        self._lock = threading.Lock()
        self.job_id: int | None = None
        self.rels: dict[RelationName, Relation] = {}
        self.inputs: dict[RelationName, set[RelationName]] = {}
        self.stats_inputs: dict[RelationName, list[Relation]] = {}
        self.seq = {s.name: i + 1 for i, s in enumerate(self.plan.steps)}
        self.results: dict[RelationName, StepResult] = {}
        self._atomic_counters: dict[int, tuple[int, int]] = {}
        self._unrecorded: list[StepResult] = []  # skipped without a transaction; recorded last
        self._changed: dict[RelationName, bool] = {}  # refreshed views: did their content change

    # ---- public ---------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Cancel running statements at once; steps not started are cancelled."""
        self._cancel.set()
        with self._lock:
            for c in list(self._active.values()):
                with suppress(psycopg.Error):
                    c.cancel_safe()

    def run(self) -> RefreshReport:
        """Run the plan and return what happened (never raises for a failed step)."""
        start = time.monotonic()
        with self._session_settings(self.conn):
            return self._run(start)

    def _apply_settings(self, conn: Conn, values: tuple[str, str, str] | None = None
                        ) -> tuple[str, str, str] | None:
        """Set commit mode and timeouts for this session; returns the previous values."""
        o = self.options
        new = values or (o.synchronous_commit, o.lock_timeout, o.statement_timeout)
        row = conn.execute(query("set_session"), dict(zip(
            ("synchronous_commit", "lock_timeout", "statement_timeout"), new,
            strict=True))).fetchone()
        return (str(row[0]), str(row[1]), str(row[2])) if row else None

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

    def _run(self, start: float) -> RefreshReport:
        self._prepare()
        try:
            if self.options.atomic:
                self._run_atomic()
            elif self.options.parallel > 1:
                self._run_parallel()
            else:
                self._run_serial()
        except KeyboardInterrupt:
            self.cancel()
            if self.options.atomic:
                self.results.clear()  # the one transaction was rolled back
        except BaseException as exc:  # an mvgraph bug or a lost connection: close the job
            done = tuple(self.results.get(s.name) or StepResult(
                s.name, "cancelled", f"not run: {_message(exc)}") for s in self.plan.steps)
            with suppress(Exception):
                self._finish("failed", done)
            raise
        reason = "run cancelled" if self._cancel.is_set() else "not run"
        ordered = tuple(self.results.get(s.name) or StepResult(s.name, "cancelled", reason)
                        for s in self.plan.steps)
        status = ("cancelled" if self._cancel.is_set() else
                  "failed" if any(r.action in ("failed", "blocked") for r in ordered) else
                  "cancelled" if any(r.action == "cancelled" for r in ordered) else "ok")
        self._finish(status, ordered)
        return RefreshReport(status, ordered, self.job_id, time.monotonic() - start, self.plan)

    # ---- setup and bookkeeping ------------------------------------------------------------------
    def _prepare(self) -> None:
        names = [s.name for s in self.plan.steps]
        self.inputs = {n: freshness_inputs(self.graph, n) for n in names}
        state = self.catalog or read_state(self.conn, self.graph, names)
        self.catalog = state
        self.rels = dict(state.rels)  # updated as views get populated
        missing = [n for n in names if n not in self.rels]
        if missing:
            raise MvgraphError(f"{missing[0]} does not exist in the database; reload the graph")
        stats = {oid for oid, (mode, _) in state.modes.items() if mode == "stats"}
        self.stats_inputs = {n: [self.rels[i] for i in sorted(self.inputs[n])
                                 if i in self.rels and self.rels[i].oid in stats] for n in names}
        oids = [self.rels[n].oid for n in names]
        opts = {"behavior": self.plan.behavior.value, "targets": [str(t) for t in
                self.plan.targets], "parallel": self.options.parallel,
                "atomic": self.options.atomic}
        try:
            self.conn.execute(query("ensure_mv_state"), {"oids": oids,
                                                         "names": [str(n) for n in names]})
            row = self.conn.execute(query("create_job"), {
                "kind": self.job_kind, "statement": self.plan.statement(),
                "options": json.dumps(opts), "host": socket.gethostname()}).fetchone()
            assert row is not None
            self.job_id = int(str(row[0]))
            self.conn.execute(query("create_steps"), {
                "job": self.job_id, "seqs": [self.seq[n] for n in names],
                "names": [str(n) for n in names], "mvs": oids,
                "planned": [s.action.value for s in self.plan.steps],
                "reasons": [s.reason for s in self.plan.steps]})
        except psycopg.Error as exc:
            raise translate(exc) from exc

    def _finish(self, status: str, results: tuple[StepResult, ...]) -> None:
        error = next((f"{r.name}: {r.error}" for r in results if r.error), None)
        try:
            late = [r for r in results  # steps not recorded by a worker
                    if self.options.atomic or r.action in ("blocked", "cancelled")]
            with self.conn.pipeline():
                for r in late + [u for u in self._unrecorded if u not in late]:
                    self._record_step(self.conn, r)
            self.conn.execute(query("finish_job"), {"status": "done" if status == "ok" else
                                                    status, "error": error, "job": self.job_id})
            self.conn.execute(query("purge_jobs"))
            self._compact()
        except psycopg.Error as exc:
            raise translate(exc) from exc

    def _compact(self) -> None:
        """Drop change rows every reader has seen, when no refresh is running anywhere."""
        try:
            with repeatable_read(self.conn):
                self.conn.execute(query("compaction_lock"))
                self.conn.execute(query("forget_dropped_views"))
                self.conn.execute(query("compact_changes"))
        except pgerrors.LockNotAvailable:
            pass  # refreshes are running; a later run compacts

    def _record_step(self, conn: Conn, r: StepResult) -> None:
        status = {"refreshed": "done", "skipped": "skipped"}.get(r.action, r.action)
        conn.execute(query("step_finished"), {
            "status": status, "reason": r.reason, "duration": r.duration_s, "error": r.error,
            "concurrent": r.concurrently, "job": self.job_id, "seq": self.seq[r.name]})

    def _emit(self, event: str, name: RelationName, result: StepResult | None = None) -> None:
        if self.listener is not None:
            self.listener(event, name, result)

    # ---- strategies -----------------------------------------------------------------------------
    def _run_serial(self) -> None:
        for step in self.plan.steps:
            self.results[step.name] = self._guarded(self.conn, step, self.results)

    def _run_parallel(self) -> None:
        from psycopg_pool import ConnectionPool  # only parallel runs pay for its import

        results = self.results
        priority = self._priorities()
        sorter = TopologicalSorter({s.name: set(s.after) for s in self.plan.steps})
        sorter.prepare()
        steps = {s.name: s for s in self.plan.steps}
        ready: list[tuple[float, str, RelationName]] = []
        running: dict[Future[StepResult], RelationName] = {}
        info = self.conn.info
        dsn = make_conninfo(info.dsn, password=info.password) if info.password else info.dsn
        with ConnectionPool(dsn, min_size=self.options.parallel,
                            max_size=self.options.parallel, open=True,
                            configure=self._configure,
                            kwargs={"autocommit": True, "application_name": "mvgraph"}) as pool, \
                ThreadPoolExecutor(self.options.parallel) as workers:

            def task(step: Step) -> StepResult:
                try:
                    with pool.connection() as c:
                        result = self._guarded(c, step, results)
                except Exception as exc:  # e.g. no connection to be had: the step fails
                    result = StepResult(step.name, "failed", step.reason, error=_message(exc))
                    self._unrecorded.append(result)
                results[step.name] = result
                return result

            while sorter.is_active():
                for name in sorter.get_ready():
                    heapq.heappush(ready, (-priority[name], str(name), name))
                while ready and len(running) < self.options.parallel:
                    _, _, name = heapq.heappop(ready)
                    early = self._precheck(steps[name], results)
                    if early is not None:
                        results[name] = early
                        sorter.done(name)
                        self._emit("finish", name, early)
                        continue
                    running[workers.submit(task, steps[name])] = name
                if not running:
                    continue
                try:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                except KeyboardInterrupt:
                    self.cancel()  # before the pools' exits wait for the workers
                    raise
                for fut in done:
                    name = running.pop(fut)
                    results[name] = fut.result()
                    sorter.done(name)

    def _run_atomic(self) -> None:
        stats = {r.oid for rs in self.stats_inputs.values() for r in rs}
        for _attempt in range(MAX_RETRIES):
            self._atomic_counters = stat_counters(self.conn, stats) if stats else {}
            results = self.results
            results.clear()
            self._changed.clear()
            try:
                self._register(self.conn)
                with repeatable_read(self.conn):
                    self.conn.execute(query("keep_compaction_away"))
                    for step in self.plan.steps:
                        self._check_cancel()
                        self._emit("start", step.name)
                        result = self._attempt(self.conn, step, in_transaction=True)
                        results[step.name] = result
                        self._emit("finish", step.name, result)
                return
            except pgerrors.SerializationFailure:
                continue
            except (psycopg.Error, _Cancelled) as exc:
                self.results = self._atomic_failure(dict(results), exc)
                return
            finally:
                self._unregister()
        self.results = self._atomic_failure({}, MvgraphError("too many concurrent refreshes"))

    def _atomic_failure(self, done: dict[RelationName, StepResult],
                        exc: BaseException) -> dict[RelationName, StepResult]:
        cancelled = self._cancel.is_set() or isinstance(exc, _Cancelled)
        failed_at = next((s.name for s in self.plan.steps if s.name not in done), None)
        message = _message(exc)
        out = {}
        for s in self.plan.steps:
            if cancelled:
                out[s.name] = StepResult(s.name, "cancelled", "run cancelled; rolled back")
            elif s.name == failed_at:
                out[s.name] = StepResult(s.name, "failed", s.reason, error=message)
            else:
                out[s.name] = StepResult(s.name, "cancelled",
                                         f"rolled back: the atomic run failed at {failed_at}")
        return out

    # ---- one step -------------------------------------------------------------------------
    def _precheck(self, step: Step,
                  results: dict[RelationName, StepResult]) -> StepResult | None:
        if self._cancel.is_set():
            return StepResult(step.name, "cancelled", "run cancelled before this step")
        for up in step.after:
            r = results.get(up)
            if r is not None and r.action in ("failed", "blocked", "cancelled"):
                cause = up if r.action == "failed" else r.reason.removeprefix("blocked by ")
                return StepResult(step.name, "blocked", f"blocked by {cause}")
        return None

    def _still_unchanged(self, step: Step) -> bool:
        """A step the plan skips, with no upstream step changed in this run, is skipped without
        a transaction: its facts were read moments ago by the plan. A write committed since then
        is not lost; it counts for the next run, as if it had come a moment later."""
        return (step.action is Action.SKIP and not step.forced
                and not any(self._changed.get(a) for a in step.after))

    def _guarded(self, conn: Conn, step: Step,
                 results: dict[RelationName, StepResult]) -> StepResult:
        early = self._precheck(step, results)
        if early is None and self._still_unchanged(step):
            early = StepResult(step.name, "skipped", step.reason)
            self._unrecorded.append(early)
        if early is not None:
            self._emit("finish", step.name, early)
            return early
        self._emit("start", step.name)
        result = self._with_retries(conn, step)
        self._emit("finish", step.name, result)
        return result

    def _with_retries(self, conn: Conn, step: Step) -> StepResult:
        self._register(conn)
        started = time.monotonic()
        try:
            for _attempt in range(MAX_RETRIES):
                if self._cancel.is_set():
                    result = StepResult(step.name, "cancelled", "run cancelled before this step")
                    self._record_step(conn, result)
                    return result
                try:
                    return self._attempt(conn, step, in_transaction=False)
                except (pgerrors.SerializationFailure, pgerrors.DeadlockDetected):
                    continue  # lost a race with another process: decide again
            raise MvgraphError(f"{step.name} kept being refreshed by other processes; retry")
        except (psycopg.Error, MvgraphError) as exc:
            cancelled = self._cancel.is_set() and isinstance(exc, pgerrors.QueryCanceled)
            result = StepResult(
                step.name, "cancelled" if cancelled else "failed",
                "cancelled while running" if cancelled else step.reason,
                time.monotonic() - started, None if cancelled else self._explain(conn, step, exc))
            with suppress(psycopg.Error):
                self._record_step(conn, result)
            return result
        finally:
            self._unregister()

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
        with nullcontext() if in_transaction else self._transaction(conn):
            conn.execute(query("lock_view"), {"key": advisory_key(self.rels[step.name].oid)})
            assert self.catalog is not None  # set by _prepare
            facts = gather_facts(conn, self.graph, [step.name], replace(
                self.catalog, rels=self.rels))[step.name]
            action, reason = decide(facts)
            if action is Action.SKIP:
                skipped = StepResult(step.name, "skipped", reason)
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
    def _transaction(self, conn: Conn) -> Iterator[None]:
        """A step's transaction (READ COMMITTED, compaction kept away); rolled back on error."""
        with conn.pipeline():
            _begin_step(conn)
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
                _begin_step(conn)
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
            "oid": rel.oid, "name": str(step.name), "key": advisory_key(rel.oid),
            "concurrently": self._concurrently(rel), "job": self.job_id,
            "seq": self.seq[step.name], "reason": reason,
            "inputs": list(dict.fromkeys(o for r in inputs for o in r.change_oids)),
            "stats": stats,
            "counters": None if given is None else [given.get(o, (None, None))[0] for o in stats],
            "filenodes": None if given is None else [given.get(o, (None, None))[1] for o in stats],
            "check": check, "seen": step.seen}

    def _step_result(self, step: Step, row: tuple[object, ...] | None) -> StepResult | None:
        """The outcome refresh_step returned (its reason as recorded); None if raced."""
        assert row is not None
        if row[0] == "raced":
            return None
        rel = self.rels[step.name]
        self._changed[step.name] = bool(row[2])
        if rel.relkind == "m" and not rel.populated:
            self.rels[step.name] = Relation(rel.name, rel.oid, rel.relkind, True,
                                            rel.concurrent_index)
        return StepResult(step.name, "refreshed", str(row[3]), float(str(row[1])),
                          concurrently=self._concurrently(rel))

    def _concurrently(self, rel: Relation) -> bool:
        mode = self.options.concurrently
        if mode == "never" or not rel.populated:
            return False
        if mode == "always":
            return True
        return rel.concurrent_index

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
            holder = (f"pid {row[0]} ({row[1]}, user {row[2]})" if row else "another session")
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


def _begin_step(conn: Conn) -> None:
    """Open a step's transaction: READ COMMITTED, compaction kept away until COMMIT."""
    conn.execute(query("begin_step"))
    conn.execute(query("keep_compaction_away"))


def _rollback(conn: Conn) -> None:
    """End a failed or interrupted transaction, if the connection still has one."""
    if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        with suppress(psycopg.Error):
            conn.execute(query("rollback"))


def _message(exc: BaseException) -> str:
    if isinstance(exc, psycopg.Error):
        return str(translate(exc))
    return str(exc) or type(exc).__name__
