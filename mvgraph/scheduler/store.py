"""Schedule persistence: every ``mvgraph.schedule`` and ``mvgraph.schedule_slot`` row is written
here, and only here (the SQL lives in ``queries.sql`` and ``0008_schedules.sql``).

For the daemon: :func:`schedules` reads the table (the only source of truth; LISTEN on
:data:`CHANNEL` for changes, payload ``insert:ID`` / ``update:ID`` / ``delete:ID``);
:func:`fire_slots` fires the slots due at one instant in one statement (overlap rule, claim,
job, next run); :func:`claim_slot` records a slot exactly once across every daemon (the unique
key ``(schedule_id, slot)``); :func:`set_slot_job` links the job it submitted;
:func:`set_next_run` keeps ``next_run`` current for ``scheduler.pg_task``.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql

from mvgraph.db.queries import query
from mvgraph.errors import (
    DatabaseError,
    NotFound,
    UnknownRelation,
    UsageError,
    translate,
    translated,
)
from mvgraph.model.names import RelationName
from mvgraph.model.status import LastRun, Overlap, ScheduleKind, SlotStatus
from mvgraph.refresh.behavior import RefreshBehavior
from mvgraph.scheduler.clauses import ClauseError, clause_message, compile_clause
from mvgraph.scheduler.timing import Timing, next_after, zone

Conn = psycopg.Connection[tuple[object, ...]]
CHANNEL = "mvgraph_schedules"  # NOTIFY channel: a schedule was added, changed or removed


class DuplicateSchedule(DatabaseError):
    """The view already has a schedule (one per view): exit code 1."""


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """What to write for one schedule: its view, behaviour and clock."""

    view_oid: int
    view_name: str
    behavior: RefreshBehavior
    timing: Timing
    every_text: str | None = None  # the interval as written (scheduler.pg_task.interval)
    overlap: Overlap = Overlap.SKIP
    source: str | None = None


@dataclass(frozen=True, slots=True)
class Schedule:
    """One row of ``mvgraph.schedule``; ``view_exists`` is False once its view is gone."""

    id: int
    name: str
    what: str
    view_oid: int
    view_name: str
    behavior: RefreshBehavior
    timing: Timing
    every_text: str | None
    overlap: Overlap
    next_run: datetime | None
    last_start: datetime | None
    last_end: datetime | None
    last_status: LastRun | None
    last_error: str | None
    last_job: int | None
    failure_count: int
    is_broken: bool
    enabled: bool
    owner: str
    source: str | None
    created_at: datetime
    view_exists: bool

    def next_slot(self, now: datetime | None = None) -> datetime | None:
        """The next slot after ``now`` by the clock (None when paused, broken or a lag
        target); needs no daemon."""
        if not self.enabled or self.is_broken:
            return None
        return next_after(self.timing, now or datetime.now(UTC))

    def to_dict(self, now: datetime | None = None) -> dict[str, Any]:
        """The documented ``schedule list --json`` shape."""
        t = self.timing
        nxt = self.next_slot(now)
        return {
            "id": self.id, "name": self.name, "view": self.view_name, "what": self.what,
            "behavior": self.behavior.value, "kind": t.kind.value,
            "start": _iso(t.start), "every": self.every_text,
            "every_seconds": t.every.total_seconds() if t.every else None,
            "cron": t.cron_expr, "tz": t.tz,
            "target_lag_seconds": t.target_lag.total_seconds() if t.target_lag else None,
            "overlap": self.overlap.value, "enabled": self.enabled, "is_broken": self.is_broken,
            "failure_count": self.failure_count, "next_run": _iso(nxt),
            "last_start": _iso(self.last_start), "last_end": _iso(self.last_end),
            "last_status": self.last_status.value if self.last_status else None,
            "last_error": self.last_error, "last_job": self.last_job, "owner": self.owner,
            "source": self.source, "created_at": _iso(self.created_at),
            "view_exists": self.view_exists,
        }


@dataclass(frozen=True, slots=True)
class SlotRecord:
    """One firing (or skip) of a schedule, with its job's status and times."""

    slot: datetime
    status: SlotStatus
    job_id: int | None
    job_status: str | None
    started_at: datetime | None
    finished_at: datetime | None
    manual: bool
    reason: str | None
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        """The documented ``schedule history --json`` element."""
        return {"slot": _iso(self.slot), "status": self.status.value, "job_id": self.job_id,
                "job_status": self.job_status, "start": _iso(self.started_at),
                "end": _iso(self.finished_at), "manual": self.manual, "reason": self.reason,
                "error": self.error}


# ---- values: names, intervals, start times ---------------------------------------------------

def find_matview(conn: Conn, name: str, search_path: tuple[str, ...] | list[str]
                 ) -> tuple[int, str]:
    """The oid and qualified name of a materialized view named as a user typed it.

    Raises:
        UnknownRelation: no such relation, or not a materialized view (exit 4).
    """
    try:
        parsed = RelationName.parse(name, "\0")
    except ValueError as exc:
        raise UsageError(f"{exc}; name a materialized view, e.g. mv5 or sales.mv5") from None
    schemas = list(search_path) if parsed.schema == "\0" else [parsed.schema]
    with translated():
        row = conn.execute(query("find_relation"),
                           {"schemas": schemas, "name": parsed.name}).fetchone()
    if row is None:
        raise UnknownRelation(f"no materialized view {name} (searched {', '.join(schemas)})")
    if str(row[1]) != "m":
        raise UnknownRelation(f"{row[2]} is not a materialized view; only materialized views "
                              "have schedules")
    return int(str(row[0])), str(row[2])


def interval(conn: Conn, text: str, *, expression: bool = False, what: str = "interval"
             ) -> timedelta:
    """An interval typed by a user (``'1 hour'``, a value: never SQL) or, with ``expression``,
    a GaussDB ``EVERY (...)`` clause: a value (:mod:`mvgraph.scheduler.clauses`) that PostgreSQL
    computes with its own functions and operators only.

    Raises:
        UsageError: not a value, not an interval, not positive, or in months or years (exit 2).
    """
    expr = _compiled("EVERY", text) if expression else None
    try:
        with conn.transaction():
            if expr is not None:
                row = conn.execute(sql.SQL(query("eval_interval")).format(expr=expr)).fetchone()
            else:
                row = conn.execute(query("check_interval"), {"text": text}).fetchone()
    except psycopg.Error:
        raise UsageError(f"{text!r} is not a valid {what}; use e.g. '30 seconds', '1 hour' or "
                         "'1 day'") from None
    assert row is not None
    if not row[2]:
        raise UsageError(f"{what} {text!r} is in months or years, which have no fixed length; "
                         "use a cron expression (--cron) for calendar schedules")
    seconds = float(str(row[1]))
    if seconds <= 0:
        raise UsageError(f"{what} {text!r} must be positive")
    return timedelta(seconds=seconds)


def start_time(conn: Conn, text: str | None, tz: str, *, expression: bool = False) -> datetime:
    """A start time: typed by a user (a value, read in ``tz`` when it names no zone), a GaussDB
    ``START WITH (...)`` clause (a value, see :mod:`mvgraph.scheduler.clauses`; computed with
    PostgreSQL's own functions and operators only), or (None) today's midnight in ``tz``.

    Raises:
        UsageError: not a value, or not a time (exit 2).
    """
    zone(tz)
    expr = _compiled("START WITH", text) if expression and text is not None else None
    try:
        with conn.transaction():
            conn.execute(query("set_local_time_zone"), {"tz": tz})
            if text is None:
                row = conn.execute(query("midnight_today")).fetchone()
            elif expr is not None:
                row = conn.execute(sql.SQL(query("eval_start")).format(expr=expr)).fetchone()
            else:
                row = conn.execute(query("as_timestamptz"), {"ts": text}).fetchone()
    except psycopg.Error:
        raise UsageError(f"{text!r} is not a valid start time; use e.g. "
                         "'2025-01-01 06:00' or '2025-01-01 06:00+01'") from None
    assert row is not None and isinstance(row[0], datetime)
    return row[0].astimezone(UTC)


def session_zone(conn: Conn) -> str:
    """The session's TimeZone if Python knows it, else UTC (the zone GaussDB statements'
    times are read in)."""
    with translated():
        row = conn.execute(query("session_time_zone")).fetchone()
    name = str(row[0]) if row else "UTC"
    try:
        zone(name)
    except UsageError:
        return "UTC"
    return name


def _compiled(label: str, text: str) -> sql.Composed:
    """A schedule clause rebuilt as a value (never its text).

    Raises:
        UsageError: it is not a value (a function call, a subquery, a column, ...).
    """
    try:
        return compile_clause(text)
    except ClauseError as exc:
        raise UsageError(clause_message(label, text, str(exc))) from None


# ---- rows ------------------------------------------------------------------------------------

def _params(spec: ScheduleSpec, now: datetime) -> dict[str, Any]:
    t = spec.timing
    return {"behavior": spec.behavior.value, "kind": t.kind.value, "start_at": t.start,
            "every": t.every, "every_text": spec.every_text if t.every else None,
            "cron": t.cron_expr, "tz": t.tz, "target_lag": t.target_lag,
            "overlap": spec.overlap.value, "next_run": next_after(t, now),
            "source": spec.source}


def add(conn: Conn, spec: ScheduleSpec, name: str | None = None) -> int:
    """Insert a schedule; returns its id.

    Raises:
        DuplicateSchedule: the view (or the name) already has one.
    """
    params = _params(spec, datetime.now(UTC))
    params.update(name=name or spec.view_name, view_oid=spec.view_oid)
    try:
        row = conn.execute(query("insert_schedule"), params).fetchone()
    except psycopg.errors.UniqueViolation:
        raise DuplicateSchedule(f"{spec.view_name} already has a schedule; change it with "
                                "`mvgraph schedule alter` or remove it first") from None
    except psycopg.Error as exc:
        raise translate(exc) from exc
    assert row is not None
    return int(str(row[0]))


def update(conn: Conn, schedule_id: int, spec: ScheduleSpec) -> None:
    """Replace a schedule's behaviour and clock (its history and run state are kept)."""
    params = _params(spec, datetime.now(UTC))
    params["id"] = schedule_id
    with translated():
        conn.execute(query("update_schedule"), params)


def schedules(conn: Conn, schedule_id: int | None = None) -> list[Schedule]:
    """Every schedule (or one), ordered by name."""
    with translated():
        rows = conn.execute(query("schedules"), {"id": schedule_id}).fetchall()
    return [_row(r) for r in rows]


ScheduleInfo = Schedule  # the library's name for it (mvgraph.Schedule is the SQL clause)


def get(conn: Conn, name: str, search_path: tuple[str, ...] | list[str]) -> Schedule:
    """The schedule of the view named ``name`` (or, for a view that is gone, named so).

    Raises:
        NotFound: no such schedule (exit 4).
    """
    try:
        oid, qualified = find_matview(conn, name, search_path)
    except UnknownRelation:
        oid, qualified = 0, name
    with translated():
        row = conn.execute(query("schedule_by_view"), {"oid": oid, "name": qualified}
                           ).fetchone()
    if row is None:
        raise NotFound(f"no schedule for {name}; list them with `mvgraph schedule list`")
    return schedules(conn, int(str(row[0])))[0]


def find_by_view(conn: Conn, oid: int) -> Schedule | None:
    """The schedule of a view, by oid, or None."""
    with translated():
        row = conn.execute(query("schedule_by_view"), {"oid": oid, "name": None}).fetchone()
    return schedules(conn, int(str(row[0])))[0] if row else None


def remove(conn: Conn, schedule_id: int) -> str | None:
    """Delete a schedule and its slot history; returns its name (None if it was gone)."""
    with translated():
        row = conn.execute(query("delete_schedule"), {"id": schedule_id}).fetchone()
    return str(row[0]) if row else None


def remove_orphans(conn: Conn) -> list[str]:
    """Delete the schedules whose view no longer exists; returns their names."""
    with translated():
        return [str(r[0]) for r in conn.execute(query("delete_orphan_schedules")).fetchall()]


def set_enabled(conn: Conn, schedule: Schedule, enabled: bool) -> None:
    """Pause, or resume (which also clears ``is_broken`` and the failure count)."""
    nxt = next_after(schedule.timing, datetime.now(UTC)) if enabled else None
    with translated():
        conn.execute(query("set_schedule_enabled"),
                     {"id": schedule.id, "enabled": enabled, "next_run": nxt})


def set_next_run(conn: Conn, schedule_id: int, next_run: datetime | None) -> None:
    """Keep ``next_run`` (and so ``scheduler.pg_task.next_run_date``) current."""
    with translated():
        conn.execute(query("set_next_run"), {"id": schedule_id, "next_run": next_run})


def claim_slot(conn: Conn, schedule_id: int, slot: datetime, status: SlotStatus, *,
               job_id: int | None = None, manual: bool = False, reason: str | None = None,
               claimed_by: str | None = None) -> bool:
    """Record one slot of a schedule; True if this call recorded it, False if someone already
    had (the unique ``(schedule_id, slot)`` key: exactly once across all daemons)."""
    with translated():
        row = conn.execute(query("claim_slot"), {
            "id": schedule_id, "slot": slot, "status": status.value, "job": job_id,
            "manual": manual, "reason": reason,
            "by": claimed_by or f"{socket.gethostname()}:{conn.info.backend_pid}"}).fetchone()
    return row is not None


@dataclass(frozen=True, slots=True)
class Firing:
    """One slot to fire: its schedule, the slot, why (a catch-up) and the schedule's next run
    to record."""

    schedule_id: int
    slot: datetime
    reason: str | None
    next_run: datetime | None


@dataclass(frozen=True, slots=True)
class FireResult:
    """What firing one slot did: ``outcome`` is ``fired`` (``job_id`` submitted at
    ``submitted_at``), ``waits`` (overlap queue), ``skipped`` (overlap), ``taken`` (already
    recorded, by another daemon), ``gone`` (the schedule was removed) or ``refused``."""

    schedule_id: int
    slot: datetime
    outcome: str
    job_id: int | None
    reason: str | None
    submitted_at: datetime | None


def fire_slots(conn: Conn, firings: Sequence[Firing], claimed_by: str,
               options: dict[str, Any]) -> list[FireResult]:
    """Fire slots in one statement (``mvgraph.fire_slots``): per slot the overlap rule, the
    claim (exactly once across all daemons), the job (owned by the schedule's owner) linked to
    the slot, and the schedule's next run; one result per slot, in schedule order."""
    if not firings:
        return []
    with translated():
        rows = conn.execute(query("fire_slots"), {
            "ids": [f.schedule_id for f in firings], "slots": [f.slot for f in firings],
            "reasons": [f.reason for f in firings],
            "next_runs": [f.next_run for f in firings], "by": claimed_by,
            "options": json.dumps(options), "host": socket.gethostname()}).fetchall()
    return [FireResult(int(str(r[0])), _time(r[1]) or datetime.min, str(r[2]), _int(r[3]),
                       _str(r[4]), _time(r[5])) for r in rows]


def warm_firing(conn: Conn, claimed_by: str) -> None:
    """Fire nothing on ``conn``: the server compiles ``mvgraph.fire_slots`` and plans its
    statements for this session now, not at the first slot (tens of milliseconds)."""
    with translated():
        conn.execute(query("fire_slots"), {
            "ids": [], "slots": [], "reasons": [], "next_runs": [], "by": claimed_by,
            "options": "{}", "host": socket.gethostname()}).fetchall()


def record_slots(conn: Conn, slots: Sequence[tuple[int, datetime]], status: SlotStatus,
                 reason: str, claimed_by: str) -> set[tuple[int, datetime]]:
    """Record slots of schedules that do not run (e.g. missed) in one statement, each once
    across all daemons; returns the (schedule id, slot) pairs this call recorded."""
    if not slots:
        return set()
    with translated():
        rows = conn.execute(query("record_slots"), {
            "ids": [sid for sid, _ in slots], "slots": [slot for _, slot in slots],
            "status": status.value, "reason": reason, "by": claimed_by}).fetchall()
    return {(int(str(r[0])), r[1]) for r in rows if isinstance(r[1], datetime)}


def last_clock_slots(conn: Conn, schedule_ids: Sequence[int]) -> dict[int, datetime]:
    """The latest slot recorded by a daemon (not by run-now) of each schedule that has one."""
    with translated():
        rows = conn.execute(query("last_clock_slots"), {"ids": list(schedule_ids)}).fetchall()
    return {int(str(r[0])): r[1] for r in rows if isinstance(r[1], datetime)}


def set_slot_job(conn: Conn, schedule_id: int, slot: datetime, job_id: int) -> None:
    """Link a claimed slot to the job submitted for it (and the schedule's last start and
    last job)."""
    with translated():
        conn.execute(query("set_slot_job"), {"id": schedule_id, "slot": slot, "job": job_id})


def history(conn: Conn, schedule_id: int, limit: int = 100) -> list[SlotRecord]:
    """The schedule's slots, newest first, each with its job's status and times."""
    with translated():
        rows = conn.execute(query("schedule_history"), {"id": schedule_id, "limit": limit}
                            ).fetchall()
    return [SlotRecord(_time(r[0]) or datetime.min, SlotStatus(str(r[1])), _int(r[2]),
                       _str(r[3]), _time(r[4]), _time(r[5]), bool(r[6]), _str(r[7]), _str(r[8]))
            for r in rows]


def listen(conn: Conn) -> None:
    """Subscribe this (autocommit) connection to schedule changes."""
    with translated():
        conn.execute(query("listen_schedules"))


def _row(r: tuple[object, ...]) -> Schedule:
    kind = ScheduleKind(str(r[6]))
    tz = str(r[11])
    if kind is ScheduleKind.INTERVAL:
        timing = Timing(kind, tz, start=_time(r[7]), every=_delta(r[8]))
    elif kind is ScheduleKind.CRON:
        timing = Timing(kind, tz, cron_expr=_str(r[10]))
    else:
        timing = Timing(kind, tz, target_lag=_delta(r[12]))
    return Schedule(
        id=int(str(r[0])), name=str(r[1]), what=str(r[2]), view_oid=int(str(r[3])),
        view_name=str(r[4]), behavior=RefreshBehavior(str(r[5])), timing=timing,
        every_text=_str(r[9]), overlap=Overlap(str(r[13])), next_run=_time(r[14]),
        last_start=_time(r[15]), last_end=_time(r[16]),
        last_status=LastRun(str(r[17])) if r[17] is not None else None,
        last_error=_str(r[18]), last_job=_int(r[19]), failure_count=int(str(r[20])),
        is_broken=bool(r[21]), enabled=bool(r[22]), owner=str(r[23]), source=_str(r[24]),
        created_at=_time(r[25]) or datetime.min, view_exists=bool(r[26]))


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def _time(v: object) -> datetime | None:
    return v if isinstance(v, datetime) else None


def _delta(v: object) -> timedelta | None:
    return v if isinstance(v, timedelta) else None


def _str(v: object) -> str | None:
    return None if v is None else str(v)


def _int(v: object) -> int | None:
    return None if v is None else int(str(v))
