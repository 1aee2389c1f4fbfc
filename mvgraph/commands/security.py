"""``mvgraph grant ROLE --viewer | --operator | --worker | --admin`` and ``mvgraph revoke
ROLE``: mvgraph's privilege levels (pg_background's grant and revoke functions)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from mvgraph.commands import common
from mvgraph.commands.options import JsonOpt
from mvgraph.commands.options import ShortDsnOpt as DsnOpt
from mvgraph.errors import UsageError

if TYPE_CHECKING:
    import psycopg

RoleArg = Annotated[str, typer.Argument(help="The role (as PostgreSQL spells it).")]
PrintOpt = Annotated[bool, typer.Option("--print", help="Show each GRANT / REVOKE run.")]


def _connect(dsn: str | None) -> psycopg.Connection[tuple[object, ...]]:
    from mvgraph.db.connect import connect
    from mvgraph.refresh.service import check_schema

    conn = connect(common.dsn(dsn), application_name="mvgraph grant")
    try:
        check_schema(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _report(role: str, what: str, commands: list[str], show: bool, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps({"role": role, "level": what, "commands": commands}) + "\n")
        return
    if show:
        for c in commands:
            sys.stdout.write(f"{c}\n")
    sys.stdout.write(f"{role}: {what}\n")


def grant_cmd(
    role: RoleArg,
    viewer: Annotated[bool, typer.Option("--viewer", help="See its own jobs and schedules.")]
    = False,
    operator: Annotated[bool, typer.Option(
        "--operator", help="Also submit and steer its own jobs, manage its own schedules.")]
    = False,
    worker: Annotated[bool, typer.Option(
        "--worker", help="What a worker or daemon login needs.")] = False,
    admin: Annotated[bool, typer.Option("--admin", help="See and steer everything.")] = False,
    show: PrintOpt = False,
    as_json: JsonOpt = False,
    dsn: DsnOpt = None,
) -> None:
    """Give a role one of mvgraph's privilege levels (replacing any other it had)."""
    from mvgraph.security import levels

    chosen = [name for name, on in (("viewer", viewer), ("operator", operator),
                                    ("worker", worker), ("admin", admin)) if on]
    if len(chosen) != 1:
        raise UsageError("give exactly one level: --viewer, --operator, --worker or --admin")
    with _connect(dsn) as conn:
        commands = levels.grant(conn, role, chosen[0])
    _report(role, chosen[0], commands, show, as_json)


def revoke_cmd(role: RoleArg, show: PrintOpt = False, as_json: JsonOpt = False,
               dsn: DsnOpt = None) -> None:
    """Take every mvgraph privilege from a role (at once, also in its open sessions)."""
    from mvgraph.security import levels

    with _connect(dsn) as conn:
        commands = levels.revoke(conn, role)
    _report(role, "no level", commands, show, as_json)
