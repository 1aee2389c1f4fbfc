"""A small directed graph: the part of networkx's ``DiGraph`` that mvgraph uses, and the four
algorithms it needs (a lexicographical topological order, one cycle, strongly connected
components, acyclicity).

Importing networkx loads hundreds of modules (its algorithms, its backends' entry points): about
0.2 s on an idle machine, several times that on a busy one, paid by every command that builds
a graph. This module costs nothing to import. Nodes keep insertion order, as in networkx, so
traversals and the cycle found are the same.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any, Generic, TypeVar

N = TypeVar("N", bound=Hashable)


class NoCycle(Exception):
    """The graph has no cycle (``find_cycle``)."""


class NotAcyclic(ValueError):
    """A topological order was asked of a graph with a cycle."""


class NodeView(Generic[N]):
    """``g.nodes``: iterate, ``in``, ``len`` and ``g.nodes[n]`` (the node's attributes)."""

    __slots__ = ("_attrs",)

    def __init__(self, attrs: dict[N, dict[str, Any]]) -> None:
        self._attrs = attrs

    def __iter__(self) -> Iterator[N]:
        return iter(self._attrs)

    def __len__(self) -> int:
        return len(self._attrs)

    def __contains__(self, node: object) -> bool:
        return node in self._attrs

    def __getitem__(self, node: N) -> dict[str, Any]:
        return self._attrs[node]


class EdgeView(Generic[N]):
    """``g.edges``: ``(source, target)`` pairs in insertion order; ``in`` and ``len``."""

    __slots__ = ("_succ",)

    def __init__(self, succ: dict[N, dict[N, None]]) -> None:
        self._succ = succ

    def __iter__(self) -> Iterator[tuple[N, N]]:
        return ((u, v) for u, targets in self._succ.items() for v in targets)

    def __len__(self) -> int:
        return sum(len(t) for t in self._succ.values())

    def __contains__(self, edge: object) -> bool:
        if not isinstance(edge, tuple) or len(edge) != 2:
            return False
        u, v = edge
        return u in self._succ and v in self._succ[u]


class DiGraph(Generic[N]):
    """Nodes with attribute dicts, and directed edges (no parallel edges; self-loops allowed)."""

    __slots__ = ("_attrs", "_pred", "_succ")

    def __init__(self) -> None:
        self._attrs: dict[N, dict[str, Any]] = {}
        self._succ: dict[N, dict[N, None]] = {}
        self._pred: dict[N, dict[N, None]] = {}

    # ---- building -------------------------------------------------------------------------
    def add_node(self, node: N, **attrs: Any) -> None:
        """Add a node (or update its attributes)."""
        if node not in self._attrs:
            self._attrs[node] = {}
            self._succ[node] = {}
            self._pred[node] = {}
        self._attrs[node].update(attrs)

    def add_nodes_from(self, nodes: Iterable[N | tuple[N, dict[str, Any]]]) -> None:
        """Add nodes, each a node or a ``(node, attributes)`` pair."""
        for item in nodes:
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], dict):
                self.add_node(item[0], **item[1])
            else:
                self.add_node(item)  # type: ignore[arg-type]

    def add_edge(self, source: N, target: N) -> None:
        """Add an edge, and its nodes when new."""
        for node in (source, target):
            if node not in self._attrs:
                self.add_node(node)
        self._succ[source][target] = None
        self._pred[target][source] = None

    def add_edges_from(self, edges: Iterable[tuple[N, N]]) -> None:
        """Add edges."""
        for source, target in edges:
            self.add_edge(source, target)

    def remove_nodes_from(self, nodes: Iterable[N]) -> None:
        """Remove nodes (those absent are ignored) and their edges."""
        for node in nodes:
            if node not in self._attrs:
                continue
            for target in self._succ.pop(node):
                del self._pred[target][node]
            for source in self._pred.pop(node):
                del self._succ[source][node]
            del self._attrs[node]

    # ---- reading --------------------------------------------------------------------------
    @property
    def nodes(self) -> NodeView[N]:
        """The nodes, in insertion order."""
        return NodeView(self._attrs)

    @property
    def edges(self) -> EdgeView[N]:
        """The edges, in insertion order."""
        return EdgeView(self._succ)

    def __iter__(self) -> Iterator[N]:
        return iter(self._attrs)

    def __len__(self) -> int:
        return len(self._attrs)

    def __contains__(self, node: object) -> bool:
        try:
            return node in self._attrs
        except TypeError:  # unhashable
            return False

    def number_of_nodes(self) -> int:
        """How many nodes."""
        return len(self._attrs)

    def number_of_edges(self) -> int:
        """How many edges."""
        return len(self.edges)

    def has_edge(self, source: N, target: N) -> bool:
        """True when ``source -> target`` is an edge."""
        return source in self._succ and target in self._succ[source]

    def successors(self, node: N) -> Iterator[N]:
        """The nodes ``node`` has an edge to (KeyError for a node not in the graph)."""
        return iter(self._succ[node])

    def predecessors(self, node: N) -> Iterator[N]:
        """The nodes with an edge to ``node`` (KeyError for a node not in the graph)."""
        return iter(self._pred[node])

    def subgraph(self, nodes: Iterable[N]) -> DiGraph[N]:
        """A new graph of ``nodes`` (those in this graph, in this graph's order), the edges
        among them and copies of their attributes."""
        keep = set(nodes)
        out: DiGraph[N] = DiGraph()
        for node, attrs in self._attrs.items():
            if node in keep:
                out.add_node(node, **attrs)
        for node in out._attrs:
            for target in self._succ[node]:
                if target in keep:
                    out._succ[node][target] = None
                    out._pred[target][node] = None
        return out

    def copy(self) -> DiGraph[N]:
        """A copy (attribute dicts copied, values shared)."""
        return self.subgraph(self._attrs)


# ---- algorithms -------------------------------------------------------------------------------
def lexicographical_topological_sort(g: DiGraph[N], key: Callable[[N], Any]) -> Iterator[N]:
    """Kahn's algorithm, the smallest ``key`` first among the ready nodes (networkx's order).

    Raises:
        NotAcyclic: the graph has a cycle.
    """
    indegree = {n: len(g._pred[n]) for n in g._attrs}
    ready = [(key(n), i, n) for i, n in enumerate(g._attrs) if indegree[n] == 0]
    heapq.heapify(ready)
    index = {n: i for i, n in enumerate(g._attrs)}
    done = 0
    while ready:
        _, _, node = heapq.heappop(ready)
        yield node
        done += 1
        for target in g._succ[node]:
            indegree[target] -= 1
            if indegree[target] == 0:
                heapq.heappush(ready, (key(target), index[target], target))
    if done != len(g._attrs):
        raise NotAcyclic("the graph has a cycle")


def is_directed_acyclic_graph(g: DiGraph[N]) -> bool:
    """True when the graph has no cycle."""
    try:
        find_cycle(g)
    except NoCycle:
        return True
    return False


def find_cycle(g: DiGraph[N], source: N | None = None) -> list[tuple[N, N]]:
    """The edges of one cycle, found by a depth-first search over the nodes and their edges in
    insertion order (from ``source`` first when given), as networkx's ``find_cycle`` does.

    Raises:
        NoCycle: there is none (reachable from ``source`` when given).
    """
    starts = [source] if source is not None else list(g._attrs)
    visited: set[N] = set()
    for start in starts:
        if start in visited:
            continue
        path: list[N] = [start]  # nodes on the current branch
        on_path = {start}
        stack: list[Iterator[N]] = [iter(g._succ[start])]
        visited.add(start)
        while stack:
            node = path[-1]
            target = next(stack[-1], None)
            if target is None:
                stack.pop()
                on_path.discard(path.pop())
                continue
            if target in on_path:
                i = path.index(target)
                cycle = path[i:]
                return [(cycle[k], cycle[k + 1]) for k in range(len(cycle) - 1)] + [
                    (node, target)]
            if target not in visited:
                visited.add(target)
                path.append(target)
                on_path.add(target)
                stack.append(iter(g._succ[target]))
    raise NoCycle("no cycle")


def strongly_connected_components(g: DiGraph[N]) -> Iterator[set[N]]:
    """The strongly connected components (Tarjan's algorithm, without recursion)."""
    index: dict[N, int] = {}
    low: dict[N, int] = {}
    stack: list[N] = []
    on_stack: set[N] = set()
    counter = 0
    for root in g._attrs:
        if root in index:
            continue
        work: list[tuple[N, Iterator[N]]] = [(root, iter(g._succ[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, targets = work[-1]
            target = next(targets, None)
            if target is not None:
                if target not in index:
                    index[target] = low[target] = counter
                    counter += 1
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(g._succ[target])))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: set[N] = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                yield component
