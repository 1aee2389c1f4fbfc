"""What happened to one step of a run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mvgraph.model.names import RelationName
from mvgraph.model.status import StepStatus


@dataclass(frozen=True, slots=True)
class StepResult:
    """What happened to one view."""

    name: RelationName
    status: StepStatus
    reason: str
    duration_s: float = 0.0
    error: str | None = None
    concurrently: bool = False

    @property
    def action(self) -> str:
        """The report's word: refreshed, skipped, failed, blocked, cancelled (or pending for a
        step a suspended or requeued run did not reach)."""
        return self.status.word

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the documented ``--json`` step shape)."""
        out: dict[str, Any] = {"name": str(self.name), "action": self.action,
                               "reason": self.reason, "duration_s": round(self.duration_s, 4)}
        if self.error:
            out["error"] = self.error
        return out
