"""``mvgraph sql``: run SQL; GaussDB REFRESH forms and mvgraph's job statements go through
mvgraph, everything else to PostgreSQL as is."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from mvgraph.commands import common
from mvgraph.commands.options import DsnOpt, JsonOpt, SearchPathOpt
from mvgraph.commands.render import escape, one_line
from mvgraph.errors import MvgraphError, UsageError


def sql_cmd(
    statement: Annotated[str | None, typer.Argument(help="SQL to run (or use -f FILE).")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="A script file ('-': stdin).")]
    = None,
    parallel: Annotated[int, typer.Option("--parallel", "-j", min=1)] = 1,
    as_json: JsonOpt = False,
    search_path: SearchPathOpt = None,
    encoding: Annotated[str, typer.Option("--encoding", help="Encoding of --file, e.g. latin-1.")]
    = "utf-8",
    background: Annotated[bool, typer.Option(
        "--background", help="Queue each statement as a job (a worker runs it); print the "
                             "job ids.")] = False,
    dsn: DsnOpt = None,
) -> None:
    """Run SQL: GaussDB REFRESH forms go through mvgraph, everything else to PostgreSQL as is;
    SET BACKGROUND_DDL, SHOW JOBS, CANCEL JOBS, SUSPEND [JOB] and RESUME [JOB] are mvgraph's."""
    from mvgraph.frontend import execute_script
    from mvgraph.pgvalues import json_value
    from mvgraph.refresh.service import session, submit_session

    if (statement is None) == (file is None):
        raise UsageError("give one SQL statement or --file FILE")
    if file is not None:
        text = sys.stdin.read() if str(file) == "-" else _read(file, encoding)
        source = str(file)
    else:
        text, source = statement or "", "<command line>"
    results = []
    failed: str | None = None
    done: list[int] = []  # the lines of the statements that ended
    opener = submit_session if background else session
    try:
        with opener(common.target(dsn)) as conn:
            for outcome in execute_script(conn, text, source=source,
                                          search_path=common.search_path(search_path),
                                          parallel=parallel, background=background):
                done.append(outcome.line)
                if as_json:
                    results.append({"line": outcome.line, "status": outcome.status,
                                    "columns": outcome.columns,
                                    "rows": [[json_value(v) for v in r] for r in outcome.rows],
                                    "refresh": outcome.report.to_dict() if outcome.report
                                    else None, "job": outcome.job, "notices": outcome.notices})
                else:
                    _print_outcome(outcome)
                if outcome.report is not None and outcome.report.status != "ok":
                    failed = outcome.report.status
                    break
    except KeyboardInterrupt:
        what = _interrupted(text, source, done, background)
        common.err.print(f"[red]interrupted:[/] {escape(one_line(what))}")
        raise typer.Exit(130) from None
    if as_json:
        sys.stdout.write(json.dumps(results, indent=2, default=str) + "\n")
    if failed:
        raise typer.Exit(130 if failed == "cancelled" else 1)


def _print_outcome(outcome: Any) -> None:
    """One statement's outcome for people: a job id, a refresh table, rows as psql shows
    them, or the command tag."""
    from mvgraph.commands.render import psql_text, report_table

    for note in outcome.notices:
        common.err.print(f"notice: {escape(note)}")
    if outcome.job is not None:
        sys.stdout.write(f"{outcome.job}\n")
    elif outcome.report is not None:
        common.out.print(report_table(outcome.report))
    elif outcome.columns:
        common.out.print(escape(psql_text(outcome.columns, outcome.rows, outcome.texts)) + "\n")
    else:
        common.out.print(escape(outcome.status))


def _interrupted(text: str, source: str, done: list[int], background: bool) -> str:
    """What Ctrl-C stopped: the statement running (cancelled on the server), and what stays."""
    from mvgraph.commands.render import short
    from mvgraph.sql.dialect import split_statements

    try:
        statements = split_statements(text)
    except MvgraphError:
        statements = []
    last = done[-1] if done else 0
    pending = statements[len(done):]  # one outcome per statement, in order
    kept = (f"; the {len(done)} statement{'' if len(done) == 1 else 's'} before it "
            + ("stay queued as jobs" if background else "completed and stay")) if done else ""
    if not pending:
        return f"stopped after {source}:{last}{kept}"
    line, stmt = pending[0]
    verb = "stopped queueing" if background else "cancelled"
    rest = len(pending) - 1
    return (f"{verb} {source}:{line} ({short(stmt, 60)}){kept}"
            + (f"; {rest} later statement{'' if rest == 1 else 's'} not run" if rest else ""))


def _read(path: Path, encoding: str) -> str:
    from mvgraph.sql.sqlfiles import check_encoding, decode_sql

    check_encoding(encoding)
    try:
        return decode_sql(path.read_bytes(), str(path), encoding)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}; check the path") from None
