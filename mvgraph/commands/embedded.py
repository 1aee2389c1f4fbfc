"""``mvgraph embedded status | stop | uri``: the embedded PostgreSQL server; ``mvgraph demo``:
example schemas loaded into it."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from mvgraph.commands import common
from mvgraph.commands.options import JsonOpt
from mvgraph.db import embedded

embedded_app = typer.Typer(help="The embedded PostgreSQL server (DSN 'embedded').",
                           no_args_is_help=True, rich_markup_mode=None)


@embedded_app.command("status")
def embedded_status(
    as_json: JsonOpt = False,
) -> None:
    """Whether the embedded server runs, and where its data lives."""
    s = embedded.status()
    if as_json:
        sys.stdout.write(json.dumps({"running": s.running, "data_dir": str(s.data_dir),
                                     "uri": s.uri, "pid": s.pid}) + "\n")
    else:
        word = "[green]running[/]" if s.running else "[yellow]stopped[/]"
        common.out.print(f"embedded PostgreSQL {word}; data in {s.data_dir}"
                         + (f"; pid {s.pid}; {s.uri}" if s.running else ""))


@embedded_app.command("stop")
def embedded_stop() -> None:
    """Stop the embedded server."""
    common.out.print("stopped" if embedded.stop() else "was not running")


@embedded_app.command("uri")
def embedded_uri() -> None:
    """Start the embedded server if needed and print its URI."""
    sys.stdout.write(embedded.start() + "\n")


def demo(
    keep: Annotated[bool, typer.Option("--keep/--no-keep",
                                       help="Keep the demo database afterwards.")] = True,
    sql_dir: Annotated[bool, typer.Option(
        "--sql-dir", help="Print the folder of the demo's SQL files and exit.")] = False,
) -> None:
    """Load example schemas into the embedded server's database mvgraph_demo (replacing it) and
    show what mvgraph sees; afterwards --embedded connects to it."""
    from mvgraph.commands.demo import examples_dir, run_demo

    if sql_dir:
        sys.stdout.write(f"{examples_dir()}\n")
        return
    run_demo(common.out, keep=keep)
