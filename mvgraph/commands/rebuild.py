"""``mvgraph rebuild``: change a table's structure (``--action``) or a materialized view's
query (``--sql``) online, dependents included; ``mvgraph rebuild progress ID`` and
``mvgraph rebuild cleanup ID``."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from mvgraph.commands import common
from mvgraph.commands.options import DsnOpt, JsonOpt
from mvgraph.commands.render import escape
from mvgraph.errors import UsageError

REBUILD_EXIT = {"ok": 0, "failed": 1, "cancelled": 3, "suspended": 5, "lost": 1}
PROGRESS_COLUMNS = ("job_name", "step_id", "step", "status", "progress", "start_time",
                    "end_time", "pid", "message")


def rebuild_cmd(
    target: Annotated[str, typer.Argument(
        help="The table or materialized view (or: progress ID, cleanup ID).")],
    job: Annotated[int | None, typer.Argument(help="The rebuild's job id (progress, cleanup).")
                   ] = None,
    action: Annotated[list[str] | None, typer.Option(
        "--action", "-a", help="A table action, e.g. \"ALTER COLUMN v TYPE bigint\" "
                               "(repeatable; several make one rebuild).")] = None,
    new_sql: Annotated[str | None, typer.Option(
        "--sql", help="A materialized view's new query.")] = None,
    keep_source: Annotated[bool, typer.Option(
        "--keep-source", help="Keep the old relation as <name>__old_<job id>.")] = False,
    with_params: Annotated[list[str] | None, typer.Option(
        "--with", help="A rebuild parameter: binlog_mode, rebuild_guc_<name>='value', "
                       "hash_partitions=8, partition_interval='month', batch_rows=50000 "
                       "(repeatable).")] = None,
    background: Annotated[bool, typer.Option(
        "--background", help="Queue it as a job and print its id (a worker runs it).")]
    = False,
    as_json: JsonOpt = False,
    dsn: DsnOpt = None,
) -> None:
    """Rebuild a table or a materialized view online, with its dependent views (Hologres'
    ASYNC REBUILD). Exit 0 done, 1 failed, 3 cancelled, 5 suspended."""
    from mvgraph.jobs.handle import session
    from mvgraph.rebuild import service

    if target in ("progress", "cleanup") and job is not None:
        with session(common.target(dsn)) as conn:
            if target == "progress":
                _print_progress(service.progress(conn, job), as_json)
            else:
                names = service.clean(conn, job)
                _out(as_json, {"job": job, "dropped": names},
                     f"rebuild {job}: dropped {len(names)} object(s)"
                     + (f": {', '.join(names)}" if names else ""))
        return
    if job is not None:
        raise UsageError(f"unexpected argument {job}: the job id goes with `mvgraph rebuild "
                         "progress ID` or `mvgraph rebuild cleanup ID`")
    text = service.statement_text(target, actions=action or (), query_sql=new_sql,
                                  keep_source=keep_source, params=with_params or (),
                                  asynchronous=background)
    with session(common.target(dsn)) as conn:
        if background:
            job_id = service.submit(conn, text)
            _out(as_json, {"job": job_id}, str(job_id))
            return
        job_id, status = service.run_here(conn, text)
        rows = service.progress(conn, job_id)
        error = service.job_error(conn, job_id) if status.value != "ok" else None
    if as_json:
        sys.stdout.write(json.dumps({"job": job_id, "status": status.value, "steps": [
            dict(zip(PROGRESS_COLUMNS, map(_plain, r), strict=True)) for r in rows]}) + "\n")
    else:
        _print_progress(rows, False)
        ended = status.job_status.value if status.job_status else status.value
        common.out.print(f"rebuild {job_id}: {ended}")
    if error:
        common.err.print(f"[red]error:[/] rebuild {job_id} {status.value}: {escape(error)}")
    raise typer.Exit(REBUILD_EXIT[status.value])


def _plain(value: object) -> object:
    return value.isoformat() if hasattr(value, "isoformat") else value


def _out(as_json: bool, data: dict[str, object], line: str) -> None:
    sys.stdout.write((json.dumps(data) if as_json else line) + "\n")


def _print_progress(rows: list[tuple[object, ...]], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps([dict(zip(PROGRESS_COLUMNS, map(_plain, r), strict=True))
                                     for r in rows]) + "\n")
        return
    from rich.table import Table

    table = Table("step", "status", "progress", "message", box=None)
    for r in rows:
        table.add_row(escape(str(r[2])), escape(str(r[3] or "")), escape(str(r[4])),
                      escape(str(r[8] or "")))
    common.out.print(table)
