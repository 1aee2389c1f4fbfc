"""Trigger tracking and each base table's tracking mode (triggers, wal, stats, always): setting
and removing it (``track`` / ``untrack``), and reading how each table's writes are known.

The write-ahead-log side of ``wal`` mode is :mod:`mvgraph.tracking.wal`; the freshness facts built
from what both log are :mod:`mvgraph.refresh.changes`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from mvgraph.catalog import Relation, relations
from mvgraph.db.queries import query
from mvgraph.errors import MvgraphError, UnknownRelation, UsageError, translated
from mvgraph.model.names import RelationName
from mvgraph.tracking import wal

Conn = psycopg.Connection[tuple[object, ...]]

MODES = ("triggers", "stats", "always", "wal")
EXACT_MODES = ("triggers", "wal")
UNTRACKED = "untracked"  # no mode set: nothing says what changed, so readers are never skipped


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
