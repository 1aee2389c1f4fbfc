"""MVGraph: the dependency graph (edge input -> dependent) with selection, layers and export."""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

import networkx as nx

from mvgraph import selectors
from mvgraph.errors import CycleError, SqlParseError, UndefinedReference, UnknownRelation
from mvgraph.model.definitions import Definition, Kind, Schedule
from mvgraph.model.names import RelationName

T = TypeVar("T")

JSON_VERSION = 1
SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema"})


@dataclass(frozen=True, slots=True)
class Cycle:
    """Views of the catalog that read each other in a cycle (PostgreSQL lets ``CREATE OR
    REPLACE VIEW`` close one; reading them fails with "infinite recursion detected in rules").
    ``members`` in edge order starting at the smallest name; ``reads`` the (member, reader)
    edges to relations outside the cycle, sorted."""

    members: tuple[RelationName, ...]
    reads: tuple[tuple[RelationName, RelationName], ...] = ()

    @property
    def read_by(self) -> list[RelationName]:
        """Relations outside the cycle that read a member directly, sorted."""
        return sorted({reader for _, reader in self.reads})

    @property
    def path(self) -> str:
        """``a -> b -> a``."""
        return " -> ".join(str(n) for n in (*self.members, self.members[0]))


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

    def __init__(self, digraph: nx.DiGraph | None = None, warnings: Sequence[str] = (),
                 cycles: Sequence[Cycle] = ()) -> None:
        self.g: nx.DiGraph = digraph if digraph is not None else nx.DiGraph()
        self.warnings: list[str] = list(warnings)
        self.ignored_statements = 0  # SQL statements read but not about relations (SQL files)
        self.load_errors: list[SqlParseError] = []  # failures left out (SQL files, keep_going)
        self.cycles: list[Cycle] = list(cycles)  # left out of ``g`` (catalog graphs only)
        self._blocked: dict[RelationName, tuple[Cycle, RelationName]] | None = None
        # the whole graph's order, with the (graph, node count) it was computed for (graphs are
        # not changed once built; the key is a guard)
        self._order: tuple[tuple[int, int], list[RelationName]] | None = None
        self._memo: tuple[tuple[int, int], dict[Hashable, Any]] = ((id(self.g), len(self.g)), {})

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_definitions(cls, definitions: Iterable[Definition], *, strict: bool = False,
                         on_cycle: Literal["error", "warn"] = "error") -> MVGraph:
        """Build a graph; undefined inputs become EXTERNAL nodes (an error when ``strict``),
        or SYSTEM nodes when they are in pg_catalog or information_schema.

        A cycle is an error, or with ``on_cycle="warn"`` (the catalog: a cycle there is a fact
        of the database) one warning per cycle: its members are left out of the graph and kept
        in ``cycles``; what reads them stays, and :meth:`require_acyclic` refuses it.

        Raises:
            CycleError: the definitions read each other in a cycle (``on_cycle="error"``).
            UndefinedReference: ``strict`` and some input is defined nowhere.
        """
        g: nx.DiGraph = nx.DiGraph()
        defs = {d.name: d for d in definitions}
        g.add_nodes_from((d.name, _attrs(d)) for d in defs.values())
        warnings: list[str] = []
        for d in sorted(defs.values(), key=lambda x: x.name):
            for src in sorted(s for s in d.reads if s not in defs):
                if src.schema in SYSTEM_SCHEMAS:
                    if src not in g:
                        g.add_node(src, **_attrs(Definition(src, Kind.SYSTEM)))
                    continue
                message = (f"{d.name} reads {src}, which is defined nowhere; add its "
                           "definition or load it into the database")
                if strict:
                    raise UndefinedReference(message)
                if src not in g:
                    g.add_node(src, **_attrs(Definition(src, Kind.EXTERNAL)))
                warnings.append(message)
        g.add_edges_from((src, d.name) for d in defs.values() for src in d.reads)
        found = find_cycles(defs.values())
        if found and on_cycle == "error":
            raise CycleError([str(name) for name in found[0]])
        cycles = []
        for members in found:
            inside = set(members)
            reads = sorted((m, r) for m in members for r in g.successors(m) if r not in inside)
            cycles.append(Cycle(tuple(members), tuple(reads)))
            warnings.append(_cycle_warning(cycles[-1]))
        g.remove_nodes_from([m for c in cycles for m in c.members])
        return cls(g, warnings, cycles)

    # ---- cycles (catalog graphs) ---------------------------------------------------------
    def cycle_of(self, name: RelationName) -> Cycle | None:
        """The cycle ``name`` is a member of (members are not nodes of the graph)."""
        return next((c for c in self.cycles if name in c.members), None)

    def needs_cycle(self, name: RelationName) -> tuple[Cycle, RelationName] | None:
        """The cycle a node cannot be read without, and the member it reads through its inputs
        (transitively); None when it needs none.

        >>> g = MVGraph.from_definitions([
        ...     Definition(RelationName("s", "a"), Kind.VIEW, frozenset({RelationName("s", "b")})),
        ...     Definition(RelationName("s", "b"), Kind.VIEW, frozenset({RelationName("s", "a")})),
        ...     Definition(RelationName("s", "m"), Kind.MATVIEW, frozenset({RelationName("s", "b")})),
        ...     Definition(RelationName("s", "n"), Kind.MATVIEW, frozenset({RelationName("s", "m")}))],
        ...     on_cycle="warn")
        >>> cycle, member = g.needs_cycle(RelationName("s", "n"))
        >>> cycle.path, str(member)
        ('s.a -> s.b -> s.a', 's.b')
        """  # noqa: E501
        if self._blocked is None:
            blocked: dict[RelationName, tuple[Cycle, RelationName]] = {}
            for cycle in self.cycles:
                for member, reader in cycle.reads:
                    if reader in self.g:
                        for node in sorted({reader} | self.downstream(reader)):
                            blocked.setdefault(node, (cycle, member))
            self._blocked = blocked
        if name in self._blocked:
            return self._blocked[name]
        own = self.cycle_of(name)
        return None if own is None else (own, name)

    def require_acyclic(self, names: Iterable[RelationName]) -> None:
        """Raise CycleError for the first of ``names`` (in order given) that needs a cycle."""
        if not self.cycles:
            return
        for name in names:
            found = self.needs_cycle(name)
            if found is not None:
                cycle, member = found
                raise CycleError([str(m) for m in cycle.members],
                                 None if name == member else str(name), str(member))

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

    def nodes(self) -> list[RelationName]:
        """Every node, in insertion order."""
        return list(self.g)

    def number_of_edges(self) -> int:
        """How many (input, dependent) pairs."""
        return int(self.g.number_of_edges())

    def __len__(self) -> int:
        return int(self.g.number_of_nodes())

    def kind(self, name: RelationName) -> Kind:
        """The kind of a node."""
        kind = self.g.nodes[name]["kind"]
        return kind if type(kind) is Kind else Kind(kind)

    def memo(self, key: Hashable, compute: Callable[[], T]) -> T:
        """A value derived from this graph alone, computed once per key (a process plans many
        runs on one graph; graphs are not changed once built, the node count is a guard)."""
        shape = (id(self.g), len(self.g))
        if self._memo[0] != shape:
            self._memo = (shape, {})
        found = self._memo[1]
        if key not in found:
            found[key] = compute()
        return cast(T, found[key])

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
            CycleError: ``text`` names a view in a cycle of the catalog (see ``cycles``).
        """
        try:
            parsed = RelationName.parse(text, default_schema="\x00")
        except ValueError as exc:
            raise UnknownRelation(f"{text!r} is not a relation name: {exc}") from exc
        if self.cycles:
            self._refuse_cycle_member(parsed, search_path)
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

    def _refuse_cycle_member(self, parsed: RelationName, search_path: Sequence[str]) -> None:
        """Raise CycleError when a name means a cycle member rather than a node."""
        if parsed.schema != "\x00":
            candidates = [parsed]
        else:
            candidates = [RelationName(s, parsed.name) for s in search_path]
            if not any(n.name == parsed.name for n in self.g):  # a unique bare name
                candidates += [m for c in self.cycles for m in c.members
                               if m.name == parsed.name][:1]
        for candidate in candidates:
            if candidate in self.g:
                return
            cycle = self.cycle_of(candidate)
            if cycle is not None:
                raise CycleError([str(m) for m in cycle.members])

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
        """A topological order, deterministic: among ready nodes the smallest name goes first.
        The whole graph's order is computed once (a worker plans every job on one graph)."""
        if nodes is not None:
            return list(nx.lexicographical_topological_sort(self.g.subgraph(set(nodes)),
                                                            key=_sort_key))
        shape = (id(self.g), len(self.g))
        if self._order is None or self._order[0] != shape:
            self._order = (shape, list(nx.lexicographical_topological_sort(self.g,
                                                                           key=_sort_key)))
        return list(self._order[1])

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
        """A new graph holding only ``nodes`` and the edges among them (and the cycles some of
        them read)."""
        chosen = set(nodes)
        cycles = [c for c in self.cycles if chosen & set(c.read_by)]
        return MVGraph(self.g.subgraph(chosen).copy(), self.warnings, cycles)

    def select(self, expr: str, search_path: Sequence[str] = ("public",)) -> list[RelationName]:
        """Nodes matched by a dbt-style selector expression, in topological order.

        See :func:`mvgraph.selectors.select`.
        """
        return list(self.memo(("select", expr, tuple(search_path)), lambda: self.order(
            selectors.select(self, expr, search_path))))

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
        out: dict[str, Any] = {"version": JSON_VERSION, "nodes": nodes, "edges": edges}
        if self.cycles:
            out["cycles"] = [{"members": [str(m) for m in c.members],
                              "read_by": [{"from": str(m), "to": str(r)} for m, r in c.reads]}
                             for c in self.cycles]
        return out

    def _sorted_edges(self) -> list[tuple[RelationName, RelationName]]:
        return sorted(self.g.edges, key=lambda e: (_sort_key(e[0]), _sort_key(e[1])))

    def to_json(self, indent: int | None = 2) -> str:
        """JSON text of :meth:`to_dict` (``json.dumps``'s text, written faster)."""
        if indent is None:
            return json.dumps(self.to_dict())
        from mvgraph.jsontext import dumps

        return dumps(self.to_dict(), indent)

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
        cycles = [Cycle(tuple(RelationName.parse(m) for m in c["members"]),
                        tuple((RelationName.parse(e["from"]), RelationName.parse(e["to"]))
                              for e in c.get("read_by") or ()))
                  for c in data.get("cycles") or ()]
        return cls(g, cycles=cycles)

    def to_dot(self) -> str:
        """Graphviz DOT text; materialized views are boxes, views ellipses, tables cylinders,
        sequences diamonds, system relations notes. Cycles left out are named in comments."""
        shapes = {Kind.MATVIEW: "box", Kind.VIEW: "ellipse", Kind.EXTERNAL: "octagon",
                  Kind.SEQUENCE: "diamond", Kind.SYSTEM: "note"}
        lines = ["digraph mvgraph {", "  rankdir=LR;"]
        lines += [f"  // dependency cycle left out: {c.path}" for c in self.cycles]
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
        brackets = {Kind.MATVIEW: ("[", "]"), Kind.VIEW: ("(", ")"), Kind.EXTERNAL: ("{{", "}}"),
                    Kind.SEQUENCE: ("{", "}"), Kind.SYSTEM: ("[/", "/]")}
        lines = ["flowchart LR"]
        lines += [f"  %% dependency cycle left out: {c.path}" for c in self.cycles]
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


def _cycle_warning(cycle: Cycle) -> str:
    """One line naming a cycle of the catalog and what it leaves out."""
    if len(cycle.members) == 1:
        text = (f"{cycle.members[0]} reads itself (reading it fails with 'infinite recursion'); "
                "left out of the graph and of plans")
    else:
        text = (f"dependency cycle in the database: {cycle.path} (reading these views fails "
                "with 'infinite recursion'); left out of the graph and of plans")
    if cycle.read_by:
        text += f"; {', '.join(str(r) for r in cycle.read_by)} cannot be refreshed or read"
    return text + "; fix it with CREATE OR REPLACE VIEW or DROP VIEW"


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
