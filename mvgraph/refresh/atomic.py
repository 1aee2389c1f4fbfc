"""An atomic run: every step in one REPEATABLE READ transaction, after the session-level
advisory locks of all its views."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress

import psycopg
from psycopg import errors as pgerrors

from mvgraph.db.queries import query
from mvgraph.errors import MvgraphError
from mvgraph.model.events import StepStarted
from mvgraph.model.names import RelationName
from mvgraph.model.results import StepResult
from mvgraph.model.status import StepStatus
from mvgraph.refresh.step import StepRunner
from mvgraph.refresh.stops import (
    MAX_RETRIES,
    Conn,
    StopMode,
    _Cancelled,
    _is_request,
    _message,
    _rollback,
)
from mvgraph.tracking.triggers import stat_counters


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


class AtomicRunner(StepRunner):
    """Running a plan atomically."""

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
