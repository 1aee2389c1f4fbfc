"""``mvgraph jobs [prune]``, ``job``, ``wait``, ``cancel``, ``suspend``, ``resume`` and
``worker``: every run, foreground or background, and the process that runs queued ones; with
the job tables and the ``--watch`` display they draw."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mvgraph.commands import common
from mvgraph.commands.options import DsnOpt, JobIdArg, JsonOpt
from mvgraph.commands.render import escape, seconds_text, short
from mvgraph.errors import UsageError

if TYPE_CHECKING:
    from rich.table import Table

    from mvgraph.jobs.store import JobInfo, StepInfo

jobs_app = typer.Typer(help="Jobs: every run, foreground or background.",
                       rich_markup_mode=None)


def worker(
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1,
                                             help="Jobs run at once by this worker.")] = 1,
    lease: Annotated[float, typer.Option(
        "--lease", help="Seconds a job stays this worker's without a heartbeat.")] = 30.0,
    heartbeat: Annotated[float, typer.Option(
        "--heartbeat", help="Seconds between lease renewals.")] = 10.0,
    poll: Annotated[float, typer.Option(
        "--poll", help="Seconds between queue polls when no notification comes.")] = 5.0,
    shutdown_timeout: Annotated[float, typer.Option(
        "--shutdown-timeout", help="On SIGTERM/SIGINT, seconds running steps may finish "
                                   "before they are cancelled and their jobs requeued.")] = 30.0,
    owner_dsn: Annotated[str | None, typer.Option(
        "--owner-dsn", envvar="MVGRAPH_OWNER_DSN",
        help="How to log in as a job's submitter: a DSN template where {role} is the login "
             "(default: this DSN with the user replaced and no password, so that ~/.pgpass, "
             "a client certificate, peer or trust authentication answers).")] = None,
    name: Annotated[str | None, typer.Option(
        "--name", help="This worker's name in job rows, mvgraph.worker, alerts and "
                       "pg_stat_activity (`mvgraph worker NAME`); default host:pid.",
        show_default=False)] = None,
    dsn: DsnOpt = None,
) -> None:
    """Run queued jobs until stopped (SIGTERM / Ctrl-C: finish running steps, requeue the
    rest). Each job runs logged in as the role that submitted it."""
    import logging
    from dataclasses import replace

    from mvgraph.db.connect import check_before_start
    from mvgraph.jobs.worker import Worker, WorkerConfig
    from mvgraph.redaction import install

    target = common.target(dsn)
    check_before_start(target)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(message)s")
    install(*logging.getLogger().handlers)  # psycopg's and others' records too
    config = WorkerConfig(target, concurrency=concurrency, lease_s=lease, heartbeat_s=heartbeat,
                          poll_s=poll, shutdown_s=shutdown_timeout, owner_dsn=owner_dsn)
    Worker(replace(config, name=name) if name else config).run()


@jobs_app.callback(invoke_without_command=True)
def jobs_cmd(
    ctx: typer.Context,
    every: Annotated[bool, typer.Option("--all", help="Every kept job, not only unfinished "
                                                      "ones and those of the last hour.")]
    = False,
    watch: Annotated[bool, typer.Option(
        "--watch", help="Redraw every 0.5 s with a progress bar per running job, until Ctrl-C "
                        "(exit 0).")] = False,
    watch_for: Annotated[float | None, typer.Option("--watch-for", hidden=True, min=0)] = None,
    as_json: JsonOpt = False,
    dsn: DsnOpt = None,
) -> None:
    """List jobs: id, statement, status, progress m/n and percent, started, elapsed, estimated
    time left (from past durations), owner, error; subcommand prune."""
    if ctx.invoked_subcommand is not None:
        return
    if (watch or watch_for is not None) and as_json:
        raise UsageError("--watch and --json exclude each other; poll `mvgraph jobs --json` "
                         "instead")
    if watch or watch_for is not None:
        _watch_jobs(common.target(dsn), every, watch_for)
        return
    import mvgraph

    found = mvgraph.list_jobs(common.target(dsn), every=every)
    if as_json:
        sys.stdout.write(json.dumps([j.to_dict() for j in found], indent=2) + "\n")
    else:
        common.out.print(jobs_table(found, common.out.width))


WATCH_EVERY_S = 0.5


def _watch_jobs(target: str, every: bool, seconds: float | None) -> None:
    """Redraw the jobs from the database every WATCH_EVERY_S until Ctrl-C (or ``seconds``)."""
    import signal
    import threading
    import time

    from rich.live import Live

    from mvgraph.jobs import store
    from mvgraph.jobs.handle import session

    view = JobsWatch()
    console = common.real_console("out")
    end = None if seconds is None else time.monotonic() + seconds
    # Ctrl-C is how a watch ends, not an error: it ends the loop between two frames, so the
    # last frame is always drawn whole (an interrupt inside a read or the final draw lost it)
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda _signum, _frame: stop.set())
    try:
        with session(target, application_name="mvgraph jobs --watch") as conn:
            store.reap(conn)
            with Live(view.frame(store.jobs(conn, every)), console=console, auto_refresh=False,
                      transient=False) as live:
                polls = 0
                while not stop.is_set() and (end is None or time.monotonic() < end):
                    stop.wait(WATCH_EVERY_S if end is None
                              else max(0.0, min(WATCH_EVERY_S, end - time.monotonic())))
                    polls += 1
                    if polls % 20 == 0:  # every 10 s: close jobs whose owner died
                        store.reap(conn)
                    live.update(view.frame(store.jobs(conn, every)), refresh=True)
    finally:
        signal.signal(signal.SIGINT, previous)


@jobs_app.command("prune")
def jobs_prune(
    older_than: Annotated[int | None, typer.Option(
        "--older-than", help="Days (default: the retention_days setting).")] = None,
    dsn: DsnOpt = None,
) -> None:
    """Delete finished jobs older than the retention (and close jobs whose owner died)."""
    import mvgraph

    n = mvgraph.prune_jobs(common.target(dsn), older_than_days=older_than)
    common.out.print(f"pruned {n} job{'' if n == 1 else 's'}")


def job_cmd(
    job: Annotated[str, typer.Argument(
        metavar="ID|result", help="The job id (see mvgraph jobs); `mvgraph job result ID` "
                                     "prints the job's result instead.")],
    result_of: Annotated[str | None, typer.Argument(metavar="ID", show_default=False,
                                                    hidden=True)] = None,
    as_json: JsonOpt = False,
    dsn: DsnOpt = None,
) -> None:
    """Show a job and its steps; `mvgraph job result ID`: its result.

    `mvgraph job ID`: seq, step, status, progress m/n, start, end, duration, backend pid,
    message (reason or error). `mvgraph job result ID`: status, error, and for a background
    statement its command tag, notices and first rows (as mvgraph.job_result), --json for
    JSON."""
    from mvgraph.jobs import store
    from mvgraph.jobs.handle import session

    usage = "give one job id: `mvgraph job ID`, or `mvgraph job result ID` for its result"
    if job == "result":
        if result_of is None or not result_of.isdigit():
            raise UsageError(usage if result_of is None
                             else f"{result_of!r} is not a job id; {usage}")
        _print_job_result(int(result_of), as_json, dsn)
        return
    if result_of is not None:
        raise UsageError(f"mvgraph job takes one job id, not {job} {result_of}; {usage}")
    if not job.isdigit():
        raise UsageError(f"{job!r} is not a job id; {usage}")
    with session(common.target(dsn)) as conn:
        store.reap(conn)
        info = store.job_info(conn, int(job))
        steps = store.steps(conn, info.id)
    if as_json:
        sys.stdout.write(json.dumps({**info.to_dict(), "steps": [s.to_dict() for s in steps]},
                                    indent=2) + "\n")
        return
    common.out.print(job_header(info))
    if steps:
        common.out.print(steps_table(steps))
    else:
        common.out.print("no steps yet: a worker plans a job submitted from SQL when it takes it")


#: ``mvgraph wait``'s own exit codes (the issue's; 3 is not an internal error here).
WAIT_EXIT = {"done": 0, "failed": 1, "cancelled": 3}


def wait_cmd(
    job: JobIdArg,
    timeout: Annotated[float | None, typer.Option(
        "--timeout", min=0, help="Give up after this many seconds (exit 124); the job goes "
                                 "on.")] = None,
    dsn: DsnOpt = None,
) -> None:
    """Block until a job ends and print one line; exit 0 done, 1 failed, 3 cancelled,
    124 timeout, 69 no worker alive to run it (wait's own codes)."""
    from mvgraph.jobs.handle import session, wait_for

    def suspended(info: Any) -> None:
        common.err.print(f"[yellow]job {job} is suspended[/]; still waiting: "
                         f"`mvgraph resume {job}` continues it")

    with session(common.target(dsn)) as conn:
        info = wait_for(conn, job, timeout, on_suspended=suspended)
    line = (f"job {job} {info.status.value}: {info.done_steps}/{info.total_steps} steps in "
            f"{seconds_text(info.elapsed_s, '0s')}" + (f": {info.error}" if info.error else ""))
    sys.stdout.write(line + "\n")
    raise typer.Exit(WAIT_EXIT[info.status.value])


def _print_job_result(job: int, as_json: bool, dsn: str | None) -> None:
    """``mvgraph job result ID``: status, error, and for a background statement its command
    tag, notices and first rows (as mvgraph.job_result(id))."""
    import mvgraph
    from mvgraph.commands.render import psql_text

    found = mvgraph.job_result(job, dsn=common.target(dsn))
    if as_json:
        sys.stdout.write(json.dumps(found, indent=2, default=str) + "\n")
        return
    result = found.get("result") or {}
    for notice in result.get("notices") or ():
        common.out.print(escape(str(notice)))
    if result.get("columns"):
        rows = [tuple(r) for r in result.get("rows") or ()]
        common.out.print(escape(psql_text(result["columns"], rows)))
        if result.get("truncated"):
            common.out.print(f"(first {len(rows)} of {result.get('row_count')} rows kept)")
    line = f"job {job}: {found['status']}"
    if result.get("tags"):  # a job of several statements: each one's tag
        line += f" ({'; '.join(str(t) for t in result['tags'])})"
    elif result.get("tag"):
        line += f" ({result['tag']})"
    if found.get("error"):
        line += f": {found['error']}"
    common.out.print(escape(line))


def cancel_cmd(job: JobIdArg, dsn: DsnOpt = None) -> None:
    """Cancel a job: its running statement at once, its remaining steps never start."""
    from mvgraph.jobs import store
    from mvgraph.jobs.handle import session

    with session(common.target(dsn)) as conn:
        sys.stdout.write(f"job {job}: {store.cancel(conn, job)}\n")


def suspend_cmd(job: JobIdArg, dsn: DsnOpt = None) -> None:
    """Suspend a job after its running steps (resume continues it)."""
    import mvgraph

    common.out.print(f"job {job}: {mvgraph.suspend_job(job, dsn=common.target(dsn))}")


def resume_cmd(job: JobIdArg, dsn: DsnOpt = None) -> None:
    """Queue a suspended job again; a worker continues from its next unfinished step."""
    import mvgraph

    common.out.print(f"job {job}: {mvgraph.resume_job(job, dsn=common.target(dsn))}")


JOB_STYLE = {"queued": "cyan", "running": "bold", "suspended": "yellow", "done": "green",
             "failed": "bold red", "cancelled": "yellow"}
STEP_STYLE = {"pending": "cyan", "running": "bold", "done": "green", "skipped": "dim",
              "failed": "bold red", "blocked": "red", "cancelled": "yellow"}


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
    from rich.table import Table

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
    from rich.table import Table

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
