"""MVGraph: the dependency graph (edge input -> dependent) with selection, layers and export."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx

from mvgraph.definitions import Definition, Kind, Schedule
from mvgraph.errors import CycleError, SqlParseError, UndefinedReference, UnknownRelation
from mvgraph.names import RelationName

JSON_VERSION = 1


@dataclass(frozen=True, slots=True)
class GraphDiff:
    """What differs between two graphs (``a`` is usually the files, ``b`` the database)."""

    missing: tuple[RelationName, ...]  # in a, not in b
    extra: tuple[RelationName, ...]  # in b, not in a
    kind_changed: tuple[tuple[RelationName, str, str], ...]
    edges_missing: tuple[tuple[RelationName, RelationName], ...]  # in a, not in b
    edges_extra: tuple[tuple[RelationName, RelationName], ...]  # in b, not in a

    @property
    def empty(self) -> bool:
        """True when the graphs agree on nodes, kinds and edges."""
        return not (self.missing or self.extra or self.kind_changed or self.edges_missing
                    or self.edges_extra)

    def lines(self) -> list[str]:
        """Human-readable lines, one per difference."""
        out = [f"missing in database: {n}" for n in self.missing]
        out += [f"extra in database: {n}" for n in self.extra]
        out += [f"kind differs: {n} is {a} in files, {b} in database"
                for n, a, b in self.kind_changed]
        out += [f"dependency missing in database: {s} -> {t}" for s, t in self.edges_missing]
        out += [f"dependency extra in database: {s} -> {t}" for s, t in self.edges_extra]
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {
            "missing": [str(n) for n in self.missing],
            "extra": [str(n) for n in self.extra],
            "kind_changed": [{"name": str(n), "files": a, "database": b}
                             for n, a, b in self.kind_changed],
            "edges_missing": [{"from": str(s), "to": str(t)} for s, t in self.edges_missing],
            "edges_extra": [{"from": str(s), "to": str(t)} for s, t in self.edges_extra],
        }


class MVGraph:
    """The relations of a database and which reads which. Nodes are RelationName values.

    Node attributes: ``kind`` (a Kind), ``schema``, ``name``, ``owner``, ``definition``,
    ``populated``, ``concurrent_index``, ``volatile_functions``, ``schedule``, ``source``.
    """

    def __init__(self, digraph: nx.DiGraph | None = None, warnings: Sequence[str] = ()) -> None:
        self.g: nx.DiGraph = digraph if digraph is not None else nx.DiGraph()
        self.warnings: list[str] = list(warnings)
        self.ignored_statements = 0  # SQL statements read but not about relations (SQL files)
        self.load_errors: list[SqlParseError] = []  # failures left out (SQL files, keep_going)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_definitions(cls, definitions: Iterable[Definition], *,
                         strict: bool = False) -> MVGraph:
        """Build a graph; undefined inputs become EXTERNAL nodes (an error when ``strict``).

        Raises:
            CycleError: the definitions read each other in a cycle.
            UndefinedReference: ``strict`` and some input is defined nowhere.
        """
        g: nx.DiGraph = nx.DiGraph()
        defs = {d.name: d for d in definitions}
        g.add_nodes_from((d.name, _attrs(d)) for d in defs.values())
        warnings: list[str] = []
        for d in sorted(defs.values(), key=lambda x: x.name):
            for src in sorted(s for s in d.reads if s not in defs):
                message = (f"{d.name} reads {src}, which is defined nowhere; add its "
                           "definition or load it into the database")
                if strict:
                    raise UndefinedReference(message)
                if src not in g:
                    g.add_node(src, **_attrs(Definition(src, Kind.EXTERNAL)))
                warnings.append(message)
        g.add_edges_from((src, d.name) for d in defs.values() for src in d.reads)
        cycles = find_cycles(defs.values())
        if cycles:
            raise CycleError([str(name) for name in cycles[0]])
        return cls(g, warnings)

    def check_acyclic(self) -> None:
        """Raise CycleError naming one cycle, if there is any."""
        if nx.is_directed_acyclic_graph(self.g):
            return
        try:
            cycle = nx.find_cycle(self.g)
        except nx.NetworkXNoCycle:
            return
        raise CycleError([str(edge[0]) for edge in cycle])

    # ---- lookup -------------------------------------------------------------------------
    def __contains__(self, name: object) -> bool:
        return name in self.g

    def __iter__(self) -> Iterator[RelationName]:
        return iter(self.order())

    def __len__(self) -> int:
        return int(self.g.number_of_nodes())

    def kind(self, name: RelationName) -> Kind:
        """The kind of a node."""
        return Kind(self.g.nodes[name]["kind"])

    def attrs(self, name: RelationName) -> dict[str, Any]:
        """All attributes of a node."""
        return dict(self.g.nodes[name])

    def inputs(self, name: RelationName) -> list[RelationName]:
        """Direct inputs of a node, sorted."""
        return sorted(self.g.predecessors(name))

    def dependents(self, name: RelationName) -> list[RelationName]:
        """Direct dependents of a node, sorted."""
        return sorted(self.g.successors(name))

    def resolve(self, text: str, search_path: Sequence[str] = ("public",)) -> RelationName:
        """Find the node a user means by ``text`` (qualified, or bare and unique or on the path).

        Raises:
            UnknownRelation: nothing, or more than one node, matches.
        """
        try:
            parsed = RelationName.parse(text, default_schema="\x00")
        except ValueError as exc:
            raise UnknownRelation(f"{text!r} is not a relation name: {exc}") from exc
        if parsed.schema != "\x00":
            if parsed in self.g:
                return parsed
            raise UnknownRelation(f"{parsed} is not in the graph; check the name with "
                                  "`mvgraph graph`")
        for schema in search_path:
            candidate = RelationName(schema, parsed.name)
            if candidate in self.g:
                return candidate
        matches: list[RelationName] = sorted(n for n in self.g if n.name == parsed.name)
        if len(matches) == 1:
            return matches[0]
        if matches:
            listed = ", ".join(str(m) for m in matches)
            raise UnknownRelation(f"{text} is ambiguous ({listed}); qualify it with a schema")
        raise UnknownRelation(f"{text} is not in the graph; check the name with `mvgraph graph`")

    # ---- traversal ------------------------------------------------------------------------
    def upstream(self, name: RelationName, depth: int | None = None) -> set[RelationName]:
        """Everything ``name`` reads, transitively (up to ``depth`` edges), excluding itself."""
        return self._walk(name, self.g.predecessors, depth)

    def downstream(self, name: RelationName, depth: int | None = None) -> set[RelationName]:
        """Everything that reads ``name``, transitively (up to ``depth`` edges), excluding it."""
        return self._walk(name, self.g.successors, depth)

    @staticmethod
    def _walk(start: RelationName, step: Any, depth: int | None) -> set[RelationName]:
        seen: set[RelationName] = set()
        frontier = [start]
        level = 0
        while frontier and (depth is None or level < depth):
            nxt = []
            for node in frontier:
                for other in step(node):
                    if other not in seen and other != start:
                        seen.add(other)
                        nxt.append(other)
            frontier = nxt
            level += 1
        return seen

    def order(self, nodes: Iterable[RelationName] | None = None) -> list[RelationName]:
        """A topological order, deterministic: among ready nodes the smallest name goes first."""
        g = self.g if nodes is None else self.g.subgraph(set(nodes))
        return list(nx.lexicographical_topological_sort(g, key=_sort_key))

    def layers(self, nodes: Iterable[RelationName] | None = None) -> list[list[RelationName]]:
        """Nodes grouped by longest-path depth (layer 0 holds the nodes with no inputs)."""
        depth = self.depths(nodes)
        out: list[list[RelationName]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
        for node in sorted(depth):
            out[depth[node]].append(node)
        return out

    def depths(self, nodes: Iterable[RelationName] | None = None) -> dict[RelationName, int]:
        """Longest-path depth of each node (within ``nodes`` when given)."""
        g = self.g if nodes is None else self.g.subgraph(set(nodes))
        depth: dict[RelationName, int] = {}
        for node in self.order(g.nodes):
            depth[node] = max((depth[p] + 1 for p in g.predecessors(node)), default=0)
        return depth

    def subgraph(self, nodes: Iterable[RelationName]) -> MVGraph:
        """A new graph holding only ``nodes`` and the edges among them."""
        return MVGraph(self.g.subgraph(set(nodes)).copy(), self.warnings)

    def select(self, expr: str, search_path: Sequence[str] = ("public",)) -> list[RelationName]:
        """Nodes matched by a dbt-style selector expression, in topological order.

        See :func:`mvgraph.selectors.select`.
        """
        from mvgraph.selectors import select

        return self.order(select(self, expr, search_path))

    # ---- export -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The documented JSON shape: ``{"version", "nodes": [...], "edges": [...]}``."""
        nodes = []
        for n in self.order():
            a = self.g.nodes[n]
            sched = a.get("schedule")
            nodes.append({
                "name": str(n),
                "schema": n.schema,
                "relname": n.name,
                "kind": str(a["kind"]),
                "owner": a.get("owner"),
                "populated": a.get("populated"),
                "concurrent_index": a.get("concurrent_index"),
                "volatile_functions": list(a.get("volatile_functions") or ()),
                "schedule": None if sched is None else {
                    "behavior": sched.behavior, "start": sched.start, "every": sched.every,
                    "query_rewrite": sched.query_rewrite},
                "definition": a.get("definition"),
                "source": a.get("source"),
                "layer": None,
            })
        depth = self.depths()
        for item, n in zip(nodes, self.order(), strict=True):
            item["layer"] = depth[n]
        edges = [{"from": str(s), "to": str(t)} for s, t in self._sorted_edges()]
        return {"version": JSON_VERSION, "nodes": nodes, "edges": edges}

    def _sorted_edges(self) -> list[tuple[RelationName, RelationName]]:
        return sorted(self.g.edges, key=lambda e: (_sort_key(e[0]), _sort_key(e[1])))

    def to_json(self, indent: int | None = 2) -> str:
        """JSON text of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str | dict[str, Any]) -> MVGraph:
        """Rebuild a graph from :meth:`to_json` output."""
        data = json.loads(text) if isinstance(text, str) else text
        g: nx.DiGraph = nx.DiGraph()
        for item in data["nodes"]:
            sched = item.get("schedule")
            name = RelationName(item["schema"], item["relname"])
            g.add_node(name, **_attrs(Definition(
                name=name, kind=Kind(item["kind"]), sql=item.get("definition"),
                owner=item.get("owner"), populated=item.get("populated"),
                concurrent_index=item.get("concurrent_index"),
                volatile_functions=tuple(item.get("volatile_functions") or ()),
                schedule=None if sched is None else Schedule(
                    sched.get("behavior"), sched.get("start"), sched.get("every"),
                    sched.get("query_rewrite")),
                source=item.get("source"))))
        for edge in data["edges"]:
            g.add_edge(RelationName.parse(edge["from"]), RelationName.parse(edge["to"]))
        return cls(g)

    def to_dot(self) -> str:
        """Graphviz DOT text; materialized views are boxes, views ellipses, tables cylinders."""
        shapes = {Kind.MATVIEW: "box", Kind.VIEW: "ellipse", Kind.EXTERNAL: "octagon"}
        lines = ["digraph mvgraph {", "  rankdir=LR;"]
        for n in self.order():
            kind = self.kind(n)
            shape = shapes.get(kind, "cylinder")
            lines.append(f"  {_dot_id(n)} [label={_dot_id(n)}, shape={shape}];")
        for s, t in self._sorted_edges():
            lines.append(f"  {_dot_id(s)} -> {_dot_id(t)};")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def to_mermaid(self) -> str:
        """Mermaid flowchart text."""
        ids = {n: f"n{i}" for i, n in enumerate(self.order())}
        brackets = {Kind.MATVIEW: ("[", "]"), Kind.VIEW: ("(", ")"), Kind.EXTERNAL: ("{{", "}}")}
        lines = ["flowchart LR"]
        for n, ident in ids.items():
            left, right = brackets.get(self.kind(n), ("[(", ")]"))
            label = str(n).replace('"', "#quot;")
            lines.append(f'  {ident}{left}"{label}"{right}')
        for s, t in self._sorted_edges():
            lines.append(f"  {ids[s]} --> {ids[t]}")
        return "\n".join(lines) + "\n"


def diff(a: MVGraph, b: MVGraph) -> GraphDiff:
    """Compare two graphs by node names, kinds and edges."""
    na, nb = set(a.g.nodes), set(b.g.nodes)
    kinds = tuple((n, str(a.kind(n)), str(b.kind(n))) for n in sorted(na & nb)
                  if a.kind(n) != b.kind(n))
    ea, eb = set(a.g.edges), set(b.g.edges)
    return GraphDiff(
        missing=tuple(sorted(na - nb)),
        extra=tuple(sorted(nb - na)),
        kind_changed=kinds,
        edges_missing=tuple(sorted(ea - eb)),
        edges_extra=tuple(sorted(eb - ea)),
    )


def find_cycles(definitions: Iterable[Definition]) -> list[list[RelationName]]:
    """One cycle for each group of definitions that read each other, in edge order (input
    first), starting at its smallest name; sorted.

    >>> d = [Definition(RelationName("s", x), Kind.VIEW, frozenset({RelationName("s", y)}))
    ...      for x, y in [("a", "b"), ("b", "a"), ("c", "a")]]
    >>> [[n.name for n in c] for c in find_cycles(d)]
    [['a', 'b']]
    """
    listed = _not_acyclic(list(definitions))
    defs = {d.name for d in listed}
    g: nx.DiGraph = nx.DiGraph()
    g.add_edges_from((src, d.name) for d in listed for src in d.reads if src in defs)
    cycles: list[list[RelationName]] = []
    for component in nx.strongly_connected_components(g):
        first = min(component)
        if len(component) == 1 and not g.has_edge(first, first):
            continue
        cycle = [edge[0] for edge in nx.find_cycle(g.subgraph(component), source=first)]
        turn = cycle.index(min(cycle))
        cycles.append(cycle[turn:] + cycle[:turn])
    return sorted(cycles)


def _not_acyclic(definitions: list[Definition]) -> list[Definition]:
    """The definitions left when those that only read acyclic ones are peeled off (Kahn's
    algorithm): the cycles and what reads them. Plain dicts: far cheaper than a networkx graph,
    and usually nothing is left."""
    waiting = {d.name: 0 for d in definitions}
    readers: dict[RelationName, list[RelationName]] = {}
    for d in definitions:
        for src in d.reads:
            if src in waiting:
                waiting[d.name] += 1
                readers.setdefault(src, []).append(d.name)
    ready = [name for name, count in waiting.items() if count == 0]
    while ready:
        for reader in readers.get(ready.pop(), ()):
            waiting[reader] -= 1
            if waiting[reader] == 0:
                ready.append(reader)
    return [d for d in definitions if waiting[d.name] > 0]


def _attrs(d: Definition) -> dict[str, Any]:
    return {
        "kind": d.kind,
        "schema": d.name.schema,
        "name": d.name.name,
        "owner": d.owner,
        "definition": d.sql,
        "populated": d.populated,
        "concurrent_index": d.concurrent_index,
        "volatile_functions": d.volatile_functions,
        "schedule": d.schedule,
        "source": d.source,
    }


def _sort_key(n: RelationName) -> tuple[str, str]:
    return (n.schema, n.name)


def _dot_id(n: RelationName) -> str:
    return '"' + str(n).replace("\\", "\\\\").replace('"', '\\"') + '"'
