"""The ``mvgraph`` command line: parse options, call one library function, render the result.

Exit codes (the README's table): 0 success; 1 an error (the database refused, a step failed, a
SQL file failed to load, ``check`` found a difference); 2 usage error; 3 internal error; 4 no
such object (unknown name, a selector matching nothing, a relation of the wrong kind);
130 interrupted or cancelled.

Start-up: this module imports typer and mvgraph's light modules only; each command imports what
it uses (psycopg, networkx, sqlglot, rich), so ``--help`` loads none of them.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import traceback
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from mvgraph.commands.daemon import daemon_app as _daemon_app
from mvgraph.commands.schedule import schedule_app as _schedule_app
from mvgraph.commands.security import grant_cmd as _grant_cmd
from mvgraph.commands.security import revoke_cmd as _revoke_cmd
from mvgraph.db import embedded
from mvgraph.db.connect import redact, resolve_dsn
from mvgraph.errors import MvgraphError, SqlLoadErrors, SqlParseError, UnknownRelation, UsageError
from mvgraph.model.definitions import Kind
from mvgraph.redaction import ScrubFilter, scrub
from mvgraph.render import escape, one_line
from mvgraph.settingkeys import help_list
from mvgraph.version import __version__

if TYPE_CHECKING:
    import psycopg
    from rich.console import Console

    from mvgraph.graph import MVGraph

app = typer.Typer(
    name="mvgraph",
    help="Keep PostgreSQL materialized views fresh.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,  # locals hold DSNs: never print them
    add_completion=False,
    rich_markup_mode=None,
)
embedded_app = typer.Typer(help="The embedded PostgreSQL server (DSN 'embedded').",
                           no_args_is_help=True, rich_markup_mode=None)
app.add_typer(embedded_app, name="embedded")
jobs_app = typer.Typer(help="Jobs: every run, foreground or background.",
                       rich_markup_mode=None)
app.add_typer(jobs_app, name="jobs")
app.add_typer(_schedule_app, name="schedule")
app.add_typer(_daemon_app, name="daemon")
app.command("grant")(_grant_cmd)
app.command("revoke")(_revoke_cmd)



class _LazyConsole:
    """Stands in for a rich Console until first used, then puts the real one in its place."""

    def __init__(self, name: str, stderr: bool) -> None:
        self._name, self._stderr = name, stderr

    def __getattr__(self, attr: str) -> Any:
        from rich.console import Console

        console = Console(stderr=self._stderr, highlight=False, soft_wrap=True)
        globals()[self._name] = console
        return getattr(console, attr)


def _real_console(name: str) -> Console:
    """The Console itself, not its stand-in (rich's Live keeps the object it is given)."""
    _ = globals()[name].width  # the first use puts the real Console in place
    return cast("Console", globals()[name])


out = cast("Console", _LazyConsole("out", stderr=False))
err = cast("Console", _LazyConsole("err", stderr=True))


@dataclass
class State:
    """Global options, set by the callback and read by each command."""

    dsn: str | None = None
    debug: bool = False
    search_path: list[str] = field(default_factory=lambda: ["public"])


state = State()


class Format(StrEnum):
    """Output formats of graph-shaped results."""

    tree = "tree"
    json = "json"
    dot = "dot"
    mermaid = "mermaid"


DsnOpt = Annotated[str | None, typer.Option(
    "--dsn", help="PostgreSQL DSN, or 'embedded' (also --embedded, before or after the "
                  "command). Default: $MVGRAPH_DSN, then $DATABASE_URL, then libpq's PG* "
                  "variables and defaults.", show_default=False)]
FromSqlOpt = Annotated[list[Path] | None, typer.Option(
    "--from-sql", help="SQL files or folders to read instead of the database ('-' is stdin); "
                       "with --dsn or --embedded, that server resolves the views sqlglot "
                       "cannot parse.")]
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="Output format.")]
SchemaOpt = Annotated[list[str] | None, typer.Option("--schema", help="Only these schemas.")]
StrictOpt = Annotated[bool, typer.Option("--strict", help="Undefined references are errors.")]
SearchPathOpt = Annotated[str | None, typer.Option(
    "--search-path", help="Comma-separated search_path for bare names (default public).")]
EncodingOpt = Annotated[str, typer.Option(
    "--encoding", help="Encoding of the --from-sql files, e.g. latin-1 (a UTF-8 BOM is dropped).")]
KeepGoingOpt = Annotated[bool, typer.Option(
    "--keep-going", help="Use the --from-sql files that load; list the failures on stderr and "
                         "exit 1.")]


def _search_path(value: str | None) -> list[str]:
    if value:
        return [p.strip() for p in value.split(",") if p.strip()]
    return state.search_path


def _dsn(local: str | None) -> str | None:
    return local or state.dsn


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"mvgraph {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _main(
    dsn: DsnOpt = None,
    use_embedded: Annotated[bool, typer.Option("--embedded", help="Use the embedded server.")]
    = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    search_path: SearchPathOpt = None,
    version: Annotated[bool, typer.Option("--version", help="Print the version.",
                                          is_eager=True, callback=_print_version)] = False,
) -> None:
    """Keep PostgreSQL materialized views fresh."""
    state.dsn = embedded.EMBEDDED if use_embedded else dsn
    state.debug = debug
    state.search_path = _search_path(search_path) if search_path else ["public"]


def _load(from_sql: list[Path] | None, dsn: str | None, schemas: list[str] | None,
          strict: bool, search_path: str | None, *, encoding: str = "utf-8",
          keep_going: bool = False,
          resolve_with: str | psycopg.Connection[tuple[object, ...]] | None = None) -> MVGraph:
    """The graph of the SQL files (a server given by --dsn or --embedded resolves what sqlglot
    cannot parse), else of the database."""
    from mvgraph.api import load_graph

    if from_sql:
        return load_graph(sql=from_sql, search_path=_search_path(search_path),
                          schemas=schemas or None, strict=strict, encoding=encoding,
                          keep_going=keep_going,
                          resolve_with=resolve_with if resolve_with is not None else _dsn(dsn))
    return load_graph(dsn=_dsn(dsn), schemas=schemas or None, strict=strict)


def _failed_files(errors: list[SqlParseError]) -> int:
    return len({e.path for e in errors})


def _report_load_errors(graph: MVGraph) -> bool:
    """Print the failures left out under --keep-going; True when there were any."""
    for error in graph.load_errors:
        err.print(f"[red]error:[/] {escape(str(error))}")
    if graph.load_errors:
        err.print(f"[red]error:[/] {len(graph.load_errors)} failures in "
                  f"{_failed_files(graph.load_errors)} files left out; fix them")
    return bool(graph.load_errors)


def _warn(graph: MVGraph) -> None:
    for line in graph.warnings:
        err.print(f"[yellow]warning:[/] {escape(line)}")


def _emit(graph: MVGraph, fmt: Format, title: str) -> None:
    if fmt is Format.json:
        sys.stdout.write(graph.to_json() + "\n")
    elif fmt is Format.dot:
        sys.stdout.write(graph.to_dot())
    elif fmt is Format.mermaid:
        sys.stdout.write(graph.to_mermaid())
    else:
        from mvgraph.render import graph_tree

        out.print(graph_tree(graph, title), soft_wrap=False)  # long lines wrap, never cut


@app.command()
def graph(
    from_sql: FromSqlOpt = None,
    fmt: FormatOpt = Format.tree,
    select: Annotated[str | None, typer.Option("--select", "-s",
                                               help="dbt-style selector, e.g. '+mv5+'.")] = None,
    schema: SchemaOpt = None,
    strict: StrictOpt = False,
    search_path: SearchPathOpt = None,
    encoding: EncodingOpt = "utf-8",
    keep_going: KeepGoingOpt = False,
    dsn: DsnOpt = None,
) -> None:
    """Show the dependency graph of the database, or of SQL files."""
    loaded = _load(from_sql, dsn, schema, strict, search_path, encoding=encoding,
                   keep_going=keep_going)
    _warn(loaded)
    g = loaded
    if select:
        chosen = g.select(select, _search_path(search_path))
        if not chosen:
            raise UnknownRelation(f"selector {select!r} matches nothing in the graph; check the "
                                  "names with `mvgraph graph`")
        g = g.subgraph(chosen)
    if from_sql and fmt is Format.tree and loaded.ignored_statements:
        err.print(f"[dim]{loaded.ignored_statements} other statements ignored[/]")
    _emit(g, fmt, "SQL files" if from_sql else "database")
    if _report_load_errors(loaded):
        raise typer.Exit(1)


@app.command()
def deps(
    name: Annotated[str, typer.Argument(help="The relation, e.g. mv5 or marts.orders.")],
    up: Annotated[bool, typer.Option("--up", help="Only what it reads.")] = False,
    down: Annotated[bool, typer.Option("--down", help="Only what reads it.")] = False,
    from_sql: FromSqlOpt = None,
    fmt: FormatOpt = Format.tree,
    search_path: SearchPathOpt = None,
    encoding: EncodingOpt = "utf-8",
    keep_going: KeepGoingOpt = False,
    dsn: DsnOpt = None,
) -> None:
    """Show what a relation reads and what reads it."""
    g = _load(from_sql, dsn, None, False, search_path, encoding=encoding, keep_going=keep_going)
    _warn(g)
    node = g.resolve(name, _search_path(search_path))
    both = not up and not down
    if up or both:
        g.require_acyclic([node])
    if fmt is Format.tree:
        from mvgraph.render import deps_tree

        out.print(deps_tree(g, node, up or both, down or both), soft_wrap=False)
    else:
        nodes = {node}
        if up or both:
            nodes |= g.upstream(node)
        if down or both:
            nodes |= g.downstream(node)
        _emit(g.subgraph(nodes), fmt, str(node))
    if _report_load_errors(g):
        raise typer.Exit(1)


@app.command()
def check(
    from_sql: FromSqlOpt = None,
    schema: SchemaOpt = None,
    search_path: SearchPathOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    encoding: EncodingOpt = "utf-8",
    keep_going: KeepGoingOpt = False,
    dsn: DsnOpt = None,
) -> None:
    """Compare SQL files with the database; exit 1 when anything differs."""
    from mvgraph.api import load_graph
    from mvgraph.db.connect import connect
    from mvgraph.graph import diff

    if not from_sql:
        raise UsageError("check needs --from-sql PATH to compare with the database")
    with connect(_dsn(dsn)) as conn:
        files = _load(from_sql, None, schema, False, search_path, encoding=encoding,
                      keep_going=keep_going, resolve_with=conn)
        schemas = schema or sorted({n.schema for n in files.nodes()
                                    if files.kind(n) is not Kind.EXTERNAL})
        db = load_graph(conn=conn, schemas=schemas)
    result = diff(files, db)
    if as_json:
        sys.stdout.write(json.dumps({"equal": result.empty, **result.to_dict()}, indent=2) + "\n")
    elif result.empty:
        out.print(f"[green]in sync:[/] {len(files)} relations, "
                  f"{files.number_of_edges()} dependencies match")
    else:
        for line in result.lines():
            out.print(f"[red]-[/] {escape(line)}")
    if _report_load_errors(files) or not result.empty:
        raise typer.Exit(1)


BehaviorOpt = Annotated[str | None, typer.Option(
    "--cascade", help="forward, backward or all (default: the view alone).")]
RestrictOpt = Annotated[bool, typer.Option("--restrict",
                                           help="Refresh the view alone, unconditionally.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
TargetsArg = Annotated[list[str], typer.Argument(help="Views or dbt selectors (+mv5+).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Refresh every step.")]


def _behavior(cascade: str | None, restrict: bool) -> str:
    if cascade and restrict:
        raise UsageError("--cascade and --restrict exclude each other; pick one")
    if restrict:
        return "restrict"
    if cascade:
        from mvgraph.refresh.behavior import RefreshBehavior

        word = cascade if cascade.lower().startswith("cascade") else f"cascade {cascade}"
        return RefreshBehavior.parse(word).value
    return "default"


@app.command("plan")
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
    from mvgraph.render_refresh import plan_table

    p = mvgraph.plan(resolve_dsn(_dsn(dsn)), targets, _behavior(cascade, restrict), force=force,
                     search_path=_search_path(search_path))
    if as_json:
        sys.stdout.write(json.dumps(p.to_dict(), indent=2) + "\n")
    else:
        out.print(plan_table(p))


@app.command("refresh")
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

    behavior = _behavior(cascade, restrict)
    target = resolve_dsn(_dsn(dsn))
    if dry_run:
        plan_cmd(targets, cascade, restrict, force, as_json, search_path, target)
        return
    kwargs = {"parallel": parallel, "atomic": atomic, "concurrently": concurrently,
              "lock_timeout": lock_timeout, "statement_timeout": statement_timeout,
              "force": force, "search_path": _search_path(search_path)}
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
        from mvgraph.render_refresh import LiveProgress, report_table

        if not out.is_terminal:
            report = mvgraph.refresh(target, targets, behavior,
                                     **kwargs)  # type: ignore[arg-type]
        else:
            with LiveProgress(out, 0) as live:
                report = mvgraph.refresh(target, targets, behavior, listener=live,
                                         **kwargs)  # type: ignore[arg-type]
        out.print(report_table(report))
    if report.status == "suspended" and not as_json:
        err.print(f"job {report.job_id} suspended; `mvgraph resume {report.job_id}` queues the "
                  "rest for a worker")
    if report.status != "ok":
        raise typer.Exit(130 if report.status in ("cancelled", "suspended") else 1)


@app.command()
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

    done = mvgraph.track(resolve_dsn(_dsn(dsn)), tables or [], every=every, mode=mode,
                         search_path=_search_path(search_path))
    for name in done:
        out.print(f"{escape(str(name))}: {mode}")
    if not done:
        out.print("no base tables found upstream of any materialized view")


@app.command()
def untrack(
    tables: Annotated[list[str] | None, typer.Argument(help="Base tables.")] = None,
    every: Annotated[bool, typer.Option("--all", help="Every tracked table.")] = False,
    search_path: SearchPathOpt = None,
    dsn: DsnOpt = None,
) -> None:
    """Remove tracking (any mode; wal: its slot too); readers of the tables are then refreshed
    on every run, never skipped."""
    import mvgraph

    for name in mvgraph.untrack(resolve_dsn(_dsn(dsn)), tables or [], every=every,
                                search_path=_search_path(search_path)):
        out.print(f"{escape(str(name))}: untracked")


@app.command("status")
def status_cmd(as_json: JsonOpt = False, dsn: DsnOpt = None) -> None:
    """Freshness of every view; tracking mode of every base table."""
    import mvgraph
    from mvgraph.render_refresh import status_table

    st = mvgraph.status(resolve_dsn(_dsn(dsn)))
    if as_json:
        sys.stdout.write(json.dumps(st.to_dict(), indent=2) + "\n")
        return
    for table in status_table(st):
        out.print(table)
    for warning in st.warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}")


@app.command()
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

    mvgraph.configure(resolve_dsn(_dsn(dsn)), view, early_cutoff=early_cutoff,
                      volatile=volatile, search_path=_search_path(search_path))
    out.print(f"{escape(view)}: updated")


@app.command("sql")
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
    SET BACKGROUND_DDL, SHOW JOBS, CANCEL JOBS, SUSPEND JOB and RESUME JOB are mvgraph's."""
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
        with opener(resolve_dsn(_dsn(dsn))) as conn:
            for outcome in execute_script(conn, text, source=source,
                                          search_path=_search_path(search_path),
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
        err.print(f"[red]interrupted:[/] {escape(one_line(what))}")
        raise typer.Exit(130) from None
    if as_json:
        sys.stdout.write(json.dumps(results, indent=2, default=str) + "\n")
    if failed:
        raise typer.Exit(130 if failed == "cancelled" else 1)


def _print_outcome(outcome: Any) -> None:
    """One statement's outcome for people: a job id, a refresh table, rows as psql shows
    them, or the command tag."""
    from mvgraph.render_refresh import psql_text, report_table

    for note in outcome.notices:
        err.print(f"notice: {escape(note)}")
    if outcome.job is not None:
        sys.stdout.write(f"{outcome.job}\n")
    elif outcome.report is not None:
        out.print(report_table(outcome.report))
    elif outcome.columns:
        out.print(escape(psql_text(outcome.columns, outcome.rows, outcome.texts)) + "\n")
    else:
        out.print(escape(outcome.status))


def _interrupted(text: str, source: str, done: list[int], background: bool) -> str:
    """What Ctrl-C stopped: the statement running (cancelled on the server), and what stays."""
    from mvgraph.render_refresh import short
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


@app.command("settings", context_settings={"ignore_unknown_options": True},
             help="Show mvgraph's settings in the database (every key, with its default when "
                  "not set), show one, or set one. Keys: " + help_list() + ".")
def settings_cmd(
    key: Annotated[str | None, typer.Argument(
        help="Setting to show or change (alone: print its value).")] = None,
    value: Annotated[str | None, typer.Argument(help="Its new value.")] = None,
    as_json: JsonOpt = False,
    dsn: DsnOpt = None,
) -> None:
    from mvgraph.refresh.service import settings, stored_settings

    target = resolve_dsn(_dsn(dsn))
    current = settings(target, key, value)
    if as_json:
        sys.stdout.write(json.dumps(current, indent=2) + "\n")
    elif key is not None and value is None:
        sys.stdout.write(f"{current[key]}\n")
    else:
        stored = stored_settings(target) if key is None else set(current)
        for k, v in current.items():
            out.print(f"{k} = {escape(v)}" + ("" if k in stored else " [dim](default)[/]"))


@app.command()
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
    dsn: DsnOpt = None,
) -> None:
    """Run queued jobs until stopped (SIGTERM / Ctrl-C: finish running steps, requeue the
    rest). Each job runs logged in as the role that submitted it."""
    import logging

    from mvgraph.db.connect import check_before_start
    from mvgraph.jobs.worker import Worker, WorkerConfig
    from mvgraph.redaction import install

    target = resolve_dsn(_dsn(dsn))
    check_before_start(target)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(message)s")
    install(*logging.getLogger().handlers)  # psycopg's and others' records too
    Worker(WorkerConfig(target, concurrency, lease, heartbeat, poll, shutdown_timeout,
                        owner_dsn=owner_dsn)).run()


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
        _watch_jobs(resolve_dsn(_dsn(dsn)), every, watch_for)
        return
    import mvgraph
    from mvgraph.render_refresh import jobs_table

    found = mvgraph.list_jobs(resolve_dsn(_dsn(dsn)), every=every)
    if as_json:
        sys.stdout.write(json.dumps([j.to_dict() for j in found], indent=2) + "\n")
    else:
        out.print(jobs_table(found, out.width))


WATCH_EVERY_S = 0.5


def _watch_jobs(target: str, every: bool, seconds: float | None) -> None:
    """Redraw the jobs from the database every WATCH_EVERY_S until Ctrl-C (or ``seconds``)."""
    import time

    from rich.live import Live

    from mvgraph.jobs import store
    from mvgraph.jobs.handle import session
    from mvgraph.render_refresh import JobsWatch

    view = JobsWatch()
    console = _real_console("out")
    end = None if seconds is None else time.monotonic() + seconds
    try:
        with session(target, application_name="mvgraph jobs --watch") as conn:
            store.reap(conn)
            with Live(view.frame(store.jobs(conn, every)), console=console, auto_refresh=False,
                      transient=False) as live:
                polls = 0
                while end is None or time.monotonic() < end:
                    time.sleep(WATCH_EVERY_S if end is None
                               else max(0.0, min(WATCH_EVERY_S, end - time.monotonic())))
                    polls += 1
                    if polls % 20 == 0:  # every 10 s: close jobs whose owner died
                        store.reap(conn)
                    live.update(view.frame(store.jobs(conn, every)), refresh=True)
    except KeyboardInterrupt:  # Ctrl-C is how a watch ends: not an error
        pass


@jobs_app.command("prune")
def jobs_prune(
    older_than: Annotated[int | None, typer.Option(
        "--older-than", help="Days (default: the retention_days setting).")] = None,
    dsn: DsnOpt = None,
) -> None:
    """Delete finished jobs older than the retention (and close jobs whose owner died)."""
    import mvgraph

    n = mvgraph.prune_jobs(resolve_dsn(_dsn(dsn)), older_than_days=older_than)
    out.print(f"pruned {n} job{'' if n == 1 else 's'}")


JobIdArg = Annotated[int, typer.Argument(metavar="ID", help="The job id (see mvgraph jobs).")]


@app.command("job", options_metavar="[OPTIONS]")
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
    with session(resolve_dsn(_dsn(dsn))) as conn:
        store.reap(conn)
        info = store.job_info(conn, int(job))
        steps = store.steps(conn, info.id)
    if as_json:
        sys.stdout.write(json.dumps({**info.to_dict(), "steps": [s.to_dict() for s in steps]},
                                    indent=2) + "\n")
        return
    from mvgraph.render_refresh import job_header, steps_table

    out.print(job_header(info))
    if steps:
        out.print(steps_table(steps))
    else:
        out.print("no steps yet: a worker plans a job submitted from SQL when it takes it")


#: ``mvgraph wait``'s own exit codes (the issue's; 3 is not an internal error here).
WAIT_EXIT = {"done": 0, "failed": 1, "cancelled": 3}


@app.command("wait")
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
    from mvgraph.render_refresh import seconds_text

    def suspended(info: Any) -> None:
        err.print(f"[yellow]job {job} is suspended[/]; still waiting: `mvgraph resume {job}` "
                  "continues it")

    with session(resolve_dsn(_dsn(dsn))) as conn:
        info = wait_for(conn, job, timeout, on_suspended=suspended)
    line = (f"job {job} {info.status.value}: {info.done_steps}/{info.total_steps} steps in "
            f"{seconds_text(info.elapsed_s, '0s')}" + (f": {info.error}" if info.error else ""))
    sys.stdout.write(line + "\n")
    raise typer.Exit(WAIT_EXIT[info.status.value])


def _print_job_result(job: int, as_json: bool, dsn: str | None) -> None:
    """``mvgraph job result ID``: status, error, and for a background statement its command
    tag, notices and first rows (as mvgraph.job_result(id))."""
    import mvgraph
    from mvgraph.render_refresh import psql_text

    found = mvgraph.job_result(job, dsn=resolve_dsn(_dsn(dsn)))
    if as_json:
        sys.stdout.write(json.dumps(found, indent=2, default=str) + "\n")
        return
    result = found.get("result") or {}
    for notice in result.get("notices") or ():
        out.print(escape(str(notice)))
    if result.get("columns"):
        rows = [tuple(r) for r in result.get("rows") or ()]
        out.print(escape(psql_text(result["columns"], rows)))
        if result.get("truncated"):
            out.print(f"(first {len(rows)} of {result.get('row_count')} rows kept)")
    line = f"job {job}: {found['status']}"
    if result.get("tags"):  # a job of several statements: each one's tag
        line += f" ({'; '.join(str(t) for t in result['tags'])})"
    elif result.get("tag"):
        line += f" ({result['tag']})"
    if found.get("error"):
        line += f": {found['error']}"
    out.print(escape(line))


@app.command("cancel")
def cancel_cmd(job: JobIdArg, dsn: DsnOpt = None) -> None:
    """Cancel a job: its running statement at once, its remaining steps never start."""
    from mvgraph.jobs import store
    from mvgraph.jobs.handle import session

    with session(resolve_dsn(_dsn(dsn))) as conn:
        sys.stdout.write(f"job {job}: {store.cancel(conn, job)}\n")


@app.command("suspend")
def suspend_cmd(job: JobIdArg, dsn: DsnOpt = None) -> None:
    """Suspend a job after its running steps (resume continues it)."""
    import mvgraph

    out.print(f"job {job}: {mvgraph.suspend_job(job, dsn=resolve_dsn(_dsn(dsn)))}")


@app.command("resume")
def resume_cmd(job: JobIdArg, dsn: DsnOpt = None) -> None:
    """Queue a suspended job again; a worker continues from its next unfinished step."""
    import mvgraph

    out.print(f"job {job}: {mvgraph.resume_job(job, dsn=resolve_dsn(_dsn(dsn)))}")


@app.command()
def init(dsn: DsnOpt = None) -> None:
    """Install or upgrade mvgraph's schema and, as a superuser, its event triggers: the only
    command that creates anything of mvgraph's (the others check and say to run it)."""
    from mvgraph.db.connect import connect
    from mvgraph.db.install import init as install

    with connect(_dsn(dsn)) as conn:
        report = install(conn)
    for m in report.applied:
        out.print(f"applied migration {m.version:04d} {m.name}")
    if not report.applied:
        out.print(f"mvgraph schema is up to date (version {report.version})")
    if report.triggers_installed:
        out.print(f"installed event triggers {', '.join(report.triggers_installed)}")
    warning = report.trigger_warning()
    if warning:
        err.print(f"[yellow]warning:[/] {escape(warning)}")


@embedded_app.command("status")
def embedded_status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Whether the embedded server runs, and where its data lives."""
    s = embedded.status()
    if as_json:
        sys.stdout.write(json.dumps({"running": s.running, "data_dir": str(s.data_dir),
                                     "uri": s.uri, "pid": s.pid}) + "\n")
    else:
        word = "[green]running[/]" if s.running else "[yellow]stopped[/]"
        out.print(f"embedded PostgreSQL {word}; data in {s.data_dir}"
                  + (f"; pid {s.pid}; {s.uri}" if s.running else ""))


@embedded_app.command("stop")
def embedded_stop() -> None:
    """Stop the embedded server."""
    out.print("stopped" if embedded.stop() else "was not running")


@embedded_app.command("uri")
def embedded_uri() -> None:
    """Start the embedded server if needed and print its URI."""
    sys.stdout.write(embedded.start() + "\n")


@app.command()
def demo(
    keep: Annotated[bool, typer.Option("--keep/--no-keep",
                                       help="Keep the demo database afterwards.")] = True,
    sql_dir: Annotated[bool, typer.Option(
        "--sql-dir", help="Print the folder of the demo's SQL files and exit.")] = False,
) -> None:
    """Load example schemas into the embedded server's database mvgraph_demo (replacing it) and
    show what mvgraph sees; afterwards --embedded connects to it."""
    from mvgraph.demo import examples_dir, run_demo

    if sql_dir:
        sys.stdout.write(f"{examples_dir()}\n")
        return
    run_demo(out, keep=keep)


class _WarningLine(logging.Handler):
    """The library's logged warnings as one ``warning:`` line each on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        err.print(f"[yellow]warning:[/] {escape(record.getMessage())}")


def _log_warnings() -> None:
    logger = logging.getLogger("mvgraph")
    if not any(isinstance(h, _WarningLine) for h in logger.handlers):
        handler = _WarningLine(logging.WARNING)
        handler.addFilter(ScrubFilter())
        logger.addHandler(handler)


#: click's error base class (typer vendors click from 0.22 on: found from a public subclass).
_ClickException: type[Any] = next(c for c in typer.BadParameter.__mro__
                                  if c.__name__ == "ClickException")


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (tests call this; ``main`` exits with it).

    Every message it prints on stderr (errors, usage errors quoting an argument, tracebacks
    under --debug) goes through :func:`mvgraph.redaction.scrub`: no password gets out."""
    args = _global_flags_first(list(sys.argv[1:] if argv is None else argv))
    _log_warnings()
    debug = "--debug" in args
    try:  # not standalone: typer's usage errors come back here to be scrubbed and shown
        result = app(args=args, prog_name="mvgraph", standalone_mode=False)
        return result if isinstance(result, int) else 0  # typer.Exit's code, else success
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except _ClickException as exc:
        shown = io.StringIO()
        exc.show(file=shown)
        sys.stderr.write(scrub(shown.getvalue()))
        return int(exc.exit_code)
    except typer.Abort:
        err.print("[red]aborted[/]")
        return 1
    except KeyboardInterrupt:
        err.print("[red]interrupted[/]")
        return 130
    except MvgraphError as exc:
        if debug:
            sys.stderr.write(scrub(traceback.format_exc()))
        _print_error(exc)
        return exc.exit_code
    except Exception as exc:  # an mvgraph bug: short message unless --debug
        if debug:
            sys.stderr.write(scrub(traceback.format_exc()))
        err.print(f"[red]internal error:[/] "
                  f"{escape(one_line(scrub(f'{type(exc).__name__}: {exc}')))}; "
                  "rerun with --debug and report it")
        return 3


#: Flags of the main callback also accepted after the command (like each command's --dsn).
_GLOBAL_FLAGS = ("--embedded", "--debug")


def _global_flags_first(args: list[str]) -> list[str]:
    """``mvgraph refresh mv5 --embedded`` as ``mvgraph --embedded refresh mv5``: the global
    flags are moved to the front, up to a ``--`` (after which everything is an argument).

    >>> _global_flags_first(["plan", "mv5", "--embedded", "--", "--debug"])
    ['--embedded', 'plan', 'mv5', '--', '--debug']
    """
    end = args.index("--") if "--" in args else len(args)
    moved = [a for a in args[:end] if a in _GLOBAL_FLAGS]
    return moved + [a for a in args[:end] if a not in _GLOBAL_FLAGS] + args[end:]


def _print_error(exc: MvgraphError) -> None:
    """One red line: the message (SQL load failures: one per failure, then a hint), without
    passwords or control characters."""
    for line in exc.warnings if isinstance(exc, SqlLoadErrors) else []:
        err.print(f"[yellow]warning:[/] {escape(scrub(line))}")
    lines = [str(e) for e in exc.errors] if isinstance(exc, SqlLoadErrors) else [str(exc)]
    for line in lines:  # one line each: a name with a newline in it cannot split the message
        err.print(f"[red]error:[/] {escape(one_line(scrub(line)))}")
    if isinstance(exc, SqlLoadErrors):
        err.print(f"[red]error:[/] {_failed_files(exc.errors)} of {exc.files} files failed to "
                  "load; fix them, or pass --keep-going to use the others")


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())


__all__ = ["app", "main", "redact", "resolve_dsn", "run"]
