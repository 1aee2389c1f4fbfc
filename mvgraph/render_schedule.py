"""Rendering schedules and their history for people (``mvgraph schedule list / history``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from rich.table import Table

from mvgraph.render import escape

if TYPE_CHECKING:
    from mvgraph.scheduler.store import ScheduleInfo, SlotRecord


def _t(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") + "Z" if value else "-"


def schedules_table(found: list[ScheduleInfo]) -> Table:
    """Name, behaviour, clock, next run (from the clock), state, last run."""
    from mvgraph.scheduler.service import describe_clock

    now = datetime.now(UTC)
    t = Table(title=f"{len(found)} schedule{'' if len(found) == 1 else 's'}",
              title_justify="left")
    from mvgraph.render_refresh import name_column

    t.add_column("schedule", **name_column(s.name for s in found))
    for col in ("behaviour", "clock", "next run", "state", "last run"):
        t.add_column(col, overflow="fold")
    for s in found:
        state = ("[red]view dropped[/]" if not s.view_exists else "[red]broken[/]"
                 if s.is_broken else "[yellow]paused[/]" if not s.enabled else "[green]on[/]")
        nxt = s.next_slot(now)
        last = f"{s.last_status.value} {_t(s.last_end)}" if s.last_status else "-"
        t.add_row(escape(s.name), s.behavior.value, escape(describe_clock(s)),
                  _t(nxt) if nxt else ("daemon (lag)" if s.enabled else "-"), state,
                  escape(last))
    return t


def history_table(found: list[SlotRecord]) -> Table:
    """One row per slot: slot, status, job, job status, start, end."""
    t = Table(title=f"{len(found)} firing{'' if len(found) == 1 else 's'}",
              title_justify="left")
    for col in ("slot", "status", "job", "job status", "start", "end"):
        t.add_column(col)
    for r in found:
        status = r.status.value + (" (run-now)" if r.manual else "")
        t.add_row(_t(r.slot), status, str(r.job_id or "-"), r.job_status or "-",
                  _t(r.started_at), _t(r.finished_at))
    return t
