"""Status vocabularies, each the one-to-one image of a CHECK constraint in the ``mvgraph``
schema (``tests/integration/test_status_enums.py`` compares them with the catalog).

A step's outcome has one vocabulary, :class:`StepStatus`, used by the runner, the step rows
and ``mvgraph.refresh_step``. The ``--json`` output keeps its historical word for a refreshed
step, ``refreshed`` (``StepStatus.DONE.word``); every other status is its own word.
"""

from __future__ import annotations

from enum import StrEnum


class Action(StrEnum):
    """What a plan step will do (``job_step.planned``)."""

    REFRESH = "refresh"
    SKIP = "skip"
    RUN = "run"  # the one step of a background SQL statement (a ``sql`` job)


class JobStatus(StrEnum):
    """``job.status``: where a job is in its life."""

    QUEUED = "queued"  # waiting for a worker (background, or resumed)
    RUNNING = "running"  # owned by a live session (advisory lock) or a worker (lease)
    SUSPENDED = "suspended"  # stopped after a step; ``resume`` queues it again
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """True for the statuses a job never leaves."""
        return self in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)


class JobKind(StrEnum):
    """``job.kind``: what a job runs: a refresh plan, a SQL statement, or the population of a
    materialized view created in the background."""

    REFRESH = "refresh"
    SQL = "sql"
    CREATE = "create"
    REBUILD = "rebuild"  # a table's structure or a materialized view's query, online


class JobRequest(StrEnum):
    """``job.request``: what someone asked a running job to do at its next step."""

    CANCEL = "cancel"
    SUSPEND = "suspend"
    RESUME = "resume"  # a rebuild paused after set_readonly (binlog_mode) goes on


class StepStatus(StrEnum):
    """``job_step.status``: one step's state and, once finished, its outcome."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"  # refreshed
    SKIPPED = "skipped"
    FAILED = "failed"
    BLOCKED = "blocked"  # an upstream step failed, was blocked or cancelled
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """True once the step will never run again in its job."""
        return self not in (StepStatus.PENDING, StepStatus.RUNNING)

    @property
    def word(self) -> str:
        """The word reports and ``--json`` use (``refreshed`` for DONE).

        >>> StepStatus.DONE.word, StepStatus.SKIPPED.word
        ('refreshed', 'skipped')
        """
        return "refreshed" if self is StepStatus.DONE else self.value


class RunStatus(StrEnum):
    """How one run of a plan ended (``RefreshReport.status``; ``ok`` is the job's ``done``)."""

    OK = "ok"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SUSPENDED = "suspended"  # stopped after a step on request; the job waits for resume
    QUEUED = "queued"  # handed back to the queue (a worker shutting down)
    LOST = "lost"  # the job was taken over elsewhere (lease expired); its row is not touched

    @property
    def job_status(self) -> JobStatus | None:
        """The job status a run ending this way records (None: leave the row alone)."""
        return {RunStatus.OK: JobStatus.DONE, RunStatus.FAILED: JobStatus.FAILED,
                RunStatus.CANCELLED: JobStatus.CANCELLED,
                RunStatus.SUSPENDED: JobStatus.SUSPENDED,
                RunStatus.QUEUED: JobStatus.QUEUED}.get(self)


class ScheduleKind(StrEnum):
    """``schedule.kind``: how a schedule's slots are found."""

    INTERVAL = "interval"  # start + k * every
    CRON = "cron"  # a cron expression in the schedule's time zone
    LAG = "lag"  # a freshness target: no clock


class Overlap(StrEnum):
    """``schedule.overlap``: a slot falling due while the previous run still runs."""

    SKIP = "skip"  # recorded as skipped
    QUEUE = "queue"  # at most one waits


class LastRun(StrEnum):
    """``schedule.last_status``: how a schedule's last run ended (a finished job status)."""

    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class SlotStatus(StrEnum):
    """``schedule_slot.status``: what became of one slot."""

    FIRED = "fired"  # a job was submitted
    SKIPPED = "skipped"  # the previous run still ran, or coalesced away
    MISSED = "missed"  # nobody ran it in time (beyond the grace period)


#: The CHECK constraint each enum mirrors: (table, column) -> enum.
CHECKED: dict[tuple[str, str], type[StrEnum]] = {
    ("job", "status"): JobStatus,
    ("job", "kind"): JobKind,
    ("job", "request"): JobRequest,
    ("job_step", "status"): StepStatus,
    ("job_step", "planned"): Action,
    ("schedule", "kind"): ScheduleKind,
    ("schedule", "overlap"): Overlap,
    ("schedule", "last_status"): LastRun,
    ("schedule_slot", "status"): SlotStatus,
}
