"""The ``mvgraph`` command line: the typer app. It takes the options every command shares,
mounts the commands and command groups of :mod:`mvgraph.commands` (each a few lines that call
the library and render its result), and turns errors into exit codes and one-line messages.

Exit codes (the README's table): 0 success; 1 an error (the database refused, a step failed, a
SQL file failed to load, ``check`` found a difference); 2 usage error; 3 internal error; 4 no
such object (unknown name, a selector matching nothing, a relation of the wrong kind);
130 interrupted or cancelled.

Start-up: this module and the commands' modules import typer and mvgraph's light modules only;
each command imports what it uses (psycopg, networkx, sqlglot, rich), so ``--help`` loads none
of them. The commands never import this module (they read the global options through
:mod:`mvgraph.commands.common`).
"""

from __future__ import annotations

import io
import logging
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer

from mvgraph.commands import (
    common,
    config,
    configfile,
    daemon,
    embedded,
    graph,
    jobs,
    rebuild,
    refresh,
    schedule,
    security,
    settings,
    sql,
    web,
)
from mvgraph.commands.options import DsnOpt, SearchPathOpt
from mvgraph.commands.render import escape, one_line
from mvgraph.db import embedded as embedded_server
from mvgraph.db.connect import redact, resolve_dsn
from mvgraph.errors import MvgraphError, SqlLoadErrors
from mvgraph.redaction import ScrubFilter, scrub
from mvgraph.version import __version__

app = typer.Typer(
    name="mvgraph",
    help="Keep PostgreSQL materialized views fresh.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,  # locals hold DSNs: never print them
    add_completion=False,
    rich_markup_mode=None,
)

# The commands, in the order ``mvgraph --help`` lists them (typer lists groups last).
app.command("grant")(security.grant_cmd)
app.command("revoke")(security.revoke_cmd)
app.command("graph")(graph.graph)
app.command("deps")(graph.deps)
app.command("check")(graph.check)
app.command("plan")(refresh.plan_cmd)
app.command("refresh")(refresh.refresh_cmd)
app.command("track")(refresh.track)
app.command("untrack")(refresh.untrack)
app.command("status")(refresh.status_cmd)
app.command("configure")(refresh.configure)
app.command("sql")(sql.sql_cmd)
app.command("settings", context_settings={"ignore_unknown_options": True},
            help=settings.SETTINGS_HELP)(settings.settings_cmd)
app.command("worker")(jobs.worker)
app.command("job", options_metavar="[OPTIONS]")(jobs.job_cmd)
app.command("wait")(jobs.wait_cmd)
app.command("cancel")(jobs.cancel_cmd)
app.command("suspend")(jobs.suspend_cmd)
app.command("resume")(jobs.resume_cmd)
app.command("rebuild")(rebuild.rebuild_cmd)
app.command("web")(web.web_cmd)
app.command("init")(settings.init)
app.command("demo")(embedded.demo)
app.add_typer(embedded.embedded_app, name="embedded")
app.add_typer(jobs.jobs_app, name="jobs")
app.add_typer(schedule.schedule_app, name="schedule")
app.add_typer(daemon.daemon_app, name="daemon")
app.add_typer(config.config_app, name="config")


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"mvgraph {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _main(
    ctx: typer.Context,
    config_file: Annotated[Path | None, typer.Option(
        "--config", envvar=configfile.CONFIG_ENV, is_eager=True, callback=configfile.load,
        metavar="FILE", show_default=False,
        help="Configuration file (TOML). Default: ./mvgraph.toml, else [tool.mvgraph] in "
             "./pyproject.toml. Command-line options override the environment's MVGRAPH_* "
             "variables, which override the file. See `mvgraph config show`.")] = None,
    dsn: DsnOpt = None,
    use_embedded: Annotated[bool, typer.Option("--embedded", help="Use the embedded server.")]
    = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    search_path: SearchPathOpt = None,
    version: Annotated[bool, typer.Option("--version", help="Print the version.",
                                          is_eager=True, callback=_print_version)] = False,
) -> None:
    """Keep PostgreSQL materialized views fresh."""
    configfile.settle(ctx)
    state = common.state
    # --embedded stands for --dsn embedded: set in a weaker place than --dsn, it gives way
    embedded = use_embedded and configfile.rank(ctx, "use_embedded") <= configfile.rank(ctx, "dsn")
    state.dsn = embedded_server.EMBEDDED if embedded else dsn
    state.dsn_given = configfile.rank(ctx, "use_embedded" if embedded else "dsn") == 0
    state.debug = debug
    state.search_path = common.search_path(search_path) if search_path else ["public"]


class _WarningLine(logging.Handler):
    """The library's logged warnings as one ``warning:`` line each on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        common.err.print(f"[yellow]warning:[/] {escape(record.getMessage())}")


def _log_warnings() -> None:
    logger = logging.getLogger("mvgraph")
    if not any(isinstance(h, _WarningLine) for h in logger.handlers):
        handler = _WarningLine(logging.WARNING)
        handler.addFilter(ScrubFilter())
        logger.addHandler(handler)


#: click's error base class (typer vendors click from 0.22 on: found from a public subclass).
_ClickException: type[Any] = next(c for c in typer.BadParameter.__mro__
                                  if c.__name__ == "ClickException")


def command() -> Any:
    """The app as a click command, each setting's option showing its environment variable
    (``MVGRAPH_DAEMON_WORKERS``) in ``--help`` (the docs' CLI reference uses it too)."""
    root = typer.main.get_command(app)
    configfile.attach(root)
    return root


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code (tests call this; ``main`` exits with it).

    Every message it prints on stderr (errors, usage errors quoting an argument, tracebacks
    under --debug) goes through :func:`mvgraph.redaction.scrub`: no password gets out."""
    args = _global_flags_first(list(sys.argv[1:] if argv is None else argv))
    _log_warnings()
    common.state.debug = "--debug" in args  # until the options are read (debug = true, ...)
    try:  # not standalone: typer's usage errors come back here to be scrubbed and shown
        result = command().main(args=args, prog_name="mvgraph", standalone_mode=False)
        return result if isinstance(result, int) else 0  # typer.Exit's code, else success
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except _ClickException as exc:
        shown = io.StringIO()
        exc.show(file=shown)
        sys.stderr.write(scrub(shown.getvalue()))
        return int(exc.exit_code)
    except typer.Abort:
        common.err.print("[red]aborted[/]")
        return 1
    except KeyboardInterrupt:
        common.err.print("[red]interrupted[/]")
        return 130
    except MvgraphError as exc:
        if common.state.debug:
            sys.stderr.write(scrub(traceback.format_exc()))
        _print_error(exc)
        return exc.exit_code
    except Exception as exc:  # an mvgraph bug: short message unless --debug
        if common.state.debug:
            sys.stderr.write(scrub(traceback.format_exc()))
        common.err.print(f"[red]internal error:[/] "
                         f"{escape(one_line(scrub(f'{type(exc).__name__}: {exc}')))}; "
                         "rerun with --debug and report it")
        return 3


#: Flags of the main callback also accepted after the command (like each command's --dsn).
_GLOBAL_FLAGS = ("--embedded", "--debug")
#: Options of the main callback, with their value, also accepted after the command.
_GLOBAL_OPTIONS = ("--config",)


def _global_flags_first(args: list[str]) -> list[str]:
    """``mvgraph refresh mv5 --embedded`` as ``mvgraph --embedded refresh mv5``: the global
    flags, and ``--config FILE``, are moved to the front, up to a ``--`` (after which
    everything is an argument).

    >>> _global_flags_first(["plan", "mv5", "--embedded", "--", "--debug"])
    ['--embedded', 'plan', 'mv5', '--', '--debug']
    >>> _global_flags_first(["daemon", "--config", "/etc/mvgraph/mvgraph.toml", "-w", "2"])
    ['--config', '/etc/mvgraph/mvgraph.toml', 'daemon', '-w', '2']
    """
    end = args.index("--") if "--" in args else len(args)
    moved: list[str] = []
    kept: list[str] = []
    i = 0
    while i < end:
        arg = args[i]
        if arg in _GLOBAL_OPTIONS and i + 1 < end:
            moved += [arg, args[i + 1]]
            i += 1
        elif arg in _GLOBAL_FLAGS or arg.split("=", 1)[0] in _GLOBAL_OPTIONS:
            moved.append(arg)
        else:
            kept.append(arg)
        i += 1
    return moved + kept + args[end:]


def _print_error(exc: MvgraphError) -> None:
    """One red line: the message (SQL load failures: one per failure, then a hint), without
    passwords or control characters."""
    for line in exc.warnings if isinstance(exc, SqlLoadErrors) else []:
        common.err.print(f"[yellow]warning:[/] {escape(scrub(line))}")
    lines = [str(e) for e in exc.errors] if isinstance(exc, SqlLoadErrors) else [str(exc)]
    for line in lines:  # one line each: a name with a newline in it cannot split the message
        common.err.print(f"[red]error:[/] {escape(one_line(scrub(line)))}")
    if isinstance(exc, SqlLoadErrors):
        common.err.print(f"[red]error:[/] {common.failed_files(exc.errors)} of {exc.files} "
                         "files failed to load; fix them, or pass --keep-going to use the "
                         "others")


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())


__all__ = ["app", "command", "main", "redact", "resolve_dsn", "run"]
