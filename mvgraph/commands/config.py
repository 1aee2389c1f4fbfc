"""``mvgraph config show``: every setting of the configuration (:mod:`.configfile`) with its
effective value and where it came from."""

from __future__ import annotations

import json
import sys

import typer

from mvgraph.commands import configfile
from mvgraph.commands.options import JsonOpt

config_app = typer.Typer(
    help="The configuration: mvgraph.toml (or --config FILE, $MVGRAPH_CONFIG, [tool.mvgraph] "
         "in pyproject.toml) and the MVGRAPH_* environment variables, for the global options "
         "and those of " + ", ".join(configfile.SECTIONS) + ".",
    no_args_is_help=True, rich_markup_mode=None)


@config_app.command("show")
def show_cmd(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Print each setting's effective value and where it came from: the command line, an
    environment variable, the configuration file or the default (a command's options as it
    would see them with none of its own given). Passwords are masked."""
    file, settings = configfile.effective(ctx)
    if as_json:
        sys.stdout.write(json.dumps({
            "file": str(file.path) if file else None,
            "settings": [s.to_dict() for s in settings]}, indent=2) + "\n")
        return
    if file is None:
        sys.stdout.write(f"# no configuration file (none given, no ./{configfile.FILE_NAME}, "
                         f"no [tool.mvgraph] in ./{configfile.PYPROJECT})\n")
    else:
        sys.stdout.write(f"# configuration file: {file.path} ({file.how})\n")
    rows = [(s.key, _shown(s.to_dict()["value"]), s.source) for s in settings]
    width = max(len(k) for k, _, _ in rows)
    value_width = max((len(v) for _, v, _ in rows if len(v) <= 24), default=0)  # DSNs stick out
    for k, v, source in rows:
        sys.stdout.write(f"{k:<{width}} = {v:<{value_width}}  # {source}\n")


def _shown(value: object) -> str:
    return "(not set)" if value is None else configfile.toml_text(value)
