"""Turning results into text for people: rich trees and tables. Only the CLI calls this.

rich is imported by the functions that build trees, so ``escape`` costs no rich import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mvgraph.model.definitions import Kind

if TYPE_CHECKING:
    from rich.tree import Tree

    from mvgraph.graph import MVGraph
    from mvgraph.model.names import RelationName

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
