"""``mvgraph schedule ...``: add, list, alter, remove, pause, resume, run-now, history, sync;
with the schedule and history tables they draw."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mvgraph.commands import common
from mvgraph.commands.options import JsonOpt
from mvgraph.commands.options import ShortDsnOpt as DsnOpt
from mvgraph.commands.render import escape, name_column

if TYPE_CHECKING:
    from rich.table import Table

    from mvgraph.scheduler.store import ScheduleInfo, SlotRecord

schedule_app = typer.Typer(help="Schedules: refresh materialized views on a clock (`mvgraph "
                                "daemon` fires them).",
                           no_args_is_help=True, rich_markup_mode=None)

ViewArg = Annotated[str, typer.Argument(help="The materialized view (its schedule's name).")]
EveryOpt = Annotated[str | None, typer.Option("--every", help="Interval, e.g. '1 hour'.")]
StartOpt = Annotated[str | None, typer.Option(
    "--start", help="First slot with --every (default: today's midnight in --tz).")]
CronOpt = Annotated[str | None, typer.Option("--cron", help="Cron expression, e.g. '*/5 * * * *'.")]
LagOpt = Annotated[str | None, typer.Option(
    "--target-lag", help="Freshness target instead of a clock, e.g. '10 minutes'.")]
TzOpt = Annotated[str | None, typer.Option("--tz", help="IANA time zone (default UTC).")]
CascadeOpt = Annotated[str | None, typer.Option(
    "--cascade", help="forward, backward or all.", show_default=False)]
RestrictOpt = Annotated[bool, typer.Option("--restrict", help="Refresh unconditionally.")]
OverlapOpt = Annotated[str | None, typer.Option(
    "--overlap", help="A slot due while the last run still runs: skip (default) or queue.")]


def _dsn(local: str | None) -> str:
    return common.target(local)


def _path() -> list[str]:
    return common.state.search_path


def _behavior(cascade: str | None, restrict: bool) -> str | None:
    return None if cascade is None and not restrict else common.behavior(cascade, restrict)


def _out(text: str) -> None:
    common.out.print(escape(text))


@schedule_app.command("add")
def add_cmd(view: ViewArg, every: EveryOpt = None, start: StartOpt = None, cron: CronOpt = None,
            target_lag: LagOpt = None, tz: TzOpt = None, cascade: CascadeOpt = None,
            restrict: RestrictOpt = False, overlap: OverlapOpt = None,
            dsn: DsnOpt = None) -> None:
    """Schedule a materialized view (one schedule per view)."""
    import mvgraph

    s = mvgraph.add_schedule(view, every=every, start=start, cron=cron, target_lag=target_lag,
                             tz=tz, behavior=_behavior(cascade, restrict),
                             overlap=overlap or "skip", dsn=_dsn(dsn), search_path=_path())
    nxt = s.next_slot()
    if target_lag is not None:  # what the daemon will run, and when
        _out(f"schedule {s.name} added: freshness target {target_lag}; the daemon runs "
             f"{s.what} (with other due targets of the same owner in one job) before the "
             "lag reaches it")
        return
    _out(f"schedule {s.name} added: {s.what}; next run "
         f"{nxt.isoformat() if nxt else 'decided by the daemon'}")


@schedule_app.command("alter")
def alter_cmd(view: ViewArg, every: EveryOpt = None, start: StartOpt = None,
              cron: CronOpt = None, target_lag: LagOpt = None, tz: TzOpt = None,
              cascade: CascadeOpt = None, restrict: RestrictOpt = False,
              overlap: OverlapOpt = None, dsn: DsnOpt = None) -> None:
    """Change a schedule's clock, time zone, behaviour or overlap policy (what is given)."""
    import mvgraph

    s = mvgraph.alter_schedule(view, every=every, start=start, cron=cron,
                               target_lag=target_lag, tz=tz,
                               behavior=_behavior(cascade, restrict), overlap=overlap,
                               dsn=_dsn(dsn), search_path=_path())
    nxt = s.next_slot()
    _out(f"schedule {s.name} altered: {s.what}; next run {nxt.isoformat() if nxt else '-'}")


@schedule_app.command("list")
def list_cmd(as_json: JsonOpt = False, dsn: DsnOpt = None) -> None:
    """Every schedule with its next run (computed from its clock; no daemon needed)."""
    import mvgraph

    found = mvgraph.list_schedules(dsn=_dsn(dsn))
    if as_json:
        sys.stdout.write(json.dumps([s.to_dict() for s in found], indent=2) + "\n")
    else:
        common.out.print(schedules_table(found))


@schedule_app.command("remove")
def remove_cmd(view: ViewArg, dsn: DsnOpt = None) -> None:
    """Remove a schedule (and its slot history; the jobs stay)."""
    import mvgraph

    _out(f"schedule {mvgraph.remove_schedule(view, dsn=_dsn(dsn), search_path=_path())} "
         "removed")


@schedule_app.command("pause")
def pause_cmd(view: ViewArg, dsn: DsnOpt = None) -> None:
    """Stop firing a schedule until resumed."""
    import mvgraph

    s = mvgraph.pause_schedule(view, dsn=_dsn(dsn), search_path=_path())
    _out(f"schedule {s.name} paused")


@schedule_app.command("resume")
def resume_cmd(view: ViewArg, dsn: DsnOpt = None) -> None:
    """Fire a paused or broken schedule again (clears is_broken and the failure count)."""
    import mvgraph

    s = mvgraph.resume_schedule(view, dsn=_dsn(dsn), search_path=_path())
    nxt = s.next_slot()
    _out(f"schedule {s.name} resumed; next run {nxt.isoformat() if nxt else '-'}")


@schedule_app.command("run-now")
def run_now_cmd(view: ViewArg, dsn: DsnOpt = None) -> None:
    """Submit the schedule's refresh as a background job now (mvgraph worker runs it)."""
    import mvgraph

    job = mvgraph.run_schedule_now(view, dsn=_dsn(dsn), search_path=_path())
    _out(f"job {job} queued; watch it with `mvgraph jobs`")


@schedule_app.command("history")
def history_cmd(view: ViewArg, as_json: JsonOpt = False,
                limit: Annotated[int, typer.Option("--limit", min=1)] = 100,
                dsn: DsnOpt = None) -> None:
    """One line per firing, newest first: slot, status, job id and its status, start, end."""
    import mvgraph

    found = mvgraph.schedule_history(view, dsn=_dsn(dsn), search_path=_path(), limit=limit)
    if as_json:
        sys.stdout.write(json.dumps([r.to_dict() for r in found], indent=2) + "\n")
    else:
        common.out.print(history_table(found))


@schedule_app.command("sync")
def sync_cmd(from_sql: Annotated[list[Path], typer.Option(
                 "--from-sql", help="SQL files or folders whose schedule clauses to apply.")],
             as_json: JsonOpt = False, dsn: DsnOpt = None) -> None:
    """Make the schedules match the REFRESH ... EVERY clauses of SQL files (each change
    printed: added, altered, removed)."""
    import mvgraph

    report = mvgraph.sync_schedules(from_sql, dsn=_dsn(dsn), search_path=_path())
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
        return
    for action, name, detail in report.changes:
        _out(f"{action} {name}: {detail}")
    if not report.changes:
        _out("schedules already match the files")


def _t(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") + "Z" if value else "-"


def schedules_table(found: list[ScheduleInfo]) -> Table:
    """Name, behaviour, clock, next run (from the clock), state, last run."""
    from rich.table import Table

    from mvgraph.scheduler.service import describe_clock

    now = datetime.now(UTC)
    t = Table(title=f"{len(found)} schedule{'' if len(found) == 1 else 's'}",
              title_justify="left")
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
    from rich.table import Table

    t = Table(title=f"{len(found)} firing{'' if len(found) == 1 else 's'}",
              title_justify="left")
    for col in ("slot", "status", "job", "job status", "start", "end"):
        t.add_column(col)
    for r in found:
        status = r.status.value + (" (run-now)" if r.manual else "")
        t.add_row(_t(r.slot), status, str(r.job_id or "-"), r.job_status or "-",
                  _t(r.started_at), _t(r.finished_at))
    return t
