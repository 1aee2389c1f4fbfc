"""Rendering plans, reports and status for people (the CLI's refresh output).

Imports only rich's table; the progress display (``LiveProgress``) imports rich.progress when
made, and the refresh modules are needed for types only (``plan`` loads no executor).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from rich.table import Table

from mvgraph.refresh.behavior import Action
from mvgraph.render import escape

if TYPE_CHECKING:
    from rich.console import Console

    from mvgraph.jobs.store import JobInfo, StepInfo
    from mvgraph.model.events import Event
    from mvgraph.refresh.behavior import Plan
    from mvgraph.refresh.executor import RefreshReport
    from mvgraph.scheduler.status import StatusReport

ACTION_STYLE = {"refreshed": "green", "skipped": "dim", "failed": "bold red",
                "blocked": "red", "cancelled": "yellow", "pending": "cyan"}


def plan_table(p: Plan) -> Table:
    """A plan as a table: order, view, verdict, reason."""
    t = Table(title=escape(p.header()), title_justify="left")
    t.add_column("#", justify="right")
    t.add_column("view", **name_column(str(s.name) for s in p.steps))
    t.add_column("action")
    t.add_column("reason", overflow="fold")
    for i, s in enumerate(p.steps, 1):
        style = "green" if s.action is Action.REFRESH else "dim"
        t.add_row(str(i), escape(str(s.name)), f"[{style}]{s.action.value}[/]", escape(s.reason))
    return t


def report_table(r: RefreshReport) -> Table:
    """A finished run as a table."""
    t = Table(title=f"job {r.job_id}: {r.status} in {r.elapsed_s:.2f}s", title_justify="left")
    t.add_column("view", **name_column(str(s.name) for s in r.steps))
    t.add_column("action")
    t.add_column("seconds", justify="right")
    t.add_column("reason / error", overflow="fold")
    for s in r.steps:
        style = ACTION_STYLE.get(s.action, "default")
        mode = " (concurrently)" if s.concurrently else ""
        detail = s.reason + (f" — {s.error}" if s.error else "")
        t.add_row(escape(str(s.name)), f"[{style}]{s.action}{mode}[/]", f"{s.duration_s:.3f}",
                  escape(detail))
    return t


def name_column(names: Iterable[str]) -> dict[str, Any]:
    """Column options that keep every name whole: never wrapped or cut, as wide as the longest
    (the other columns wrap to make room)."""
    return {"no_wrap": True, "overflow": "fold",
            "min_width": max((len(n) for n in names), default=None)}


JOB_STYLE = {"queued": "cyan", "running": "bold", "suspended": "yellow", "done": "green",
             "failed": "bold red", "cancelled": "yellow"}
STEP_STYLE = {"pending": "cyan", "running": "bold", "done": "green", "skipped": "dim",
              "failed": "bold red", "blocked": "red", "cancelled": "yellow"}


def seconds_text(seconds: float | None, unknown: str = "?") -> str:
    """A duration for people; ``unknown`` when there is none.

    >>> seconds_text(4.25), seconds_text(125), seconds_text(3725), seconds_text(None)
    ('4.2s', '2m05s', '1h02m', '?')
    """
    if seconds is None:
        return unknown
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def short(text: str, width: int = 40) -> str:
    """One line of at most ``width`` characters (whitespace collapsed, ``…`` when cut).

    >>> short("REFRESH   MATERIALIZED VIEW  public.mv5 CASCADE ALL", 30)
    'REFRESH MATERIALIZED VIEW pub…'
    """
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[:width - 1] + "…"


def job_status_text(j: JobInfo) -> str:
    """The status, with a pending request (``running (cancelling)``)."""
    asked = {"cancel": "cancelling", "suspend": "suspending"}.get(j.request or "", "")
    return j.status.value + (f" ({asked})" if asked else "")


def job_progress_text(j: JobInfo) -> str:
    """``m/n pct%``, e.g. ``2/5 40%``."""
    return f"{j.done_steps}/{j.total_steps} {j.percent:g}%"


def job_left_text(j: JobInfo) -> str:
    """Estimated time left: ``?`` when unknown, empty once the job has ended."""
    if j.status.finished:
        return ""
    return "?" if j.eta_s is None else "~" + seconds_text(j.eta_s)


#: Below this many columns, ``jobs_table`` puts each job's fields in one cell (statement, then
#: status and times, then the error), so that statements and errors keep room to be read.
WIDE_JOBS = 140


def jobs_table(found: list[JobInfo], width: int | None = None) -> Table:
    """Jobs as a table: id, statement, status, progress m/n and percent, started, elapsed,
    estimated time left, owner, error; narrower than ``WIDE_JOBS`` columns, two columns (id,
    and the rest stacked in lines). Statements and errors wrap: nothing is cut."""
    title = f"{len(found)} job{'' if len(found) == 1 else 's'}"
    if width is not None and width < WIDE_JOBS:
        t = Table(title=title, title_justify="left")
        t.add_column("id", justify="right", no_wrap=True)
        t.add_column("statement / status, progress, started, elapsed, left, owner / error",
                     overflow="fold")
        for j in found:
            times = ", ".join(x for x in (
                job_progress_text(j),
                f"started {j.started_at:%Y-%m-%d %H:%M:%S}" if j.started_at else "",
                f"elapsed {seconds_text(j.elapsed_s)}" if j.elapsed_s is not None else "",
                f"left {job_left_text(j)}" if job_left_text(j) else "",
                f"owner {escape(j.owner)}") if x)
            t.add_row(str(j.id), escape(" ".join(j.statement.split())) + "\n"
                      + f"[{JOB_STYLE.get(j.status.value, 'default')}]"
                      f"{escape(job_status_text(j))}[/] {times}"
                      + (f"\n[red]error:[/] {escape(' '.join(j.error.split()))}" if j.error
                         else ""))
        return t
    t = Table(title=title, title_justify="left")
    for col in ("id", "statement", "status", "progress", "started", "elapsed", "left", "owner",
                "error"):  # statements and errors wrap (whole): nothing is cut
        t.add_column(col, justify="right" if col in ("id", "progress", "elapsed", "left")
                     else "left", overflow="fold",
                     no_wrap=col in ("id", "status", "progress", "elapsed", "left"))
    for j in found:
        started = f"{j.started_at:%Y-%m-%d %H:%M:%S}" if j.started_at else ""
        t.add_row(str(j.id), escape(" ".join(j.statement.split())),
                  f"[{JOB_STYLE.get(j.status.value, 'default')}]{escape(job_status_text(j))}[/]",
                  job_progress_text(j), started, seconds_text(j.elapsed_s, ""), job_left_text(j),
                  escape(j.owner), escape(" ".join((j.error or "").split())))
    return t


def job_header(j: JobInfo) -> str:
    """One line about a job, above its steps (rich markup)."""
    left = job_left_text(j)
    return (f"job {j.id} [{JOB_STYLE.get(j.status.value, 'default')}]"
            f"{escape(job_status_text(j))}[/] {job_progress_text(j)}"
            + (f", elapsed {seconds_text(j.elapsed_s)}" if j.elapsed_s is not None else "")
            + (f", left {left}" if left else "") + f", owner {escape(j.owner)}"
            + (f", worker {escape(j.worker)}" if j.worker else "")
            + f"\n{escape(j.statement)}" + (f"\n[red]error:[/] {escape(j.error)}" if j.error
                                              else ""))


def steps_table(steps: list[StepInfo]) -> Table:
    """A job's steps as a task-progress view: seq, step, status, progress, start, end,
    duration, backend pid, message."""
    t = Table(title=f"{len(steps)} step{'' if len(steps) == 1 else 's'}", title_justify="left")
    for col in ("seq", "step", "status", "progress", "start", "end", "duration", "pid",
                "message"):
        t.add_column(col, justify="right" if col in ("seq", "progress", "duration", "pid")
                     else "left", no_wrap=col != "message")
    for s in steps:
        t.add_row(str(s.seq), escape(s.name),
                  f"[{STEP_STYLE.get(s.status.value, 'default')}]{s.status.value}[/]",
                  s.progress, f"{s.started_at:%H:%M:%S}" if s.started_at else "",
                  f"{s.finished_at:%H:%M:%S}" if s.finished_at else "",
                  seconds_text(s.duration_s, ""), "" if s.backend_pid is None
                  else str(s.backend_pid), escape(s.message))
    return t


class JobsWatch:
    """What ``mvgraph jobs --watch`` redraws: the jobs table, then one progress bar per
    running job (its statement, m/n, percent and estimated time left)."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.progress = Progress(
            TextColumn("job {task.fields[job]}"), TextColumn("{task.description}"), BarColumn(),
            MofNCompleteColumn(), TextColumn("{task.percentage:>5.1f}%"),
            TextColumn("left {task.fields[left]}"), auto_refresh=False)
        self.bars: dict[int, Any] = {}  # job id -> rich task id

    def frame(self, found: list[JobInfo]) -> Any:
        """The renderable for one poll of the jobs."""
        from rich.console import Group

        running = {j.id: j for j in found if j.status.value == "running"}
        for gone in set(self.bars) - set(running):
            self.progress.remove_task(self.bars.pop(gone))
        for j in running.values():
            total = float(j.total_steps) if j.total_steps else None
            text, left = escape(short(j.statement, 30)), job_left_text(j)
            if j.id in self.bars:
                self.progress.update(self.bars[j.id], total=total, completed=j.done_steps,
                                     description=text, left=left)
            else:
                self.bars[j.id] = self.progress.add_task(text, total=total,
                                                         completed=j.done_steps, job=j.id,
                                                         left=left)
        return Group(jobs_table(found), self.progress) if running else jobs_table(found)


def status_table(st: StatusReport) -> list[Table]:
    """Views with freshness, and tables with tracking mode."""
    views = Table(title="materialized views", title_justify="left")
    targets = any(v.target_lag_s is not None for v in st.views)
    views.add_column("view", **name_column(str(v.name) for v in st.views))
    for col in ("state", "last refresh", "seconds", *(("lag / goal",) if targets else ()),
                "why"):
        views.add_column(col, overflow="fold")
    for v in st.views:
        state = "[green]fresh[/]" if v.fresh else "[yellow]stale[/]"
        when = f"{v.refreshed_at:%Y-%m-%d %H:%M:%S}" if v.refreshed_at else "never"
        dur = f"{v.duration_s:.3f}" if v.duration_s is not None else ""
        lag = (lag_cell(v.lag_s, v.target_lag_s),) if targets else ()
        views.add_row(escape(str(v.name)), state, when, dur, *lag, escape(v.reason))
    tables = Table(title="base tables", title_justify="left")
    tables.add_column("table", **name_column(str(tb.name) for tb in st.tables))
    tables.add_column("tracking", overflow="fold")
    for tb in st.tables:
        label = {"triggers": "triggers (exact)", "wal": "wal (exact)",
                 "stats": "stats (approximate)", "always": "always stale",
                 "untracked": f"[yellow]untracked: readers never skipped; run `mvgraph track "
                              f"{escape(tb.via or str(tb.name))}`[/]"}.get(tb.mode, tb.mode)
        if tb.problems:
            label = f"[red]{label}: {len(tb.problems)} relation" \
                    f"{'' if len(tb.problems) == 1 else 's'} not tracked[/]"
        tables.add_row(escape(str(tb.name)), label)
    return [views, tables]


def lag_cell(lag_s: float | None, goal_s: float | None) -> str:
    """A freshness target's lag against its goal, red when over it.

    >>> lag_cell(12.04, 600), lag_cell(None, 60), lag_cell(None, None)
    ('12.0 s / 600 s', 'no data / 60 s', '')
    """
    if goal_s is None:
        return ""
    if lag_s is None:
        return f"no data / {goal_s:g} s"
    text = f"{lag_s:.1f} s / {goal_s:g} s"
    return f"[red]{text}[/]" if lag_s > goal_s else text


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


def psql_text(columns: list[str], rows: list[tuple[object, ...]],
              texts: list[tuple[str | None, ...]] | None = None) -> str:
    """Rows aligned the way psql prints them, with the row count; values as PostgreSQL writes
    them (``texts``: the server's own text of each value, else :func:`mvgraph.pgvalues.pg_text`
    of ``rows``), NULL as nothing.

    >>> print(psql_text(["id", "ok", "tags"], [(1, True, [1, 2]), (2, None, None)]))
     id | ok | tags
    ----+----+-------
      1 | t  | {1,2}
      2 |    |
    (2 rows)
    """
    from mvgraph.pgvalues import pg_text

    cells = ([["" if v is None else v for v in row] for row in texts] if texts is not None
             else [[pg_text(v) for v in row] for row in rows])
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [bool(rows) and all((isinstance(r[i], int | float | Decimal) and
                                  not isinstance(r[i], bool)) or r[i] is None for r in rows)
               for i in range(len(columns))]
    head = " " + " | ".join(" " * ((w - len(c)) // 2) + c.ljust(w - (w - len(c)) // 2)
                            for c, w in zip(columns, widths, strict=True))  # psql's centring
    rule = "-" + "-+-".join("-" * w for w in widths) + "-"
    lines = [head.rstrip(), rule]
    for r in cells:
        parts = [v.rjust(w) if numeric[i] else v.ljust(w)
                 for i, (v, w) in enumerate(zip(r, widths, strict=True))]
        lines.append((" " + " | ".join(parts)).rstrip())
    lines.append(f"({len(rows)} row{'' if len(rows) == 1 else 's'})")
    return "\n".join(lines)
