"""``mvgraph status``: every materialized view's freshness (the refresh facts), its lag against a
freshness target (:mod:`mvgraph.scheduler.lag`) and the tracking of the tables it reads.

It sits above both the refresh service and the lag report, which is why it is here and not in
:mod:`mvgraph.refresh.service` (that made ``refresh.service`` and ``scheduler.lag`` import each
other).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from mvgraph import catalog
from mvgraph.db.queries import query
from mvgraph.errors import translated
from mvgraph.model.definitions import Kind
from mvgraph.model.names import RelationName
from mvgraph.refresh import changes
from mvgraph.refresh.behavior import Action, decide, transitive_freshness
from mvgraph.refresh.service import Target, get_setting, planning_graph, session
from mvgraph.scheduler.lag import lag_report
from mvgraph.tracking import triggers, wal


@dataclass(frozen=True, slots=True)
class ViewStatus:
    """Freshness of one view."""

    name: RelationName
    fresh: bool
    reason: str
    refreshed_at: datetime | None
    duration_s: float | None
    lag_s: float | None = None  # a freshness target's current lag (None: none, or no data yet)
    target_lag_s: float | None = None  # its goal: set only for views with a target-lag schedule


@dataclass(frozen=True, slots=True)
class TableStatus:
    """Tracking mode of one base table."""

    name: RelationName
    mode: str  # triggers | wal | stats | always | untracked (as its readers see it)
    problems: tuple[str, ...] = ()  # why some writes would not be logged, each with the fix
    via: str | None = None  # untracked: the table to track (itself, or a parent above it)


@dataclass(frozen=True, slots=True)
class StatusReport:
    """Every view's freshness and every base table's tracking mode."""

    views: tuple[ViewStatus, ...]
    tables: tuple[TableStatus, ...]
    event_trigger: bool
    warnings: tuple[str, ...] = ()  # e.g. the wal-mode replication slot lags

    @property
    def untracked(self) -> tuple[RelationName, ...]:
        """Input tables nobody tracks: their readers are refreshed on every run."""
        return tuple(t.name for t in self.tables if t.mode == triggers.UNTRACKED)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "event_trigger": self.event_trigger,
            "warnings": list(self.warnings),
            "untracked": [str(n) for n in self.untracked],
            "views": [{"name": str(v.name), "fresh": v.fresh, "reason": v.reason,
                       "refreshed_at": v.refreshed_at.isoformat() if v.refreshed_at else None,
                       "duration_s": v.duration_s, "lag_s": v.lag_s,
                       "target_lag_s": v.target_lag_s} for v in self.views],
            "tables": [{"name": str(t.name), "mode": t.mode, "problems": list(t.problems),
                        **({"track": f"mvgraph track {t.via or t.name}"}
                           if t.mode == triggers.UNTRACKED else {})}
                       for t in self.tables],
        }


def status(target: Target) -> StatusReport:
    """Freshness of every materialized view and tracking mode of every base table they read."""
    with session(target) as conn:
        g = planning_graph(conn)
        mvs = [n for n in g.order() if g.kind(n) is Kind.MATVIEW]
        state = changes.read_state(conn, g, mvs)
        facts = changes.gather_facts(conn, g, mvs, state)
        rels = state.rels
        with translated():
            durations = {int(str(r[0])): r[2] for r in conn.execute(
                query("mv_states"), {"oids": [r.oid for r in rels.values()]})}
        verdicts = {n: decide(facts[n]) for n in mvs}
        for n in mvs:  # views reading a cycle of the catalog cannot be refreshed
            needed = g.needs_cycle(n)
            if needed is not None:
                verdicts[n] = (Action.REFRESH, f"cannot be refreshed: reads {needed[1]}, which is "
                               f"in a dependency cycle ({needed[0].path})")
        freshness = transitive_freshness(g, verdicts)
        lags = {d.target.view: d for d in lag_report(conn, graph=g)}
        views = []
        for n in mvs:
            fresh, reason = freshness[n]
            d = durations.get(rels[n].oid)
            lag = lags.get(n)
            views.append(ViewStatus(n, fresh, reason, facts[n].refreshed_at,
                                    float(str(d)) if d is not None else None,
                                    lag.lag_s if lag else None,
                                    lag.target.target_lag.total_seconds() if lag else None))
        tables = changes.base_tables_upstream_of_views(g)
        trels = catalog.relations(conn, tables)
        how = triggers.input_tracking(conn, [r.oid for r in trels.values()])
        gaps = triggers.tracking_problems(
            conn, {root: t.mode for t in how.values() if t.exact for root, _ in t.roots})
        described = {t: tuple(dict.fromkeys(  # a problem of a root once per table below it
            p.describe(t if root == trels[t].oid else name, how[trels[t].oid].mode)
            for root, name in how[trels[t].oid].roots for p in gaps.get(root, ())))
            for t in tables if t in trels}
        warning = wal.lag_warning(conn, get_setting(conn, "wal_slot_max_lag",
                                                    wal.DEFAULT_MAX_LAG))
        missing = changes.missing_event_triggers(conn)
        warnings = [f"event triggers {', '.join(missing)} missing: refreshes done outside "
                    "mvgraph and definition changes are not noticed; run `mvgraph init` as a "
                    "superuser"] if missing else []
        warnings += [f"writes to {t} are not all logged (its readers count as stale): {p}"
                     for t, ps in described.items() for p in ps]
        rows = tuple(TableStatus(t, how[trels[t].oid].mode, described[t], how[trels[t].oid].via)
                     for t in tables if t in trels)
        return StatusReport(tuple(views), rows, state.outside_seen,
                            (*warnings, *([warning] if warning else [])))
