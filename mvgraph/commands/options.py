"""The options and arguments several commands share, each defined once (dbt-core's
``cli/params.py``). A command's own options stay beside it.

Imports typer only: the commands' modules read these at import, ``--help`` included.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer


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
#: ``--dsn`` with the shorter help the schedule, daemon, grant and revoke commands show.
ShortDsnOpt = Annotated[str | None, typer.Option("--dsn", help="PostgreSQL DSN, or 'embedded'.",
                                                 show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
SearchPathOpt = Annotated[str | None, typer.Option(
    "--search-path", help="Comma-separated search_path for bare names (default public).")]

FromSqlOpt = Annotated[list[Path] | None, typer.Option(
    "--from-sql", help="SQL files or folders to read instead of the database ('-' is stdin); "
                       "with --dsn or --embedded, that server resolves the views sqlglot "
                       "cannot parse.")]
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="Output format.")]
SchemaOpt = Annotated[list[str] | None, typer.Option("--schema", help="Only these schemas.")]
StrictOpt = Annotated[bool, typer.Option("--strict", help="Undefined references are errors.")]
EncodingOpt = Annotated[str, typer.Option(
    "--encoding", help="Encoding of the --from-sql files, e.g. latin-1 (a UTF-8 BOM is dropped).")]
KeepGoingOpt = Annotated[bool, typer.Option(
    "--keep-going", help="Use the --from-sql files that load; list the failures on stderr and "
                         "exit 1.")]

BehaviorOpt = Annotated[str | None, typer.Option(
    "--cascade", help="forward, backward or all (default: the view alone).")]
RestrictOpt = Annotated[bool, typer.Option("--restrict",
                                           help="Refresh the view alone, unconditionally.")]
TargetsArg = Annotated[list[str], typer.Argument(help="Views or dbt selectors (+mv5+).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Refresh every step.")]

JobIdArg = Annotated[int, typer.Argument(metavar="ID", help="The job id (see mvgraph jobs).")]
