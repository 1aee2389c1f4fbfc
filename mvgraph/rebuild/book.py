"""A rebuild's bookkeeping: its steps (Hologres' names), their progress, and what was asked of
it. Written on a connection of its own (the submitter's login), so that progress shows while
the rebuild's own connection holds a long transaction."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from mvgraph.db.queries import query
from mvgraph.jobs import store
from mvgraph.model.status import Action, StepStatus

Conn = psycopg.Connection[tuple[object, ...]]

TABLE_STEPS = ("prepare", "create_tmp_table", "get_src_table_snapshot", "insert",
               "set_readonly", "check_snapshot", "re-insert", "check_additional_child_table",
               "create_additional_child_table", "insert_additional_child_table", "swap",
               "cleanup")
VIEW_STEPS = ("prepare", "create_tmp_table", "insert", "swap", "cleanup")
# The steps that run in the one transaction that blocks writers: after a failure or a lost
# session they run again together.
WINDOW = ("set_readonly", "check_snapshot", "re-insert", "check_additional_child_table",
          "create_additional_child_table", "insert_additional_child_table", "swap")


@dataclass
class Step:
    """One step row."""

    seq: int
    name: str
    status: StepStatus
    state: dict[str, Any]
    started: float = 0.0


class Book:
    """Step rows of one rebuild job, written on ``conn`` (autocommit)."""

    def __init__(self, conn: Conn, job: int, names: tuple[str, ...],
                 worker_pid: int | None = None) -> None:
        self.conn = conn
        self.job = job
        self.worker_pid = worker_pid
        self.steps: dict[str, Step] = {}
        rows = conn.execute(query("rebuild_steps"), {"job": job}).fetchall()
        if not rows:
            conn.execute(query("create_steps"), {
                "job": job, "seqs": list(range(1, len(names) + 1)), "names": list(names),
                "mvs": [None] * len(names), "planned": [Action.RUN.value] * len(names),
                "reasons": ["rebuild"] * len(names)})
            rows = conn.execute(query("rebuild_steps"), {"job": job}).fetchall()
        for r in rows:
            state = r[6] if isinstance(r[6], dict) else {}
            self.steps[str(r[1])] = Step(int(str(r[0])), str(r[1]), StepStatus(str(r[2])),
                                         state)

    def done(self, name: str) -> bool:
        return self.steps[name].status in (StepStatus.DONE, StepStatus.SKIPPED)

    def redo(self, names: tuple[str, ...]) -> None:
        """Steps whose work was rolled back (the write-block window) run again."""
        for name in names:
            step = self.steps.get(name)
            if step is not None and step.status is not StepStatus.PENDING:
                self.conn.execute(query("step_pending"), {"job": self.job, "seq": step.seq})
                step.status = StepStatus.PENDING

    def running(self, name: str) -> Step:
        step = self.steps[name]
        store.step_running(self.conn, self.job, step.seq)
        if self.worker_pid is not None:  # the backend doing the work: what a cancel interrupts
            self.conn.execute(query("step_backend"), {"job": self.job, "seq": step.seq,
                                                      "pid": self.worker_pid})
        step.status = StepStatus.RUNNING
        step.started = time.monotonic()
        return step

    def progress(self, name: str, done: int | None = None, total: int | None = None,
                 message: str | None = None, state: dict[str, Any] | None = None,
                 conn: Conn | None = None) -> None:
        """Progress of a step; on ``conn`` when it must commit with the work it describes."""
        step = self.steps[name]
        if state is not None:
            step.state = state
        (conn or self.conn).execute(query("step_progress"), {
            "job": self.job, "seq": step.seq, "done": done, "total": total,
            "message": message, "state": None if state is None else json.dumps(state)})

    def finished(self, name: str, status: StepStatus = StepStatus.DONE,
                 message: str | None = None, error: str | None = None,
                 conn: Conn | None = None) -> None:
        step = self.steps[name]
        took = time.monotonic() - step.started if step.started else 0.0
        target = conn or self.conn
        if message is not None:
            self.progress(name, message=message, conn=target)
        target.execute(query("step_finished"), {
            "status": status.value, "reason": "rebuild", "duration": took, "error": error,
            "concurrent": False, "job": self.job, "seq": step.seq})
        step.status = status

    def skip(self, name: str, why: str) -> None:
        if name in self.steps and not self.done(name):
            self.finished(name, StepStatus.SKIPPED, message=why)

    def fail_running(self, error: str, status: StepStatus = StepStatus.FAILED) -> None:
        """The running step (if any) ends with ``error``; pending steps are cancelled."""
        for step in self.steps.values():
            if step.status is StepStatus.RUNNING:
                self.finished(step.name, status, error=error)
        self.conn.execute(query("cancel_steps"), {"job": self.job, "why": "not reached"})

    def request(self) -> str:
        """What was asked of the job: '', 'cancel', 'suspend', 'resume' or 'lost'."""
        return store.pending_request(self.conn, self.job, None)

    def pause(self, on: bool) -> None:
        self.conn.execute(query("rebuild_pause"), {"job": self.job, "on": on})
