"""MkDocs hooks: pages generated at build time, never written by hand.

* ``cli.md``: the CLI reference, from the typer app (``mvgraph.cli.command()``) through click's
  own help (the same text as ``mvgraph ... --help``), every command and group in order.
* ``benchmarks.md``: ``benchmarks/README.md`` (the measured tables live there, where
  ``python -m benchmarks.peers`` rewrites its table), with the images it shows.
* ``changelog.md``: ``CHANGELOG.md``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
WIDTH = 100


def _context(cmd: Any, name: str, parent: Any = None) -> Any:
    """A click context for ``cmd`` (typer may bring its own copy of click: its class is used)."""
    return cmd.context_class(cmd, info_name=name, parent=parent, terminal_width=WIDTH,
                             max_content_width=WIDTH)


def _commands(cmd: Any, ctx: Any) -> list[tuple[Any, Any]]:
    """``cmd`` and, for a group, every visible subcommand below it, depth first."""
    found = [(cmd, ctx)]
    if hasattr(cmd, "list_commands"):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            found += _commands(sub, _context(sub, name, ctx))
    return found


def cli_reference() -> str:
    """Markdown of every command's ``--help``."""
    from mvgraph.cli import command

    root = command()  # with the environment variables of the settings (mvgraph config show)
    ctx = _context(root, "mvgraph")
    out = ["# CLI reference", "",
           "Generated at build time from the typer app `mvgraph.cli:app`: each section is the "
           "command's `--help`. Exit codes are in "
           "[Operations](operations.md#exit-codes-and-errors).", ""]
    for cmd, cmd_ctx in _commands(root, ctx):
        path = cmd_ctx.command_path
        level = "#" * min(1 + max(path.count(" "), 1), 4)  # mvgraph x: ##, mvgraph x y: ###
        out += [f"{level} `{path}`", "", "```text", cmd.get_help(cmd_ctx).rstrip(), "```", ""]
    return "\n".join(out)


_IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


def on_files(files: Files, config: Any) -> Files:
    """Add the generated pages (and the benchmark charts) to the site."""
    files.append(File.generated(config, "cli.md", content=cli_reference()))
    bench = (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    files.append(File.generated(config, "benchmarks.md", content=bench))
    for image in _IMAGE.findall(bench):
        files.append(File.generated(config, image,
                                    abs_src_path=str(ROOT / "benchmarks" / image)))
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    files.append(File.generated(config, "changelog.md", content=changelog))
    return files
