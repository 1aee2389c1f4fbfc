"""The freshness facts of each view: what its inputs' change logs, the DDL event triggers and
the catalog say since its last refresh. Setting a table's tracking mode (its triggers) is
:mod:`mvgraph.tracking.triggers`; the WAL side is :mod:`mvgraph.tracking.wal`."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import psycopg

from mvgraph.catalog import Relation, relations
from mvgraph.db import install
from mvgraph.db.queries import query
from mvgraph.errors import PermissionDenied, UnknownRelation, translated
from mvgraph.graph import MVGraph
from mvgraph.model.definitions import Kind
from mvgraph.model.names import RelationName
from mvgraph.refresh.behavior import InputChange, MVFacts
from mvgraph.tracking import wal
from mvgraph.tracking.triggers import (
    UNTRACKED,
    Tracking,
    input_tracking,
    stat_counters,
    tracking_problems,
)

log = logging.getLogger("mvgraph")
Conn = psycopg.Connection[tuple[object, ...]]

_KIND_WORDS = {"w": "write", "r": "refresh", "o": "outside", "d": "ddl", "t": "tracking"}


def freshness_inputs(graph: MVGraph, mv: RelationName) -> set[RelationName]:
    """What a view's freshness depends on: inputs up to the nearest tables and materialized views,
    with the plain views on the way (their definitions can change)."""
    return set(graph.memo(("freshness_inputs", mv), lambda: frozenset(_inputs(graph, mv))))


def _inputs(graph: MVGraph, mv: RelationName) -> set[RelationName]:
    found: set[RelationName] = set()
    stack = list(graph.inputs(mv))
    while stack:
        node = stack.pop()
        if node in found:
            continue
        found.add(node)
        if graph.kind(node) is Kind.VIEW:
            stack.extend(graph.inputs(node))
    return found


def volatile_functions(graph: MVGraph, mv: RelationName) -> tuple[str, ...]:
    """Volatile functions the view calls, itself or through the plain views it reads."""
    return graph.memo(("volatile_functions", mv), lambda: _functions(graph, mv))


def _functions(graph: MVGraph, mv: RelationName) -> tuple[str, ...]:
    names = set(graph.attrs(mv).get("volatile_functions") or ())
    for node in freshness_inputs(graph, mv):
        if graph.kind(node) is Kind.VIEW:
            names |= set(graph.attrs(node).get("volatile_functions") or ())
    return tuple(sorted(names))


def volatile_inputs(graph: MVGraph, mv: RelationName) -> tuple[str, ...]:
    """Inputs that change with no write mvgraph could see (sequences, system relations), each
    as "sequence public.s" or "system relation pg_catalog.pg_locks", sorted."""
    words = {Kind.SEQUENCE: "sequence", Kind.SYSTEM: "system relation"}
    return graph.memo(("volatile_inputs", mv), lambda: tuple(
        f"{words[graph.kind(n)]} {n}" for n in sorted(freshness_inputs(graph, mv))
        if graph.kind(n).always_changing))


EVENT_TRIGGERS = ("mvgraph_ddl_end", "mvgraph_ddl_start")
# and the sql_drop trigger, which cancels the jobs and drops the schedules of dropped views
ALL_EVENT_TRIGGERS = install.EVENT_TRIGGERS


def missing_event_triggers(conn: Conn) -> list[str]:
    """mvgraph's event triggers that are not installed and enabled (``mvgraph init`` installs
    them, as a superuser)."""
    have = install.present_event_triggers(conn)
    return [t for t in ALL_EVENT_TRIGGERS if t not in have]


def event_trigger_present(conn: Conn, present: Iterable[str] | None = None) -> bool:
    """True when both of mvgraph's DDL event triggers are installed and enabled: outside
    refreshes and definition changes are noticed, and outside refreshes count as refreshes.
    ``present``: the names of those installed and enabled, when already read (a worker's
    claim returns them)."""
    if present is not None:
        return set(EVENT_TRIGGERS) <= set(present)
    return not set(missing_event_triggers(conn)) & set(EVENT_TRIGGERS)


def check_change_log(conn: Conn) -> bool:
    """Repair after a lost change log (it is unlogged: crash recovery and failover empty it):
    every view's last refresh is forgotten, so each is refreshed once. False when that happened.
    """
    with translated():
        row = conn.execute(query("change_log_intact")).fetchone()
    intact = bool(row and row[0])
    if not intact:
        log.warning("the change log was lost (server crash or failover): every materialized "
                    "view counts as never refreshed and is refreshed once")
    return intact


def base_tables_upstream_of_views(graph: MVGraph) -> list[RelationName]:
    """Every base table some materialized view reads (through any views)."""
    tables: set[RelationName] = set()
    for node in graph.g:
        if graph.kind(node) is Kind.MATVIEW:
            tables |= {n for n in freshness_inputs(graph, node)
                       if graph.kind(n).is_base and graph.kind(n) is not Kind.EXTERNAL}
    return sorted(tables)


@dataclass(frozen=True, slots=True)
class CatalogState:
    """What the database says about some views and their inputs: read once by planning and
    reused by the run that follows."""

    rels: Mapping[RelationName, Relation]
    outside_seen: bool  # the DDL event trigger is installed
    modes: Mapping[int, tuple[str, datetime | None]]  # tracking mode of each base-table input
    tracking: Mapping[int, Tracking] = field(default_factory=dict)  # and how it is known


def read_state(conn: Conn, graph: MVGraph, mvs: Iterable[RelationName], *,
               event_triggers: Iterable[str] | None = None) -> CatalogState:
    """Relations, event-trigger presence and input tracking modes for these views
    (``event_triggers``: mvgraph's installed and enabled, when already read)."""
    mvs = list(mvs)
    inputs = {i for mv in mvs for i in freshness_inputs(graph, mv)}
    rels = relations(conn, set(mvs) | inputs)
    base = {rels[i].oid for i in inputs if i in rels and rels[i].relkind in ("r", "p", "f")
            and graph.kind(i).is_base}
    tracking = input_tracking(conn, base) if base else {}
    modes = {o: (t.mode, t.since) for o, t in tracking.items()}
    if any(mode == "wal" for mode, _ in modes.values()):
        try:
            wal.catch_up(conn)  # every transaction committed before now is in the change log
        except PermissionDenied as exc:
            log.warning("cannot read the wal-mode replication slot (%s): writes committed since "
                        "it was last read (by the daemon, or a role with REPLICATION) are not "
                        "seen by this plan", exc)
    return CatalogState(rels, event_trigger_present(conn, event_triggers), modes, tracking)


def gather_facts(conn: Conn, graph: MVGraph, mvs: Iterable[RelationName],
                 known: CatalogState | None = None) -> dict[RelationName, MVFacts]:
    """The freshness facts of each view, in a handful of queries (``known``: already read)."""
    mvs = list(mvs)
    inputs = {mv: freshness_inputs(graph, mv) for mv in mvs}
    if known is None:
        known = read_state(conn, graph, mvs)
    rels, outside_seen, modes = known.rels, known.outside_seen, known.modes
    tracking = {o: known.tracking.get(o) or Tracking(mode, since)
                for o, (mode, since) in modes.items()}
    mv_oids = [rels[m].oid for m in mvs if m in rels]
    label: dict[tuple[int, int], RelationName] = {}  # (view, oid whose changes count) -> input
    for m in mvs:
        if m in rels:
            for i in inputs[m]:
                if i in rels:
                    for oid in rels[i].change_oids:
                        label.setdefault((rels[m].oid, oid), i)
    with translated():
        states = {int(str(r[0])): r for r in conn.execute(query("mv_states"),
                                                           {"oids": mv_oids}).fetchall()}
        counts = conn.execute(query("change_counts"), {
            "mvs": [p[0] for p in label], "inputs": [p[1] for p in label]}).fetchall()
    changes: dict[int, list[InputChange]] = defaultdict(list)
    for mv_oid, input_oid, kind, n, last_at in counts:
        changes[int(str(mv_oid))].append(InputChange(
            label[(int(str(mv_oid)), int(str(input_oid)))],
            _KIND_WORDS.get(str(kind), str(kind)), int(str(n)),
            last_at if isinstance(last_at, datetime) else None))
    stats_oids = {o for o, (mode, _) in modes.items() if mode == "stats"}
    roots = {root: t.mode for t in tracking.values() if t.exact for root, _ in t.roots}
    problems = tracking_problems(conn, roots)
    if stats_oids:
        current = stat_counters(conn, stats_oids)
        with translated():
            recorded = {(int(str(r[0])), int(str(r[1]))): (int(str(r[2])), int(str(r[3])))
                        for r in conn.execute(query("stat_inputs"), {"oids": mv_oids})}
    out: dict[RelationName, MVFacts] = {}
    for mv in mvs:
        rel = rels.get(mv)
        if rel is None:
            raise UnknownRelation(f"{mv} does not exist in the database; check the name")
        state = states.get(rel.oid)
        refreshed_at = state[1] if state is not None and isinstance(state[1], datetime) else None
        found = list(changes.get(rel.oid, ()))
        approximate = []
        for inp in sorted(inputs[mv]):
            r = rels.get(inp)
            if r is None or r.oid not in tracking:
                continue
            how = tracking[r.oid]
            for root, root_name in how.roots:
                for problem in problems.get(root, ()):
                    table = inp if root == r.oid else root_name
                    found.append(InputChange(inp, "untracked",
                                             detail=problem.describe(table, how.mode)))
            if how.mode == UNTRACKED:
                found.append(InputChange(inp, "not_tracked", detail=how.via or str(inp)))
            elif how.mode == "always":
                found.append(InputChange(inp, "always"))
            elif how.mode == "stats":
                approximate.append(inp)
                if refreshed_at is not None and (
                        recorded.get((rel.oid, r.oid)) != current.get(r.oid)):
                    found.append(InputChange(inp, "stats"))
        volatile_mode = str(state[4]) if state is not None else "auto"
        volatile = () if volatile_mode == "never" else volatile_functions(graph, mv)
        always = () if volatile_mode == "never" else volatile_inputs(graph, mv)
        if volatile_mode == "always" and not volatile and not always:
            volatile = ("(configured always stale)",)
        out[mv] = MVFacts(
            name=mv,
            populated=rel.populated,
            refreshed_at=refreshed_at,
            changes=tuple(sorted(found, key=lambda c: (str(c.input), c.kind))),
            volatile=volatile,
            volatile_inputs=always,
            outside_refreshes_seen=outside_seen,
            approximate=tuple(approximate),
        )
    return out

