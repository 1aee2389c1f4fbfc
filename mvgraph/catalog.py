"""The live database's relations and dependencies, read from the catalog in three queries."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import psycopg

from mvgraph.db.queries import query
from mvgraph.errors import translated
from mvgraph.graph import MVGraph
from mvgraph.model.definitions import Definition, Kind
from mvgraph.model.names import RelationName

_KINDS = {
    "r": Kind.TABLE,
    "v": Kind.VIEW,
    "m": Kind.MATVIEW,
    "f": Kind.FOREIGN_TABLE,
    "p": Kind.PARTITIONED_TABLE,
    "S": Kind.SEQUENCE,
}

# Stable in PostgreSQL's terms but time-dependent: an MV using them changes without any write.
TIME_FUNCTIONS = (
    "now", "statement_timestamp", "transaction_timestamp", "clock_timestamp", "timeofday",
    "current_date", "current_time", "current_timestamp", "localtime", "localtimestamp",
)


def read_definitions(conn: psycopg.Connection[tuple[object, ...]],
                     schemas: Sequence[str] | None = None,
                     with_sql: bool = True) -> list[Definition]:
    """Every user relation with the relations its rule reads.

    Sequences and the relations of pg_catalog and information_schema (kind SYSTEM, with no
    inputs of their own) are returned only when some view reads them, as the SQL-file side
    sees them. With ``schemas``, only relations in those schemas are returned, plus the
    relations they read directly (so that every edge has both ends). ``with_sql=False`` leaves
    out the view definitions, whose reading waits for any running plain REFRESH (planning never
    needs them).
    """
    with translated():
        rows = conn.execute(query("relations"), {"with_sql": with_sql}).fetchall()
        deps = conn.execute(query("dependencies")).fetchall()
        facts = conn.execute(query("rule_facts"),
                             {"time_functions": list(TIME_FUNCTIONS)}).fetchall()
    deps += [(src, oid) for oid, _, src in facts if src is not None]
    volatile = [(oid, fn) for oid, fn, _ in facts if fn is not None]
    by_oid: dict[int, tuple[object, ...]] = {int(str(r[7])): r for r in rows}
    readers = {oid for oid, r in by_oid.items() if not r[8] and r[2] in ("v", "m")}
    reads: dict[int, set[int]] = defaultdict(set)
    for src, dst in deps:
        if int(str(src)) in by_oid and int(str(dst)) in readers:
            reads[int(str(dst))].add(int(str(src)))
    funcs: dict[int, set[str]] = defaultdict(set)
    for oid, fn in volatile:
        funcs[int(str(oid))].add(str(fn))

    def name_of(oid: int) -> RelationName:
        row = by_oid[oid]
        return RelationName(str(row[0]), str(row[1]))

    read = {src for srcs in reads.values() for src in srcs}
    # sequences, system relations and extensions' relations only where a view reads them
    keep = {oid for oid, r in by_oid.items()
            if (not r[8] and not r[9] and r[2] != "S") or oid in read}
    if schemas:
        wanted = {oid for oid in keep if by_oid[oid][0] in set(schemas)}
        keep = wanted | {src for oid in wanted for src in reads.get(oid, ())}
    out = []
    for oid in sorted(keep, key=name_of):
        schema, name, relkind, owner, populated, definition, concurrent, _, system, _ = \
            by_oid[oid]
        kind = Kind.SYSTEM if system else _KINDS[str(relkind)]
        out.append(Definition(
            name=RelationName(str(schema), str(name)),
            kind=kind,
            reads=frozenset(name_of(s) for s in reads.get(oid, ()) if s in keep),
            sql=None if definition is None else str(definition).strip(),
            owner=str(owner),
            populated=bool(populated) if kind == Kind.MATVIEW else None,
            concurrent_index=bool(concurrent) if kind == Kind.MATVIEW else None,
            volatile_functions=tuple(sorted(funcs.get(oid, ()))),
            source="catalog",
        ))
    return out


def catalog_graph(conn: psycopg.Connection[tuple[object, ...]],
                  schemas: Sequence[str] | None = None, with_sql: bool = True,
                  strict: bool = False) -> MVGraph:
    """The graph of the live database. A cycle among its views (``CREATE OR REPLACE VIEW`` can
    close one) is a warning, not an error: its views are left out (``graph.cycles``) and only
    what needs them is refused (:meth:`MVGraph.require_acyclic`)."""
    return MVGraph.from_definitions(read_definitions(conn, schemas, with_sql), strict=strict,
                                    on_cycle="warn")


def catalog_fingerprint(conn: psycopg.Connection[tuple[object, ...]]) -> str:
    """A digest of the catalog facts a graph is built from; it changes with any DDL that could
    change the graph (and with some that cannot), never with a REFRESH. Read it *before* the
    graph it keys, so that DDL committed in between makes the next reading differ."""
    with translated():
        row = conn.execute(query("catalog_fingerprint")).fetchone()
    return str(row[0]) if row else ""


CACHE_DAYS = 30  # cached catalog graphs unused this long are deleted


def graph_cache_dir() -> Path:
    """Where catalog graphs are cached: ``catalog`` in ``MVGRAPH_CACHE_DIR`` or the user cache
    dir (next to the parse cache)."""
    override = os.environ.get("MVGRAPH_CACHE_DIR")
    if override:
        return Path(override) / "catalog"
    import platformdirs

    return platformdirs.user_cache_path("mvgraph") / "catalog"


def cached_planning_graph(conn: psycopg.Connection[tuple[object, ...]]) -> MVGraph:
    """``catalog_graph(conn, with_sql=False)``, kept on disk between processes under the
    catalog's fingerprint (read first, as the worker's in-memory cache does): a new process
    that plans against an unchanged catalog reads one digest instead of three catalog queries
    (the rule trees' scan is most of a plan's server time). Any DDL that could change the graph
    changes the fingerprint; the key also names the server and database. The last few graphs
    are kept in memory as well. A cache that cannot be read or written is ignored."""
    from mvgraph.version import __version__

    fingerprint = catalog_fingerprint(conn)
    info = conn.info
    key = hashlib.sha256("\0".join(map(str, (
        __version__, info.host, info.port, info.dbname, fingerprint))).encode()).hexdigest()
    path = graph_cache_dir() / f"{key}.json"
    key = str(path)
    if key in _graphs:
        return _graphs[key]
    with suppress(OSError, ValueError, KeyError, TypeError):
        return _keep(key, _load_graph(json.loads(path.read_text(encoding="utf-8"))))
    graph = _keep(key, catalog_graph(conn, with_sql=False))
    with suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({
            "graph": graph.to_dict(), "warnings": graph.warnings,
            "nodes": [str(n) for n in graph.g],
            "edges": [[str(u), str(v)] for u, v in graph.g.edges]}), encoding="utf-8")
        tmp.replace(path)
        old = time.time() - CACHE_DAYS * 86400
        for entry in path.parent.glob("*.json"):
            with suppress(OSError):
                if entry.stat().st_mtime < old:
                    entry.unlink()
    return graph


_graphs: dict[str, MVGraph] = {}  # this process's graphs by cache key, newest last
GRAPHS_KEPT = 8


_graphs_lock = threading.Lock()


def _keep(key: str, graph: MVGraph) -> MVGraph:
    """Keep a graph in memory too (a plan never changes its graph): the next plan in this
    process against the same catalog skips reading and parsing the file."""
    with _graphs_lock:
        _graphs.pop(key, None)
        _graphs[key] = graph
        while len(_graphs) > GRAPHS_KEPT:
            del _graphs[next(iter(_graphs))]
    return graph


def _load_graph(data: dict[str, object]) -> MVGraph:
    """A cached graph, nodes and edges in the order the catalog gave them (as a graph read
    from the catalog iterates them)."""
    import networkx as nx

    loaded = MVGraph.from_json(data["graph"])  # type: ignore[arg-type]
    g: nx.DiGraph = nx.DiGraph()
    for name in data["nodes"]:  # type: ignore[attr-defined]
        node = RelationName.parse(name)
        g.add_node(node, **loaded.g.nodes[node])
    g.add_edges_from((RelationName.parse(u), RelationName.parse(v))
                     for u, v in data["edges"])  # type: ignore[attr-defined]
    if len(g) != len(loaded.g) or len(g.edges) != len(loaded.g.edges):
        raise ValueError("inconsistent cache entry")
    return MVGraph(g, [str(w) for w in data["warnings"]],  # type: ignore[attr-defined]
                   loaded.cycles)


@dataclass(frozen=True, slots=True)
class Relation:
    """A relation as the database sees it right now."""

    name: RelationName
    oid: int
    relkind: str
    populated: bool
    concurrent_index: bool
    ancestors: tuple[int, ...] = ()  # partitioned tables and inheritance parents above it

    @property
    def change_oids(self) -> tuple[int, ...]:
        """Whose change rows concern this relation: itself and, for a partition or an
        inheritance child, its ancestors (a write through a parent logs only the parent)."""
        return (self.oid, *self.ancestors)


def relations(conn: psycopg.Connection[tuple[object, ...]],
              names: Iterable[RelationName]) -> dict[RelationName, Relation]:
    """Current oid, kind, populated flag and index facts of existing relations."""
    wanted = {str(n): n for n in names}
    with translated():
        rows = conn.execute(query("relation_info"), {"names": list(wanted)}).fetchall()
    return {wanted[str(r[0])]: Relation(
        wanted[str(r[0])], int(str(r[1])), str(r[2]), bool(r[3]), bool(r[4]),
        tuple(int(a) for a in r[5]) if isinstance(r[5], list) else ()) for r in rows}
