"""Schedule operations on a connection: what the CLI, the library and the SQL front-end's
GaussDB statements call. Values are checked here (exit 2), views found here (exit 4)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from mvgraph.errors import SqlParseError, UsageError
from mvgraph.model.definitions import Schedule as ScheduleClause
from mvgraph.model.status import Overlap, ScheduleKind, SlotStatus
from mvgraph.refresh.behavior import RefreshBehavior
from mvgraph.scheduler import store
from mvgraph.scheduler.clauses import check_clause, clause_message
from mvgraph.scheduler.store import Schedule, ScheduleSpec
from mvgraph.scheduler.timing import Timing, check_cron, describe, zone

Conn = psycopg.Connection[tuple[object, ...]]


@dataclass(frozen=True, slots=True)
class Clock:
    """A clock as given on the command line: at most one of every / cron / target_lag (start
    and tz go with them). All None: keep the schedule's current clock (alter)."""

    every: str | None = None
    start: str | None = None
    cron: str | None = None
    target_lag: str | None = None
    tz: str | None = None

    def check(self, required: bool) -> None:
        """Refuse contradictions before touching the database."""
        given = [k for k in ("every", "cron", "target_lag") if getattr(self, k) is not None]
        if len(given) > 1:
            raise UsageError("give one of --every, --cron and --target-lag")
        if required and not given:
            raise UsageError("give one of --every '1 hour', --cron '*/5 * * * *' or "
                             "--target-lag '10 minutes'")
        if self.start is not None and self.every is None:
            raise UsageError("--start goes with --every")
        if self.cron is not None:
            check_cron(self.cron)
        if self.tz is not None:
            zone(self.tz)


def _timing(conn: Conn, clock: Clock, old: Timing | None) -> tuple[Timing, str | None]:
    """The clock to store, and the interval as written."""
    tz = clock.tz or (old.tz if old else "UTC")
    if clock.every is not None:
        every = store.interval(conn, clock.every)
        if clock.start is not None or old is None or old.start is None:
            start = store.start_time(conn, clock.start, tz)
        else:
            start = old.start  # EVERY without START WITH keeps the start
        return Timing.interval(every, start, tz), clock.every
    if clock.cron is not None:
        return Timing.cron(clock.cron, tz), None
    if clock.target_lag is not None:
        lag = store.interval(conn, clock.target_lag, what="target lag")
        return Timing.lag(lag, tz), None
    assert old is not None
    return replace(old, tz=tz), None


def add(conn: Conn, view: str, clock: Clock, *, behavior: str | None = None,
        overlap: str = "skip", search_path: Sequence[str] = ("public",),
        source: str = "cli") -> Schedule:
    """Schedule a materialized view (one schedule per view).

    Raises:
        UnknownRelation: no such materialized view (exit 4). UsageError: a bad interval,
        cron expression, time zone or behaviour (exit 2). DuplicateSchedule: it has one (1).
    """
    clock.check(required=True)
    parsed = RefreshBehavior.parse(behavior)
    mode = _overlap(overlap)
    oid, name = store.find_matview(conn, view, list(search_path))
    timing, every_text = _timing(conn, clock, None)
    sid = store.add(conn, ScheduleSpec(oid, name, parsed, timing, every_text, mode, source))
    return store.schedules(conn, sid)[0]


def alter(conn: Conn, view: str, clock: Clock, *, behavior: str | None = None,
          overlap: str | None = None, search_path: Sequence[str] = ("public",)) -> Schedule:
    """Change what is given of a schedule's clock, behaviour and overlap policy."""
    clock.check(required=False)
    current = store.get(conn, view, list(search_path))
    timing, every_text = _timing(conn, clock, current.timing)
    if every_text is None and timing.kind is ScheduleKind.INTERVAL:
        every_text = current.every_text
    spec = ScheduleSpec(current.view_oid, current.view_name,
                        RefreshBehavior.parse(behavior) if behavior else current.behavior,
                        timing, every_text,
                        _overlap(overlap) if overlap else current.overlap)
    store.update(conn, current.id, spec)
    return store.schedules(conn, current.id)[0]


def _overlap(word: str) -> Overlap:
    try:
        return Overlap(word.strip().lower())
    except ValueError:
        raise UsageError(f"--overlap must be skip or queue, not {word!r}") from None


def remove(conn: Conn, view: str, search_path: Sequence[str] = ("public",)) -> str:
    """Remove a view's schedule (and its slot history); returns its name."""
    current = store.get(conn, view, list(search_path))
    store.remove(conn, current.id)
    return current.name


def set_enabled(conn: Conn, view: str, enabled: bool,
                search_path: Sequence[str] = ("public",)) -> Schedule:
    """Pause, or resume (clears is_broken and the failure count)."""
    current = store.get(conn, view, list(search_path))
    store.set_enabled(conn, current, enabled)
    return store.schedules(conn, current.id)[0]


def run_now(conn: Conn, view: str, search_path: Sequence[str] = ("public",)) -> int:
    """Submit the schedule's refresh as a background job now, linked to the schedule by a
    manual slot; returns the job id (``mvgraph worker`` runs it)."""
    from mvgraph.refresh.service import submit_refresh

    current = store.get(conn, view, list(search_path))
    if not current.view_exists:
        raise UsageError(f"the view of schedule {current.name} is gone; remove the schedule")
    job = submit_refresh(conn, [current.view_name], current.behavior.value)
    at = datetime.now(UTC)
    store.claim_slot(conn, current.id, at, SlotStatus.FIRED, job_id=job, manual=True,
                     reason="run-now")
    store.set_slot_job(conn, current.id, at, job)
    return job


# ---- the GaussDB clauses (SQL front-end, schedule sync) --------------------------------------

def apply_clause(conn: Conn, view_oid: int, view_name: str, clause: ScheduleClause, *,
                 source: str) -> tuple[str, Schedule | None]:
    """Make a view's schedule say what a ``REFRESH [behaviour] [START WITH] [EVERY]`` clause
    says (CREATE or ALTER MATERIALIZED VIEW): ``added``, ``altered``, ``unchanged`` or ``none``
    (a clause without EVERY on a view without a schedule: nothing to run on a clock).

    A clause given only a behaviour keeps the clock (``REFRESH default``); EVERY without START
    WITH keeps the start (or starts now, for a new schedule).
    """
    current = store.find_by_view(conn, view_oid)
    behavior = (RefreshBehavior.parse(clause.behavior) if clause.behavior
                else current.behavior if current else RefreshBehavior.DEFAULT)
    if clause.every is None and clause.start is None:
        if current is None:
            return "none", None
        spec = _spec_of(current, behavior=behavior)
    else:
        if clause.every is None and (current is None or current.timing.every is None):
            raise UsageError(f"{view_name}: START WITH needs EVERY (interval) for a schedule")
        tz = current.timing.tz if current else store.session_zone(conn)
        every = (store.interval(conn, clause.every, expression=True) if clause.every
                 else current.timing.every if current else None)
        assert every is not None
        if clause.start is not None:
            start = store.start_time(conn, clause.start, tz, expression=True)
        elif current is not None and current.timing.start is not None:
            start = current.timing.start
        else:
            start = datetime.now(UTC).replace(microsecond=0)
        every_text = clause.every or (current.every_text if current else None)
        spec = ScheduleSpec(view_oid, view_name, behavior, Timing.interval(every, start, tz),
                            every_text, current.overlap if current else Overlap.SKIP, source)
    if current is None:
        sid = store.add(conn, spec)
        return "added", store.schedules(conn, sid)[0]
    if _same(current, spec):
        return "unchanged", current
    store.update(conn, current.id, spec)
    return "altered", store.schedules(conn, current.id)[0]


def _spec_of(s: Schedule, *, behavior: RefreshBehavior | None = None) -> ScheduleSpec:
    return ScheduleSpec(s.view_oid, s.view_name, behavior or s.behavior, s.timing, s.every_text,
                        s.overlap, s.source)


def _same(s: Schedule, spec: ScheduleSpec) -> bool:
    return (s.behavior, s.timing, s.every_text) == (spec.behavior, spec.timing, spec.every_text)


@dataclass
class SyncReport:
    """What ``schedule sync --from-sql`` changed: (action, name, detail) in order."""

    changes: list[tuple[str, str, str]] = field(default_factory=list)

    def to_dict(self) -> list[dict[str, str]]:
        """The ``--json`` shape: one object per change."""
        return [{"action": a, "name": n, "detail": d} for a, n, d in self.changes]


def sync_from_sql(conn: Conn, paths: Sequence[str | Path],
                  search_path: Sequence[str] = ("public",)) -> SyncReport:
    """Make the schedules table match the schedule clauses of SQL files: views whose final
    definition (after ALTERs) has an EVERY get one, changed ones are altered, schedules of
    views without one (or not in the files) are removed. Views must exist in the database.

    Raises:
        SqlLoadErrors: the files do not load. UnknownRelation: a scheduled view is not in the
        database (exit 4; nothing changed).
    """
    from mvgraph.sql.sqlfiles import graph_from_sql

    graph = graph_from_sql(list(paths), search_path=search_path)
    wanted: dict[str, tuple[ScheduleClause, str]] = {}
    for node in graph.order():
        attrs = graph.attrs(node)
        found = attrs.get("schedule")
        if isinstance(found, ScheduleClause) and found.every is not None:
            wanted[str(node)] = (found, str(attrs.get("source") or "sql"))
    for clause, source in wanted.values():  # every clause a value before anything is evaluated
        check_clauses(clause, source)
    report = SyncReport()
    targets = {name: store.find_matview(conn, name, list(search_path)) for name in wanted}
    with conn.transaction():
        keep: set[int] = set()
        for name, (clause, source) in wanted.items():
            oid, qualified = targets[name]
            keep.add(oid)
            try:
                action, row = apply_clause(conn, oid, qualified, clause, source=source)
            except UsageError as exc:  # e.g. an interval in months: say where it is written
                raise UsageError(f"{source}: {exc}") from None
            if action in ("added", "altered") and row is not None:
                report.changes.append((action, row.name, _brief(row)))
        for s in store.schedules(conn):
            if s.view_oid not in keep:
                store.remove(conn, s.id)
                report.changes.append(("removed", s.name, "no schedule clause in the files"))
    return report


def check_clauses(clause: ScheduleClause, source: str) -> None:
    """Refuse a ``START WITH`` / ``EVERY`` that is not a value (pure: nothing is evaluated).

    Raises:
        SqlParseError: naming ``source`` (``file.sql:12``), the clause and what is refused.
    """
    for label, text in (("START WITH", clause.start), ("EVERY", clause.every)):
        reason = check_clause(text) if text is not None else None
        if text is not None and reason is not None:
            path, _, line = source.rpartition(":")
            if not line.isdigit():
                path, line = source, "0"
            raise SqlParseError(clause_message(label, text, reason), path, int(line))


def describe_clock(s: Schedule) -> str:
    """The schedule's clock in words, e.g. ``every interval '1 s' from 2020-01-01T...``."""
    return describe(s.timing, s.every_text)


def _brief(s: Schedule) -> str:
    return f"{s.behavior.value} {describe_clock(s)}"
