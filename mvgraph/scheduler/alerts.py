"""Alerts: the events worth waking someone for, detected by ``mvgraph daemon``.

=================== ====================================================== ===================
kind                event                                                  object
=================== ====================================================== ===================
``schedule_broken`` a schedule became broken (``schedule_max_failures``     the schedule
                    failures in a row)
``target_missed``   a freshness target missed by more than its lag (the    the view
                    view's lag is over twice its target lag)
``job_failed``      a job ended ``failed``                                 ``job N``
``daemon_silent``   a daemon's heartbeat stopped ``--alert-heartbeat-s``    the daemon
                    seconds ago (it died without stopping, or hangs)
``worker_silent``   the same for a ``mvgraph worker``                      the worker
=================== ====================================================== ===================

Who detects what: every daemon looks, from a tick due ``alert_check_s`` (2 s) after a job was
queued or ended (NOTIFY) and every 10 s otherwise (``run.ALERT_IDLE_S``), for broken
schedules, failed jobs (an hour back) and silent daemons and workers (a day back) in the
tables; its freshness-target tick (every second) checks each target's lag as it plans. Each
event is *claimed* by ``mvgraph.raise_alert`` (a row of ``mvgraph.alert_sent`` keyed by kind
and event), which NOTIFYs ``mvgraph_events`` with the payload in the same transaction: however
many daemons look, each event is sent once, by the daemon whose claim committed, which also
hands the payload to its webhook (:mod:`mvgraph.scheduler.webhook`). The looking is bounded by
time, not by what a daemon remembers: a daemon started late still alerts what happened while
none ran (within those windows, and never what happened before the schema had alerts).

A daemon looks for silent daemons and workers only once it has itself been in contact with the
database for ``--alert-heartbeat-s`` seconds: after an outage everybody's heartbeat is old, and
the others get that long to reconnect.

The payload (JSON, for NOTIFY and the webhook alike) has names and ids only, never SQL text or
an error message (those may hold data): ``{"kind", "object", "message", "time", "ids"}``, where
``time`` is when the event happened (ISO 8601, UTC) and ``ids`` holds the ids of what it is
about (``schedule``, ``job``, ``daemon``, ``worker``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from mvgraph.db.queries import query
from mvgraph.errors import translated

Conn = psycopg.Connection[tuple[object, ...]]
log = logging.getLogger("mvgraph.alerts")

CHANNEL = "mvgraph_events"
KINDS = ("schedule_broken", "target_missed", "job_failed", "daemon_silent", "worker_silent")
MISSED_FACTOR = 2.0  # a target is missed "by more than its lag" past this many target lags
TARGET_REPEAT = timedelta(hours=1)  # at most one target_missed a view an hour
PURGE_EVERY_S = 3600.0
# a NOTIFY payload is at most 8000 bytes: 4 bytes a character at worst, and the rest is small
MAX_OBJECT = 200  # characters of an object (a qualified name is at most 2 x 63 bytes, quoted)
MAX_TEXT = 1000  # characters of a message


@dataclass(frozen=True, slots=True)
class Alert:
    """One event; ``key`` identifies it within its kind (what makes it sent once)."""

    kind: str
    key: str
    object: str
    message: str
    time: datetime
    ids: dict[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        """The documented JSON payload."""
        return {"kind": self.kind, "object": self.object[:MAX_OBJECT],
                "message": self.message[:MAX_TEXT],
                "time": self.time.astimezone(UTC).isoformat(), "ids": self.ids}


@dataclass(frozen=True, slots=True)
class AlertPass:
    """What one look saw: the alerts this daemon sent, and the state the metrics show."""

    sent: tuple[Alert, ...]
    broken: tuple[str, ...]  # names of the broken schedules
    live_daemons: int
    live_workers: int


class Alerter:
    """Detects events and sends each once (see the module doc); thread-safe.

    ``deliver`` gets the payload of every alert this daemon sent (the webhook's queue);
    ``on_sent`` the alert itself (metrics).
    """

    def __init__(self, name: str, heartbeat_s: float = 60.0, *,
                 daemon_heartbeat_s: float = 2.0,
                 deliver: Callable[[dict[str, Any]], object] | None = None,
                 on_sent: Callable[[Alert], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.heartbeat_s = heartbeat_s
        self.daemon_heartbeat_s = daemon_heartbeat_s  # a daemon's period (workers write theirs)
        self._deliver = deliver
        self._on_sent = on_sent
        self._clock = clock
        self._lock = threading.Lock()
        self._contact_since: float | None = None  # first of the passes in a row that worked
        self._last_purge: float | None = None
        self._targets_seen: set[str] = set()  # target misses already claimed (by anyone)

    # ---- the periodic look ------------------------------------------------------------------
    def check(self, conn: Conn) -> AlertPass:
        """Look for broken schedules, failed jobs and silent daemons and workers; send each new
        one. A database error propagates (and the silence watch starts over)."""
        try:
            return self._check(conn)
        except BaseException:
            with self._lock:
                self._contact_since = None
            raise

    def _check(self, conn: Conn) -> AlertPass:
        now_mono = self._clock()
        with self._lock:
            if self._contact_since is None:
                self._contact_since = now_mono
            in_contact = now_mono - self._contact_since
        found: list[Alert] = []
        broken: list[str] = []
        live: tuple[int, int] = (0, 0)
        with translated():
            rows = conn.execute(query("alert_look"), {
                "silence": in_contact >= self.heartbeat_s, "silent": self.heartbeat_s,
                "beat": self.daemon_heartbeat_s}).fetchall()
        for part, _, oid, name, num, job, at, key, new, names in rows:
            if part == 1:  # a broken schedule
                broken.append(str(name))
                if new:
                    found.append(broken_alert(int(str(oid)), str(name), int(str(num)),
                                              _int(job), _time(at), str(key)))
            elif part == 2:  # a failed job
                found.append(failed_alert(int(str(oid)), str(name), _time(at),
                                          [str(n) for n in _list(names)]))
            elif part in (3, 4):  # a silent daemon or worker
                found.append(silent_alert("daemon" if part == 3 else "worker", int(str(oid)),
                                          str(name), _time(at), str(key)))
            else:  # the live daemons and workers
                live = (int(str(num)), int(str(job)))
        sent = tuple(a for a in found if self.send(conn, a))
        self._purge(conn, now_mono)
        return AlertPass(sent, tuple(broken), *live)

    # ---- freshness targets (from the daemon's target tick) ----------------------------------
    def targets(self, conn: Conn, decisions: Iterable[Any]) -> list[Alert]:
        """Send a ``target_missed`` for each target whose lag is over ``MISSED_FACTOR`` times
        its target lag (``decisions``: :class:`mvgraph.scheduler.lag.Decision`), once per
        episode (its oldest missing change) and at most once a view an hour."""
        misses: dict[str, Alert] = {}
        for d in decisions:
            goal = d.target.target_lag
            if d.lag is None or d.since is None or d.lag <= goal * MISSED_FACTOR:
                continue
            a = missed_alert(int(d.target.schedule_id), str(d.target.view), d.lag, goal,
                             d.since)
            misses[a.key] = a
        with self._lock:
            self._targets_seen &= set(misses)  # episodes that ended are forgotten
            new = [a for k, a in misses.items() if k not in self._targets_seen]
        sent = []
        for a in new:
            with translated():
                recent = conn.execute(query("alert_recent_target_miss"), {
                    "prefix": f"{a.ids['schedule']}:", "key": a.key,
                    "within": TARGET_REPEAT.total_seconds()}).fetchone()
            if not (recent and recent[0]) and self.send(conn, a):
                sent.append(a)
            with self._lock:
                self._targets_seen.add(a.key)
        return sent

    # ---- sending ----------------------------------------------------------------------------
    def send(self, conn: Conn, alert: Alert) -> bool:
        """Claim the event and NOTIFY its payload (one transaction, autocommit); when this
        daemon's claim is the one, log it and hand the payload on. False: sent before."""
        payload = alert.payload()
        with translated():
            row = conn.execute(query("raise_alert"), {
                "kind": alert.kind, "key": alert.key, "payload": json.dumps(payload),
                "sender": self.name}).fetchone()
        if not (row and row[0]):
            return False
        log.warning("alert %s: %s", alert.kind, alert.message,
                    extra={"event": "alert", **{k: v for k, v in alert.ids.items()
                                                if k in ("schedule", "job")}})
        if self._on_sent is not None:
            self._on_sent(alert)
        if self._deliver is not None:
            self._deliver(payload)
        return True

    def _purge(self, conn: Conn, now_mono: float) -> None:
        with self._lock:
            due = self._last_purge is None or now_mono - self._last_purge >= PURGE_EVERY_S
            if due:
                self._last_purge = now_mono
        if due:
            with translated():
                conn.execute(query("purge_alerts"))


# ---- the events ------------------------------------------------------------------------------

def broken_alert(sid: int, name: str, failures: int, job: int | None, at: datetime,
                 key: str) -> Alert:
    """A schedule became broken at ``at`` (``key``: the schedule and that time)."""
    ids: dict[str, Any] = {"schedule": sid}
    if job is not None:
        ids["job"] = job
    return Alert("schedule_broken", key, name,
                 f"schedule {name} is broken after {failures} failures in a row"
                 + (f" (last: job {job})" if job is not None else "")
                 + f"; `mvgraph schedule resume {name}` runs it again", at, ids)


def failed_alert(job: int, kind: str, at: datetime, schedules: list[str]) -> Alert:
    """A job failed (its error is not in the payload: `mvgraph job N` shows it)."""
    of = f" for schedule{'s' if len(schedules) > 1 else ''} {', '.join(schedules)}" \
        if schedules else ""
    return Alert("job_failed", str(job), f"job {job}",
                 f"job {job} ({kind}{of}) failed; `mvgraph job {job}` shows why", at,
                 {"job": job})


def missed_alert(sid: int, view: str, lag: timedelta, goal: timedelta, since: datetime
                 ) -> Alert:
    """A freshness target is missed by more than its lag (``since``: the oldest change its
    data lacks; the episode)."""
    return Alert("target_missed", f"{sid}:{_micros(since)}", view,
                 f"freshness target of {view} missed: lag {lag.total_seconds():.0f}s, more "
                 f"than {MISSED_FACTOR:g} times its target lag of {goal.total_seconds():g}s "
                 f"(oldest missing change at {since.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC)",
                 since + goal * MISSED_FACTOR, {"schedule": sid})


def silent_alert(what: str, pid: int, name: str, last: datetime, key: str) -> Alert:
    """A daemon or worker sent no heartbeat lately (``key``: its row and last heartbeat;
    ``time``: that heartbeat)."""
    return Alert(f"{what}_silent", key, name,
                 f"{what} {name} sent no heartbeat since "
                 f"{last.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC: it died without stopping, or "
                 "hangs", last, {what: pid})


def _micros(t: datetime) -> int:
    """Microseconds since the epoch (the key of a time, whatever the session's time zone)."""
    return (t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _time(v: object) -> datetime:
    return v if isinstance(v, datetime) else datetime.now(UTC)


def _int(v: object) -> int | None:
    return None if v is None else int(str(v))


def _list(v: object) -> list[object]:
    return list(v) if isinstance(v, list) else []
