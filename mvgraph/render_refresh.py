"""Rendering plans, reports and status for people (the CLI's refresh output).

Imports only rich's table; the progress display (``LiveProgress``) imports rich.progress when
made, and the refresh modules are needed for types only (``plan`` loads no executor).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from rich.table import Table

from mvgraph.refresh.behavior import Action
from mvgraph.render import escape

if TYPE_CHECKING:
    from rich.console import Console

    from mvgraph.jobs.store import JobInfo
    from mvgraph.model.events import Event
    from mvgraph.refresh.behavior import Plan
    from mvgraph.refresh.executor import RefreshReport
    from mvgraph.refresh.service import StatusReport

ACTION_STYLE = {"refreshed": "green", "skipped": "dim", "failed": "bold red",
                "blocked": "red", "cancelled": "yellow", "pending": "cyan"}


def plan_table(p: Plan) -> Table:
    """A plan as a table: order, view, verdict, reason."""
    t = Table(title=escape(p.header()), title_justify="left")
    t.add_column("#", justify="right")
    t.add_column("view")
    t.add_column("action")
    t.add_column("reason")
    for i, s in enumerate(p.steps, 1):
        style = "green" if s.action is Action.REFRESH else "dim"
        t.add_row(str(i), escape(str(s.name)), f"[{style}]{s.action.value}[/]", escape(s.reason))
    return t


def report_table(r: RefreshReport) -> Table:
    """A finished run as a table."""
    t = Table(title=f"job {r.job_id}: {r.status} in {r.elapsed_s:.2f}s", title_justify="left")
    t.add_column("view")
    t.add_column("action")
    t.add_column("seconds", justify="right")
    t.add_column("reason / error")
    for s in r.steps:
        style = ACTION_STYLE.get(s.action, "default")
        mode = " (concurrently)" if s.concurrently else ""
        detail = s.reason + (f" — {s.error}" if s.error else "")
        t.add_row(escape(str(s.name)), f"[{style}]{s.action}{mode}[/]", f"{s.duration_s:.3f}",
                  escape(detail))
    return t


JOB_STYLE = {"queued": "cyan", "running": "bold", "suspended": "yellow", "done": "green",
             "failed": "bold red", "cancelled": "yellow"}


def jobs_table(found: list[JobInfo]) -> Table:
    """Jobs as a table: id, status, progress m/n, owner, submitted, statement, error."""
    t = Table(title=f"{len(found)} job{'' if len(found) == 1 else 's'}", title_justify="left")
    for col in ("id", "status", "progress", "owner", "submitted", "statement", "error"):
        t.add_column(col, justify="right" if col in ("id", "progress") else "left")
    for j in found:
        asked = {"cancel": "cancelling", "suspend": "suspending"}.get(j.request or "", "")
        status = j.status.value + (f" ({asked})" if asked else "")
        pct = f" {100 * j.done_steps // j.total_steps}%" if j.total_steps else ""
        t.add_row(str(j.id), f"[{JOB_STYLE.get(j.status.value, 'default')}]{escape(status)}[/]",
                  f"{j.done_steps}/{j.total_steps}{pct}", escape(j.owner),
                  f"{j.submitted_at:%Y-%m-%d %H:%M:%S}", escape(j.statement),
                  escape(j.error or ""))
    return t


def status_table(st: StatusReport) -> list[Table]:
    """Views with freshness, and tables with tracking mode."""
    views = Table(title="materialized views", title_justify="left")
    for col in ("view", "state", "last refresh", "seconds", "why"):
        views.add_column(col)
    for v in st.views:
        state = "[green]fresh[/]" if v.fresh else "[yellow]stale[/]"
        when = f"{v.refreshed_at:%Y-%m-%d %H:%M:%S}" if v.refreshed_at else "never"
        dur = f"{v.duration_s:.3f}" if v.duration_s is not None else ""
        views.add_row(escape(str(v.name)), state, when, dur, escape(v.reason))
    tables = Table(title="base tables", title_justify="left")
    tables.add_column("table")
    tables.add_column("tracking")
    for tb in st.tables:
        label = {"triggers": "triggers (exact)", "stats": "stats (approximate)",
                 "always": "always stale"}.get(tb.mode, tb.mode)
        tables.add_row(escape(str(tb.name)), label)
    return [views, tables]


class LiveProgress:
    """A rich progress display fed by the runner's events (called from its threads)."""

    def __init__(self, console: Console, total: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]refresh"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[running]}"), TimeRemainingColumn(), console=console,
            transient=True)
        self.task = self.progress.add_task("refresh", total=total, running="")
        self.running: list[str] = []
        self.lock = threading.Lock()

    def __enter__(self) -> LiveProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, event: Event) -> None:
        from mvgraph.model.events import JobStarted, StepFinished, StepStarted

        with self.lock:
            if isinstance(event, JobStarted):
                self.progress.update(self.task, total=event.total)
            elif isinstance(event, StepStarted):
                self.running.append(str(event.name))
            elif isinstance(event, StepFinished):
                if str(event.name) in self.running:
                    self.running.remove(str(event.name))
                self.progress.advance(self.task)
            shown = ", ".join(self.running[:3]) + (" ..." if len(self.running) > 3 else "")
            self.progress.update(self.task, running=escape(shown))


def psql_text(columns: list[str], rows: list[tuple[object, ...]]) -> str:
    """Rows aligned the way psql prints them, with the row count.

    >>> print(psql_text(["id", "name"], [(1, "a")]))
     id | name
    ----+------
      1 | a
    (1 row)
    """
    cells = [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [bool(rows) and all(isinstance(r[i], int | float) or r[i] is None for r in rows)
               for i in range(len(columns))]
    head = " " + " | ".join(c.center(w) for c, w in zip(columns, widths, strict=True))
    rule = "-" + "-+-".join("-" * w for w in widths) + "-"
    lines = [head.rstrip(), rule]
    for r in cells:
        parts = [v.rjust(w) if numeric[i] else v.ljust(w)
                 for i, (v, w) in enumerate(zip(r, widths, strict=True))]
        lines.append((" " + " | ".join(parts)).rstrip())
    lines.append(f"({len(rows)} row{'' if len(rows) == 1 else 's'})")
    return "\n".join(lines)
