"""``mvgraph graph``, ``deps`` and ``check``: the dependency graph of a database or of SQL
files, one relation's neighbourhood, and the difference between the two."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mvgraph.commands import common
from mvgraph.commands.options import (
    DsnOpt,
    EncodingOpt,
    Format,
    FormatOpt,
    FromSqlOpt,
    KeepGoingOpt,
    SchemaOpt,
    SearchPathOpt,
    StrictOpt,
)
from mvgraph.commands.render import escape
from mvgraph.errors import UnknownRelation, UsageError
from mvgraph.model.definitions import Kind

if TYPE_CHECKING:
    import psycopg

    from mvgraph.graph import MVGraph


def load(from_sql: list[Path] | None, dsn: str | None, schemas: list[str] | None,
         strict: bool, search_path: str | None, *, encoding: str = "utf-8",
         keep_going: bool = False,
         resolve_with: str | psycopg.Connection[tuple[object, ...]] | None = None) -> MVGraph:
    """The graph of the SQL files (a server given by --dsn or --embedded resolves what sqlglot
    cannot parse), else of the database."""
    from mvgraph.api import load_graph

    if from_sql:
        return load_graph(sql=from_sql, search_path=common.search_path(search_path),
                          schemas=schemas or None, strict=strict, encoding=encoding,
                          keep_going=keep_going,
                          resolve_with=resolve_with if resolve_with is not None
                          else common.given_dsn(dsn))
    return load_graph(dsn=common.dsn(dsn), schemas=schemas or None, strict=strict)


def report_load_errors(graph: MVGraph) -> bool:
    """Print the failures left out under --keep-going; True when there were any."""
    for error in graph.load_errors:
        common.err.print(f"[red]error:[/] {escape(str(error))}")
    if graph.load_errors:
        common.err.print(f"[red]error:[/] {len(graph.load_errors)} failures in "
                         f"{common.failed_files(graph.load_errors)} files left out; fix them")
    return bool(graph.load_errors)


def warn(graph: MVGraph) -> None:
    """The graph's warnings, one ``warning:`` line each on stderr."""
    for line in graph.warnings:
        common.err.print(f"[yellow]warning:[/] {escape(line)}")


def emit(graph: MVGraph, fmt: Format, title: str) -> None:
    """The graph in the format asked for, on stdout."""
    if fmt is Format.json:
        sys.stdout.write(graph.to_json() + "\n")
    elif fmt is Format.dot:
        sys.stdout.write(graph.to_dot())
    elif fmt is Format.mermaid:
        sys.stdout.write(graph.to_mermaid())
    else:
        from mvgraph.commands.render import graph_tree

        common.out.print(graph_tree(graph, title), soft_wrap=False)  # long lines wrap, never cut


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
    loaded = load(from_sql, dsn, schema, strict, search_path, encoding=encoding,
                  keep_going=keep_going)
    warn(loaded)
    g = loaded
    if select:
        chosen = g.select(select, common.search_path(search_path))
        if not chosen:
            raise UnknownRelation(f"selector {select!r} matches nothing in the graph; check the "
                                  "names with `mvgraph graph`")
        g = g.subgraph(chosen)
    if from_sql and fmt is Format.tree and loaded.ignored_statements:
        common.err.print(f"[dim]{loaded.ignored_statements} other statements ignored[/]")
    emit(g, fmt, "SQL files" if from_sql else "database")
    if report_load_errors(loaded):
        raise typer.Exit(1)


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
    g = load(from_sql, dsn, None, False, search_path, encoding=encoding, keep_going=keep_going)
    warn(g)
    node = g.resolve(name, common.search_path(search_path))
    both = not up and not down
    if up or both:
        g.require_acyclic([node])
    if fmt is Format.tree:
        from mvgraph.commands.render import deps_tree

        common.out.print(deps_tree(g, node, up or both, down or both), soft_wrap=False)
    else:
        nodes = {node}
        if up or both:
            nodes |= g.upstream(node)
        if down or both:
            nodes |= g.downstream(node)
        emit(g.subgraph(nodes), fmt, str(node))
    if report_load_errors(g):
        raise typer.Exit(1)


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
    with connect(common.dsn(dsn)) as conn:
        files = load(from_sql, None, schema, False, search_path, encoding=encoding,
                     keep_going=keep_going, resolve_with=conn)
        schemas = schema or sorted({n.schema for n in files.nodes()
                                    if files.kind(n) is not Kind.EXTERNAL})
        db = load_graph(conn=conn, schemas=schemas)
    result = diff(files, db)
    if as_json:
        sys.stdout.write(json.dumps({"equal": result.empty, **result.to_dict()}, indent=2) + "\n")
    elif result.empty:
        common.out.print(f"[green]in sync:[/] {len(files)} relations, "
                         f"{files.number_of_edges()} dependencies match")
    else:
        for line in result.lines():
            common.out.print(f"[red]-[/] {escape(line)}")
    if report_load_errors(files) or not result.empty:
        raise typer.Exit(1)
