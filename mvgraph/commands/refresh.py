"""``mvgraph plan``, ``refresh``, ``track``, ``untrack``, ``status`` and ``configure``: what a
refresh would do, doing it, change tracking and freshness; with the status table and the live
progress display they draw."""

from __future__ import annotations

import json
import sys
import threading
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mvgraph.commands import common
from mvgraph.commands.options import (
    BehaviorOpt,
    DsnOpt,
    ForceOpt,
    JsonOpt,
    RestrictOpt,
    SearchPathOpt,
    TargetsArg,
)
from mvgraph.commands.render import escape, name_column
from mvgraph.errors import UsageError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from mvgraph.model.events import Event
    from mvgraph.scheduler.status import StatusReport


def plan_cmd(
    targets: TargetsArg,
    cascade: BehaviorOpt = None,
    restrict: RestrictOpt = False,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    search_path: SearchPathOpt = None,
    dsn: DsnOpt = None,
) -> None:
    """Show what a refresh would do, and why, without refreshing."""
    import mvgraph
    from mvgraph.commands.render import plan_table

    p = mvgraph.plan(common.target(dsn), targets, common.behavior(cascade, restrict), force=force,
                     search_path=common.search_path(search_path))
    if as_json:
        sys.stdout.write(json.dumps(p.to_dict(), indent=2) + "\n")
    else:
        common.out.print(plan_table(p))


def refresh_cmd(
    targets: TargetsArg,
    cascade: BehaviorOpt = None,
    restrict: RestrictOpt = False,
    force: ForceOpt = False,
    parallel: Annotated[int, typer.Option("--parallel", "-j", min=1,
                                          help="Views refreshed at once.")] = 1,
    atomic: Annotated[bool, typer.Option("--atomic",
                                         help="One transaction: all old or all new.")] = False,
    concurrently: Annotated[str, typer.Option(
        "--concurrently", help="auto (when a unique index allows), always or never.")] = "auto",
    lock_timeout: Annotated[str | None, typer.Option(
        "--lock-timeout", help="Lock wait per view, e.g. 10s (default: setting).")] = None,
    statement_timeout: Annotated[str | None, typer.Option(
        "--statement-timeout", help="Per view, e.g. 5min; 0 = none (default: setting).")]
    = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan only.")] = False,
    background: Annotated[bool, typer.Option(
        "--background", help="Queue it as a job for `mvgraph worker`; print its id.")] = False,
    as_json: JsonOpt = False,
    search_path: SearchPathOpt = None,
    dsn: DsnOpt = None,
) -> None:
    """Refresh materialized views; exit 0 ok, 1 a step failed, 130 cancelled or suspended."""
    import mvgraph

    behavior = common.behavior(cascade, restrict)
    target = common.target(dsn)
    if dry_run:
        plan_cmd(targets, cascade, restrict, force, as_json, search_path, target)
        return
    kwargs = {"parallel": parallel, "atomic": atomic, "concurrently": concurrently,
              "lock_timeout": lock_timeout, "statement_timeout": statement_timeout,
              "force": force, "search_path": common.search_path(search_path)}
    if background:
        from mvgraph.refresh.service import submit_refresh

        job = submit_refresh(target, targets, behavior, **kwargs)  # type: ignore[arg-type]
        if as_json:
            sys.stdout.write(json.dumps({"job_id": job, "status": "queued"}) + "\n")
        else:
            sys.stdout.write(f"{job}\n")
        return
    if as_json:  # no rich at all: neither progress nor table
        report = mvgraph.refresh(target, targets, behavior, **kwargs)  # type: ignore[arg-type]
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
    else:
        from mvgraph.commands.render import report_table

        if not common.out.is_terminal:
            report = mvgraph.refresh(target, targets, behavior,
                                     **kwargs)  # type: ignore[arg-type]
        else:
            with LiveProgress(common.out, 0) as live:
                report = mvgraph.refresh(target, targets, behavior, listener=live,
                                         **kwargs)  # type: ignore[arg-type]
        common.out.print(report_table(report))
    if report.status == "suspended" and not as_json:
        common.err.print(f"job {report.job_id} suspended; `mvgraph resume {report.job_id}` "
                         "queues the rest for a worker")
    if report.status != "ok":
        raise typer.Exit(130 if report.status in ("cancelled", "suspended") else 1)


def track(
    tables: Annotated[list[str] | None, typer.Argument(help="Base tables.")] = None,
    every: Annotated[bool, typer.Option("--all", help="Every table upstream of any view.")]
    = False,
    mode: Annotated[str, typer.Option(
        "--mode", help="triggers (exact), wal (exact, from the write-ahead log; needs "
                       "wal_level = logical), stats (approximate: pg_stat counters) or "
                       "always.")]
    = "triggers",
    search_path: SearchPathOpt = None,
    dsn: DsnOpt = None,
) -> None:
    """Track writes to base tables so that unchanged views are skipped."""
    import mvgraph

    done = mvgraph.track(common.target(dsn), tables or [], every=every, mode=mode,
                         search_path=common.search_path(search_path))
    for name in done:
        common.out.print(f"{escape(str(name))}: {mode}")
    if not done:
        common.out.print("no base tables found upstream of any materialized view")


def untrack(
    tables: Annotated[list[str] | None, typer.Argument(help="Base tables.")] = None,
    every: Annotated[bool, typer.Option("--all", help="Every tracked table.")] = False,
    search_path: SearchPathOpt = None,
    dsn: DsnOpt = None,
) -> None:
    """Remove tracking (any mode; wal: its slot too); readers of the tables are then refreshed
    on every run, never skipped."""
    import mvgraph

    for name in mvgraph.untrack(common.target(dsn), tables or [], every=every,
                                search_path=common.search_path(search_path)):
        common.out.print(f"{escape(str(name))}: untracked")


def status_cmd(as_json: JsonOpt = False, dsn: DsnOpt = None) -> None:
    """Freshness of every view; tracking mode of every base table."""
    import mvgraph

    st = mvgraph.status(common.target(dsn))
    if as_json:
        sys.stdout.write(json.dumps(st.to_dict(), indent=2) + "\n")
        return
    for table in status_table(st):
        common.out.print(table)
    for warning in st.warnings:
        common.err.print(f"[yellow]warning:[/] {escape(warning)}")


def configure(
    view: Annotated[str, typer.Argument(help="The materialized view.")],
    early_cutoff: Annotated[bool | None, typer.Option(
        "--early-cutoff/--no-early-cutoff",
        help="Compare a content fingerprint after refresh; unchanged content keeps "
             "dependents fresh.")] = None,
    volatile: Annotated[str | None, typer.Option(
        "--volatile", help="auto (volatile functions make it always stale), always, never.")]
    = None,
    search_path: SearchPathOpt = None,
    dsn: DsnOpt = None,
) -> None:
    """Set per-view refresh options (at least one of them)."""
    import mvgraph

    if early_cutoff is None and volatile is None:
        raise UsageError("configure needs an option: --early-cutoff / --no-early-cutoff, or "
                         "--volatile auto|always|never")

    mvgraph.configure(common.target(dsn), view, early_cutoff=early_cutoff,
                      volatile=volatile, search_path=common.search_path(search_path))
    common.out.print(f"{escape(view)}: updated")


def status_table(st: StatusReport) -> list[Table]:
    """Views with freshness, and tables with tracking mode."""
    from rich.table import Table

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
