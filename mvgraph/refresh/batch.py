"""Batches of steps: one CALL of ``mvgraph.refresh_batch`` per connection, a transaction per
step on the server, progress by NOTICE, and what the CALL's outcome means for each step."""

from __future__ import annotations

import json
import time
from contextlib import suppress
from typing import Any

import psycopg
from psycopg import errors as pgerrors
from psycopg.types.json import Jsonb

from mvgraph.db.queries import query
from mvgraph.model.events import StepStarted
from mvgraph.model.names import RelationName
from mvgraph.model.results import StepResult
from mvgraph.model.status import StepStatus
from mvgraph.refresh.behavior import Action, Step
from mvgraph.refresh.step import StepRunner
from mvgraph.refresh.stops import Conn, StopMode, _is_request

BATCH_NOTICE = "mvgraph step"  # refresh_batch: one NOTICE per step start and end


class BatchRunner(StepRunner):
    """Running steps in batches (a foreground, non-atomic run)."""

    @property
    def _batching(self) -> bool:
        """Steps go to the server in batches: a foreground, non-atomic run (a worker's stop
        modes other than cancel must take effect between steps, which only the client knows)."""
        return self.options.batch and self.foreground and not self.options.atomic

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
