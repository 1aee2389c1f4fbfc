"""Rendering that several commands share (and ``mvgraph demo``): escaping, one-line messages,
durations, graph trees, plan and report tables, psql-style rows. A command's own tables live in
its module (``jobs``, ``refresh``, ``schedule``).

rich is imported by the functions that build trees and tables, so ``escape`` costs no rich
import; neither do the refresh modules (needed for types only).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from mvgraph.model.definitions import Kind
from mvgraph.model.status import Action

if TYPE_CHECKING:
    from rich.table import Table
    from rich.tree import Tree

    from mvgraph.graph import MVGraph
    from mvgraph.model.names import RelationName
    from mvgraph.refresh.behavior import Plan
    from mvgraph.refresh.executor import RefreshReport

KIND_STYLE = {
    Kind.MATVIEW: "bold cyan",
    Kind.VIEW: "magenta",
    Kind.TABLE: "green",
    Kind.PARTITIONED_TABLE: "green",
    Kind.FOREIGN_TABLE: "green",
    Kind.EXTERNAL: "red",
    Kind.SEQUENCE: "yellow",
    Kind.SYSTEM: "blue",
}


def label(graph: MVGraph, node: RelationName) -> str:
    """A node's name coloured by kind, with its kind in dim text."""
    kind = graph.kind(node)
    text = f"[{KIND_STYLE[kind]}]{escape(str(node))}[/] [dim]{kind.value}[/]"
    volatile = graph.attrs(node).get("volatile_functions")
    if volatile:
        text += f" [yellow](volatile: {', '.join(volatile)})[/]"
    return text


def escape(text: str) -> str:
    """Escape rich markup in names."""
    return text.replace("[", r"\[")


#: Characters that would break a message's line or reorder it on a terminal: C0 and C1
#: controls, line and paragraph separators, and the bidirectional overrides and isolates.
_UNPRINTABLE = {c: f"\\u{c:04x}" if c > 0xff else f"\\x{c:02x}" for c in (
    *range(0x20), 0x7f, *range(0x80, 0xa0), 0x2028, 0x2029, *range(0x202a, 0x202f),
    *range(0x2066, 0x206a))}
_UNPRINTABLE.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})


def one_line(text: str) -> str:
    r"""``text`` on one line: control characters shown as escapes (a name a user typed with a
    newline or a right-to-left override in it cannot split or disguise a message).

    >>> print(one_line("no view 'a\nb\u202e'"))
    no view 'a\nb\u202e'
    """
    return text.translate(_UNPRINTABLE)


def graph_tree(graph: MVGraph, title: str = "mvgraph") -> Tree:
    """Sources at the top, each node's dependents beneath it; a node seen before is not expanded."""
    from rich.tree import Tree

    root = Tree(f"[bold]{escape(title)}[/] [dim]({len(graph)} relations, "
                f"{graph.number_of_edges()} dependencies)[/]")
    seen: set[RelationName] = set()
    sources = [n for n in graph.order() if not graph.inputs(n)]
    for node in sources:
        _grow(graph, root, node, seen, graph.dependents)
    for cycle in graph.cycles:
        branch = root.add(f"[red]dependency cycle (left out):[/] {escape(cycle.path)}")
        for member, reader in cycle.reads:
            branch.add(f"[dim]{escape(str(member))} is read by[/] {label(graph, reader)}")
    return root


def deps_tree(graph: MVGraph, node: RelationName, up: bool, down: bool) -> Tree:
    """The inputs (up) and/or dependents (down) of one node as trees rooted at it."""
    from rich.tree import Tree

    root = Tree(label(graph, node))
    if up:
        branch = root.add("[bold]reads (upstream)[/]")
        seen: set[RelationName] = {node}
        for child in graph.inputs(node):
            _grow(graph, branch, child, seen, graph.inputs)
    if down:
        branch = root.add("[bold]read by (downstream)[/]")
        seen = {node}
        for child in graph.dependents(node):
            _grow(graph, branch, child, seen, graph.dependents)
    return root


def _grow(graph: MVGraph, parent: Tree, node: RelationName, seen: set[RelationName],
          step: object) -> None:
    if node in seen:
        parent.add(f"[dim]{escape(str(node))} (shown above)[/]")
        return
    seen.add(node)
    branch = parent.add(label(graph, node))
    assert callable(step)
    for child in step(node):
        _grow(graph, branch, child, seen, step)


ACTION_STYLE = {"refreshed": "green", "skipped": "dim", "failed": "bold red",
                "blocked": "red", "cancelled": "yellow", "pending": "cyan"}


def plan_table(p: Plan) -> Table:
    """A plan as a table: order, view, verdict, reason."""
    from rich.table import Table

    t = Table(title=escape(p.header()), title_justify="left")
    t.add_column("#", justify="right")
    t.add_column("view", **name_column(str(s.name) for s in p.steps))
    t.add_column("action")
    t.add_column("reason", overflow="fold")
    for i, s in enumerate(p.steps, 1):
        style = "green" if s.action is Action.REFRESH else "dim"
        t.add_row(str(i), escape(str(s.name)), f"[{style}]{s.action.value}[/]", escape(s.reason))
    return t


def report_table(r: RefreshReport) -> Table:
    """A finished run as a table."""
    from rich.table import Table

    t = Table(title=f"job {r.job_id}: {r.status} in {r.elapsed_s:.2f}s", title_justify="left")
    t.add_column("view", **name_column(str(s.name) for s in r.steps))
    t.add_column("action")
    t.add_column("seconds", justify="right")
    t.add_column("reason / error", overflow="fold")
    for s in r.steps:
        style = ACTION_STYLE.get(s.action, "default")
        mode = " (concurrently)" if s.concurrently else ""
        detail = s.reason + (f" — {s.error}" if s.error else "")
        t.add_row(escape(str(s.name)), f"[{style}]{s.action}{mode}[/]", f"{s.duration_s:.3f}",
                  escape(detail))
    return t


def name_column(names: Iterable[str]) -> dict[str, Any]:
    """Column options that keep every name whole: never wrapped or cut, as wide as the longest
    (the other columns wrap to make room)."""
    return {"no_wrap": True, "overflow": "fold",
            "min_width": max((len(n) for n in names), default=None)}


def seconds_text(seconds: float | None, unknown: str = "?") -> str:
    """A duration for people; ``unknown`` when there is none.

    >>> seconds_text(4.25), seconds_text(125), seconds_text(3725), seconds_text(None)
    ('4.2s', '2m05s', '1h02m', '?')
    """
    if seconds is None:
        return unknown
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def short(text: str, width: int = 40) -> str:
    """One line of at most ``width`` characters (whitespace collapsed, ``…`` when cut).

    >>> short("REFRESH   MATERIALIZED VIEW  public.mv5 CASCADE ALL", 30)
    'REFRESH MATERIALIZED VIEW pub…'
    """
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[:width - 1] + "…"


def psql_text(columns: list[str], rows: list[tuple[object, ...]],
              texts: list[tuple[str | None, ...]] | None = None) -> str:
    """Rows aligned the way psql prints them, with the row count; values as PostgreSQL writes
    them (``texts``: the server's own text of each value, else :func:`mvgraph.pgvalues.pg_text`
    of ``rows``), NULL as nothing.

    >>> print(psql_text(["id", "ok", "tags"], [(1, True, [1, 2]), (2, None, None)]))
     id | ok | tags
    ----+----+-------
      1 | t  | {1,2}
      2 |    |
    (2 rows)
    """
    from mvgraph.pgvalues import pg_text

    cells = ([["" if v is None else v for v in row] for row in texts] if texts is not None
             else [[pg_text(v) for v in row] for row in rows])
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [bool(rows) and all((isinstance(r[i], int | float | Decimal) and
                                  not isinstance(r[i], bool)) or r[i] is None for r in rows)
               for i in range(len(columns))]
    head = " " + " | ".join(" " * ((w - len(c)) // 2) + c.ljust(w - (w - len(c)) // 2)
                            for c, w in zip(columns, widths, strict=True))  # psql's centring
    rule = "-" + "-+-".join("-" * w for w in widths) + "-"
    lines = [head.rstrip(), rule]
    for r in cells:
        parts = [v.rjust(w) if numeric[i] else v.ljust(w)
                 for i, (v, w) in enumerate(zip(r, widths, strict=True))]
        lines.append((" " + " | ".join(parts)).rstrip())
    lines.append(f"({len(rows)} row{'' if len(rows) == 1 else 's'})")
    return "\n".join(lines)
