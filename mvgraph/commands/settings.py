"""``mvgraph settings [KEY [VALUE]]`` and ``mvgraph init``: mvgraph's settings and its schema in
the database."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from mvgraph.commands import common
from mvgraph.commands.options import DsnOpt, JsonOpt
from mvgraph.commands.render import escape
from mvgraph.settingkeys import help_list

#: ``mvgraph settings``'s help: the keys come from :mod:`mvgraph.settingkeys`.
SETTINGS_HELP = ("Show mvgraph's settings in the database (every key, with its default when "
                 "not set), show one, or set one. Keys: " + help_list() + ".")


def settings_cmd(
    key: Annotated[str | None, typer.Argument(
        help="Setting to show or change (alone: print its value).")] = None,
    value: Annotated[str | None, typer.Argument(help="Its new value.")] = None,
    as_json: JsonOpt = False,
    dsn: DsnOpt = None,
) -> None:
    from mvgraph.refresh.service import settings, stored_settings

    target = common.target(dsn)
    current = settings(target, key, value)
    if as_json:
        sys.stdout.write(json.dumps(current, indent=2) + "\n")
    elif key is not None and value is None:
        sys.stdout.write(f"{current[key]}\n")
    else:
        stored = stored_settings(target) if key is None else set(current)
        for k, v in current.items():
            common.out.print(f"{k} = {escape(v)}" + ("" if k in stored else " [dim](default)[/]"))


def init(dsn: DsnOpt = None) -> None:
    """Install or upgrade mvgraph's schema and, as a superuser, its event triggers: the only
    command that creates anything of mvgraph's (the others check and say to run it)."""
    from mvgraph.db.connect import connect
    from mvgraph.db.install import init as install

    with connect(common.dsn(dsn)) as conn:
        report = install(conn)
    for m in report.applied:
        common.out.print(f"applied migration {m.version:04d} {m.name}")
    if not report.applied:
        common.out.print(f"mvgraph schema is up to date (version {report.version})")
    if report.triggers_installed:
        common.out.print(f"installed event triggers {', '.join(report.triggers_installed)}")
    warning = report.trigger_warning()
    if warning:
        common.err.print(f"[yellow]warning:[/] {escape(warning)}")
