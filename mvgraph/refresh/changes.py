"""Change tracking (triggers, event trigger, table modes) and the freshness facts of each view."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg import sql

from mvgraph.db import install
from mvgraph.db.queries import query
from mvgraph.errors import (
    MvgraphError,
    PermissionDenied,
    UnknownRelation,
    UsageError,
    translated,
)
from mvgraph.graph import MVGraph
from mvgraph.model.definitions import Kind
from mvgraph.model.names import RelationName
from mvgraph.refresh.behavior import InputChange, MVFacts
from mvgraph.tracking import wal

log = logging.getLogger("mvgraph")
Conn = psycopg.Connection[tuple[object, ...]]

MODES = ("triggers", "stats", "always", "wal")
EXACT_MODES = ("triggers", "wal")
UNTRACKED = "untracked"  # no mode set: nothing says what changed, so readers are never skipped
_KIND_WORDS = {"w": "write", "r": "refresh", "o": "outside", "d": "ddl", "t": "tracking"}


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


def freshness_inputs(graph: MVGraph, mv: RelationName) -> set[RelationName]:
    """What a view's freshness depends on: inputs up to the nearest tables and materialized views,
    with the plain views on the way (their definitions can change)."""
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
    names = set(graph.attrs(mv).get("volatile_functions") or ())
    for node in freshness_inputs(graph, mv):
        if graph.kind(node) is Kind.VIEW:
            names |= set(graph.attrs(node).get("volatile_functions") or ())
    return tuple(sorted(names))


def volatile_inputs(graph: MVGraph, mv: RelationName) -> tuple[str, ...]:
    """Inputs that change with no write mvgraph could see (sequences, system relations), each
    as "sequence public.s" or "system relation pg_catalog.pg_locks", sorted."""
    words = {Kind.SEQUENCE: "sequence", Kind.SYSTEM: "system relation"}
    return tuple(f"{words[graph.kind(n)]} {n}" for n in sorted(freshness_inputs(graph, mv))
                 if graph.kind(n).always_changing)


def relations(conn: Conn, names: Iterable[RelationName]) -> dict[RelationName, Relation]:
    """Current oid, kind, populated flag and index facts of existing relations."""
    wanted = {str(n): n for n in names}
    with translated():
        rows = conn.execute(query("relation_info"), {"names": list(wanted)}).fetchall()
    return {wanted[str(r[0])]: Relation(
        wanted[str(r[0])], int(str(r[1])), str(r[2]), bool(r[3]), bool(r[4]),
        tuple(int(a) for a in r[5]) if isinstance(r[5], list) else ()) for r in rows}


EVENT_TRIGGERS = ("mvgraph_ddl_end", "mvgraph_ddl_start")
# and the sql_drop trigger, which cancels the jobs and drops the schedules of dropped views
ALL_EVENT_TRIGGERS = install.EVENT_TRIGGERS


def missing_event_triggers(conn: Conn) -> list[str]:
    """mvgraph's event triggers that are not installed and enabled (``mvgraph init`` installs
    them, as a superuser)."""
    have = install.present_event_triggers(conn)
    return [t for t in ALL_EVENT_TRIGGERS if t not in have]


def event_trigger_present(conn: Conn) -> bool:
    """True when both of mvgraph's DDL event triggers are installed and enabled: outside
    refreshes and definition changes are noticed, and outside refreshes count as refreshes."""
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


def set_mode(conn: Conn, table: RelationName, mode: str) -> None:
    """Track a base table by ``triggers`` (exact), ``wal`` (exact, from the write-ahead log),
    ``stats`` (approximate) or ``always``.

    Idempotent: setting the mode a table already has logs no change and keeps its start time;
    in ``triggers`` mode, missing triggers (a partition created later) are added and older
    forms replaced. Views reading the table turn stale only when the mode changes or a
    trigger was missing (writes went unlogged). ``wal`` makes the database's replication slot
    first (needs wal_level = logical); leaving ``wal`` drops it once no table uses it.

    Raises:
        UsageError: unknown mode, wal_level not logical for ``wal``, or the relation is not
            a base table.
    """
    if mode not in MODES:
        raise UsageError(f"unknown tracking mode {mode!r}; use triggers, wal, stats or always")
    rel = relations(conn, [table]).get(table)
    if rel is None or rel.relkind not in ("r", "p", "f"):
        raise UnknownRelation(f"{table} is not a table in this database; track base tables only")
    if mode in ("triggers", "wal") and rel.relkind == "f":
        raise UsageError(f"{table} is a foreign table and cannot be tracked by {mode}; use "
                         "--mode always")
    if mode != "wal":
        before = _switch(conn, rel, table, mode)
        if before == "wal":
            wal.drop_if_unused(conn)
        return
    with wal.held(conn):  # no concurrent `untrack` drops the slot between prepare and switch
        try:
            wal.prepare(conn)  # before the switch: a slot is made in a transaction of its own
            _switch(conn, rel, table, mode)
        except BaseException:
            with suppress(MvgraphError, psycopg.Error):  # the first error is the one to tell
                wal.drop_if_unused(conn)  # never a slot left behind with no table using it
            raise


def _switch(conn: Conn, rel: Relation, table: RelationName, mode: str) -> str:
    """The transaction changing a table's mode (triggers, publications, mode row, tracking
    start); returns the mode it had."""
    with translated(), conn.transaction():
        before = table_modes(conn, [rel.oid]).get(rel.oid, (UNTRACKED, None))[0]
        # a relation whose trigger was missing, disabled, replaced or not mvgraph's: its writes
        # may have gone unlogged, so tracking starts again (the readers are refreshed once)
        gaps = tracking_problems(conn, {rel.oid: before}) if mode == before else {}
        unlogged = _install_triggers(conn, rel) if mode == "triggers" else []
        if gaps or (mode == before == "wal" and wal.problems(conn)):
            unlogged.append(rel.oid)  # (wal: a publication altered, the table not in it, ...)
        if mode != "triggers":
            _drop_triggers(conn, rel)
        if mode == "wal":
            if not wal.publish(conn, rel.oid, table.schema, table.name):
                _install_triggers(conn, rel, "create_track_trigger_ud")
        else:
            wal.unpublish(conn, rel.oid, table.schema, table.name)
        _record(conn, rel, mode)
        conn.execute(query("set_table_mode"), {"oid": rel.oid, "name": str(table), "mode": mode})
        started = [rel.oid] if mode != before else unlogged
        if started:
            conn.execute(query("log_tracking_start"), {"oids": started})
    return before


def untrack(conn: Conn, table: RelationName) -> None:
    """Remove a table's tracking triggers (or take it out of wal mode, or of ``stats`` or
    ``always``): it is untracked again, and its readers are refreshed on every run. The
    replication slot goes with the last table in wal mode."""
    rel = relations(conn, [table]).get(table)
    if rel is None or rel.relkind not in ("r", "p", "f"):
        raise UnknownRelation(f"{table} is not a table in this database; untrack base tables only")
    with translated(), conn.transaction():
        before = table_modes(conn, [rel.oid]).get(rel.oid, (UNTRACKED, None))[0]
        _drop_triggers(conn, rel)
        if rel.relkind != "f":
            wal.unpublish(conn, rel.oid, table.schema, table.name)
        _record(conn, rel, None)
        conn.execute(query("clear_table_mode"), {"oid": rel.oid})
        if before != UNTRACKED:
            conn.execute(query("log_tracking_start"), {"oids": [rel.oid]})
    if before == "wal":
        wal.drop_if_unused(conn)


def _record(conn: Conn, rel: Relation, mode: str | None) -> None:
    """Record the tracking triggers now on the table's tree as mvgraph's (plans compare them with
    the catalog: a trigger disabled, replaced or added since is reported)."""
    if rel.relkind != "f":
        conn.execute(query("record_tracking"),
                     {"oid": rel.oid, "mode": mode if mode in ("triggers", "wal") else None})


def _install_triggers(conn: Conn, rel: Relation,
                      create: str = "create_track_trigger") -> list[int]:
    """Give the table and each partition and inheritance child below it the current tracking
    trigger, leaving current ones alone; returns the oids that had none logging their writes.
    (``create``:
    the UPDATE/DELETE-only form, on a wal-mode table without replica identity.)"""
    unlogged = []
    rows = conn.execute(query("track_triggers"), {
        "oid": rel.oid, "tgtype": 60 if create == "create_track_trigger" else 24}).fetchall()
    for oid, schema, name, has_parent, logs, current in rows:
        if current:
            continue
        ident = sql.Identifier(str(schema), str(name))
        _drop_trigger(conn, ident)
        conn.execute(sql.SQL(query(create)).format(
            table=ident, args=sql.Literal("partition") if has_parent else sql.SQL("")))
        if not logs:
            unlogged.append(int(str(oid)))
    return unlogged


def _drop_trigger(conn: Conn, table: sql.Composable) -> None:
    conn.execute(sql.SQL(query("drop_track_trigger")).format(table=table))


def _drop_triggers(conn: Conn, rel: Relation) -> None:
    if rel.relkind == "f":
        return
    for _, schema, name, *_ in conn.execute(query("track_triggers"),
                                            {"oid": rel.oid, "tgtype": 60}).fetchall():
        _drop_trigger(conn, sql.Identifier(str(schema), str(name)))


def base_tables_upstream_of_views(graph: MVGraph) -> list[RelationName]:
    """Every base table some materialized view reads (through any views)."""
    tables: set[RelationName] = set()
    for node in graph.g:
        if graph.kind(node) is Kind.MATVIEW:
            tables |= {n for n in freshness_inputs(graph, node)
                       if graph.kind(n).is_base and graph.kind(n) is not Kind.EXTERNAL}
    return sorted(tables)


def table_modes(conn: Conn, oids: Iterable[int]) -> dict[int, tuple[str, datetime | None]]:
    """Tracking mode set on each table oid (``untracked`` when none, ``always`` for a foreign
    table without one)."""
    with translated():
        rows = conn.execute(query("table_modes"), {"oids": list(oids)}).fetchall()
    return {int(str(r[0])): (str(r[1]), r[2] if isinstance(r[2], datetime) else None)
            for r in rows}


@dataclass(frozen=True, slots=True)
class Tracking:
    """How the writes of one base-table input are known to its readers."""

    mode: str  # triggers | wal (exact) | stats (approximate) | always | untracked
    since: datetime | None = None
    roots: tuple[tuple[int, str], ...] = ()  # the tracked tables (oid, name) logging it
    via: str | None = None  # untracked: the table whose tracking would cover it

    @property
    def exact(self) -> bool:
        """True when its writes are logged exactly (``triggers`` or ``wal``)."""
        return self.mode in EXACT_MODES


def input_tracking(conn: Conn, oids: Iterable[int]) -> dict[int, Tracking]:
    """How the writes of each base table are known, as its readers see them.

    A table's own mode, unless it is a partition or an inheritance child: writes routed through
    a parent fire only the statement trigger of the table named in the statement, so it is
    covered exactly only when every topmost table above it is tracked exactly (their trees
    include it). Below an untracked parent it is untracked, whatever its own exact mode; below
    a parent in ``stats`` or ``always`` it takes that mode. Its own ``stats`` or ``always``
    (explicit, set on it) stands, and a foreign table without a mode is ``always``: its writes
    happen on another server.
    """
    with translated():
        rows = conn.execute(query("input_tracking"), {"oids": list(oids)}).fetchall()
    out: dict[int, Tracking] = {}
    for oid_, name, relkind, own_, since_, tops_, names_, modes_, top_since_ in rows:
        oid, own = int(str(oid_)), (str(own_) if own_ is not None else None)
        since = since_ if isinstance(since_, datetime) else None
        tops = [int(str(t)) for t in tops_] if isinstance(tops_, list) else []
        names = [str(n) for n in names_] if isinstance(names_, list) else []
        top_modes = [str(m) for m in modes_] if isinstance(modes_, list) else []
        top_since = top_since_ if isinstance(top_since_, datetime) else None
        if own in ("stats", "always") or (own is None and relkind == "f"):
            out[oid] = Tracking(own or "always", since)
        elif not tops:
            out[oid] = Tracking(own, since, ((oid, str(name)),)) if own else Tracking(UNTRACKED)
        elif "" in top_modes:  # a parent nobody tracks: writes through it are not logged
            out[oid] = Tracking(UNTRACKED, via=names[top_modes.index("")])
        elif "always" in top_modes or "stats" in top_modes:
            out[oid] = Tracking("always" if "always" in top_modes else "stats", top_since)
        else:
            out[oid] = Tracking(own or top_modes[0], max(filter(None, (since, top_since)),
                                                          default=None),
                                (*zip(tops, names, strict=True),
                                 *(((oid, str(name)),) if own else ())))
    return out


def stat_counters(conn: Conn, oids: Iterable[int]) -> dict[int, tuple[int, int]]:
    """(write counter, file node) of each table, for ``stats`` mode."""
    with translated():
        rows = conn.execute(query("stat_counters"), {"oids": list(oids)}).fetchall()
    return {int(str(r[0])): (int(str(r[1])), int(str(r[2]))) for r in rows}


@dataclass(frozen=True, slots=True)
class TrackingProblem:
    """A relation of a tracked table's tree whose writes would not all be logged."""

    table: int  # the tracked table's oid
    relation: str  # the relation with the problem (the table, a partition or a child)
    problem: str

    def describe(self, table: RelationName | str, mode: str) -> str:
        """What is wrong and the fix, e.g. "public.t_2024 (below public.t) has its tracking
        trigger disabled; run `mvgraph track public.t`"."""
        where = self.relation if self.relation == str(table) else \
            f"{self.relation} (below {table})"
        fix = f"mvgraph track {table}" + (" --mode wal" if mode == "wal" else "")
        return f"{where} {self.problem}; run `{fix}`"


def tracking_problems(conn: Conn, modes: Mapping[int, str]) -> dict[int, list[TrackingProblem]]:
    """For tables in ``triggers`` or ``wal`` mode (oid -> mode), every relation of each one's
    tree (partitions and inheritance children) whose tracking trigger is missing, disabled,
    not mvgraph's or altered since ``mvgraph track``; one catalog query for all of them."""
    tracked = {o: m for o, m in modes.items() if m in ("triggers", "wal")}
    if not tracked:
        return {}
    with translated():
        rows = conn.execute(query("tracking_problems"), {
            "oids": list(tracked), "modes": list(tracked.values())}).fetchall()
    out: dict[int, list[TrackingProblem]] = defaultdict(list)
    for root, relation, _, problem in rows:
        out[int(str(root))].append(TrackingProblem(int(str(root)), str(relation), str(problem)))
    return dict(out)


@dataclass(frozen=True, slots=True)
class CatalogState:
    """What the database says about some views and their inputs: read once by planning and
    reused by the run that follows."""

    rels: Mapping[RelationName, Relation]
    outside_seen: bool  # the DDL event trigger is installed
    modes: Mapping[int, tuple[str, datetime | None]]  # tracking mode of each base-table input
    tracking: Mapping[int, Tracking] = field(default_factory=dict)  # and how it is known


def read_state(conn: Conn, graph: MVGraph, mvs: Iterable[RelationName]) -> CatalogState:
    """Relations, event-trigger presence and input tracking modes for these views."""
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
    return CatalogState(rels, event_trigger_present(conn), modes, tracking)


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

