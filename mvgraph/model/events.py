"""Progress events of a run, one class per event (APScheduler 4's shape). The runner emits
them to a listener: the CLI's live display, ``--json`` consumers, the worker's log."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mvgraph.model.names import RelationName
from mvgraph.model.results import StepResult
from mvgraph.model.status import RunStatus


@dataclass(frozen=True, slots=True)
class JobStarted:
    """A job's plan starts running: ``total`` steps (those of this run)."""

    job_id: int
    total: int


@dataclass(frozen=True, slots=True)
class StepStarted:
    """A step begins its transaction."""

    job_id: int
    name: RelationName


@dataclass(frozen=True, slots=True)
class StepFinished:
    """A step has its outcome (refreshed, skipped, failed, blocked, cancelled, pending)."""

    job_id: int
    name: RelationName
    result: StepResult


@dataclass(frozen=True, slots=True)
class JobFinished:
    """The run ended; the job row records ``status`` (unless it is ``lost``)."""

    job_id: int
    status: RunStatus
    elapsed_s: float


Event = JobStarted | StepStarted | StepFinished | JobFinished
Listener = Callable[[Event], None]
