"""When a schedule fires: pure functions of a :class:`Timing` and the clock, no I/O.

Three kinds of timing:

* ``interval``: fixed rate, slots at ``start + k * every`` (k >= 0) in absolute time. A slow run
  never pushes later slots; a start in the past means the next slot after now, never a burst.
  An interval is an exact duration (a day is 24 hours); use cron for wall-clock times.
* ``cron``: a five-field cron expression read in the schedule's time zone (IANA name). Daylight
  saving: a wall time that does not exist (spring forward) fires once, at the end of the gap; a
  wall time that happens twice (fall back) fires once, at its first occurrence, unless the
  expression fires every hour (hour field ``*``), in which case both occurrences fire (they are
  an hour apart in real time, as the expression asks).
* ``lag``: a freshness target; no clock (the daemon decides, `scheduler/lag.py`): no slots.

:func:`next_after` is the one implementation of "when next": ``schedule list``, the store's
``next_run`` column and the APScheduler trigger (:class:`SlotTrigger`) all use it.
:func:`catch_up` is the daemon's coalescing rule for slots missed while nobody ran them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger
from croniter import croniter

from mvgraph.errors import UsageError
from mvgraph.model.status import ScheduleKind as TimingKind

_NEAR = timedelta(hours=3)  # further than any daylight-saving shift
_TINY = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Timing:
    """A schedule's clock: build it with :meth:`interval`, :meth:`cron` or :meth:`lag`."""

    kind: TimingKind
    tz: str = "UTC"
    start: datetime | None = None  # interval: the first slot (aware)
    every: timedelta | None = None  # interval
    cron_expr: str | None = None  # cron
    target_lag: timedelta | None = None  # lag

    @classmethod
    def interval(cls, every: timedelta, start: datetime, tz: str = "UTC") -> Timing:
        """Slots at ``start + k * every``.

        Raises:
            UsageError: a non-positive interval, a naive start, an unknown time zone.
        """
        if every <= timedelta(0):
            raise UsageError(f"the interval must be positive, not {every}")
        if start.tzinfo is None:
            raise UsageError("the start time needs a time zone")
        zone(tz)
        return cls(TimingKind.INTERVAL, tz, start=start, every=every)

    @classmethod
    def cron(cls, expr: str, tz: str = "UTC") -> Timing:
        """Slots where the cron expression matches, in time zone ``tz``.

        Raises:
            UsageError: not a valid five-field cron expression, an unknown time zone.
        """
        check_cron(expr)
        zone(tz)
        return cls(TimingKind.CRON, tz, cron_expr=" ".join(expr.split()))

    @classmethod
    def lag(cls, target_lag: timedelta, tz: str = "UTC") -> Timing:
        """A freshness target: at most ``target_lag`` behind its inputs (no slots)."""
        if target_lag <= timedelta(0):
            raise UsageError(f"the target lag must be positive, not {target_lag}")
        zone(tz)
        return cls(TimingKind.LAG, tz, target_lag=target_lag)


def zone(name: str) -> ZoneInfo:
    """The time zone called ``name``.

    Raises:
        UsageError: no such IANA time zone.
    """
    try:
        return _zone(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a path
        raise UsageError(f"unknown time zone {name!r}; use an IANA name such as UTC or "
                         "Europe/Berlin") from None


@cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def check_cron(expr: str) -> None:
    """Refuse anything but a valid five-field cron expression (or ``@hourly`` and friends).

    Raises:
        UsageError: with the expression named.
    """
    fields = expr.split()
    ok = (len(fields) == 5 or (len(fields) == 1 and fields[0].startswith("@")))
    if not ok or not croniter.is_valid(" ".join(fields)):
        raise UsageError(f"{expr!r} is not a valid cron expression; use five fields: minute "
                         "hour day-of-month month day-of-week, e.g. '*/5 * * * *'")


def next_after(timing: Timing, after: datetime) -> datetime | None:
    """The first slot strictly after ``after`` (aware), in UTC; None for a lag target.

    >>> t = Timing.interval(timedelta(minutes=10), datetime(2020, 1, 1, tzinfo=UTC))
    >>> next_after(t, datetime(2024, 5, 1, 12, 5, tzinfo=UTC)).isoformat()
    '2024-05-01T12:10:00+00:00'
    >>> next_after(t, datetime(2019, 1, 1, tzinfo=UTC)).isoformat()  # before the start
    '2020-01-01T00:00:00+00:00'
    """
    _aware(after)
    if timing.kind is TimingKind.INTERVAL:
        assert timing.start is not None and timing.every is not None
        start = timing.start.astimezone(UTC)
        if after < start:
            return start
        return start + ((after - start) // timing.every + 1) * timing.every
    if timing.kind is TimingKind.CRON:
        assert timing.cron_expr is not None
        return _cron_next(timing.cron_expr, zone(timing.tz), after.astimezone(UTC))
    return None


def slots_between(timing: Timing, since: datetime, until: datetime,
                  limit: int = 10_000) -> Iterator[datetime]:
    """Slots in ``(since, until]``, oldest first, at most ``limit`` of them."""
    at = since
    for _ in range(limit):
        nxt = next_after(timing, at)
        if nxt is None or nxt > until:
            return
        yield nxt
        at = nxt


def count_between(timing: Timing, since: datetime, until: datetime,
                  limit: int = 10_000) -> int:
    """How many slots lie in ``(since, until]`` (exact for intervals; cron stops at ``limit``)."""
    if until <= since:
        return 0
    if timing.kind is TimingKind.INTERVAL:
        assert timing.every is not None
        first = next_after(timing, since)
        assert first is not None
        return 0 if first > until else (until - first) // timing.every + 1
    return sum(1 for _ in slots_between(timing, since, until, limit))


@dataclass(frozen=True, slots=True)
class CatchUp:
    """What to do about slots missed in ``(since, now]``.

    ``run`` is the one missed slot to run now (the latest, when it is within the grace period),
    else None; ``skipped`` counts the missed slots not run; ``next`` is the next slot after now.
    """

    run: datetime | None
    skipped: int
    latest_missed: datetime | None
    next: datetime | None


def catch_up(timing: Timing, since: datetime, now: datetime, grace: timedelta) -> CatchUp:
    """Coalesce the slots missed since ``since`` (the last slot handled) into at most one run.

    The latest missed slot runs if it fell due no more than ``grace`` ago; every other missed
    slot is skipped. Slots are never run twice: the daemon records each (schedule_slot).

    >>> t = Timing.interval(timedelta(minutes=1), datetime(2024, 1, 1, tzinfo=UTC))
    >>> c = catch_up(t, datetime(2024, 1, 1, 0, 0, tzinfo=UTC),
    ...              datetime(2024, 1, 1, 0, 10, 30, tzinfo=UTC), timedelta(minutes=5))
    >>> c.run.isoformat(), c.skipped, c.next.isoformat()
    ('2024-01-01T00:10:00+00:00', 9, '2024-01-01T00:11:00+00:00')
    """
    _aware(since)
    _aware(now)
    missed = count_between(timing, since, now)
    latest = _latest_at_or_before(timing, since, now) if missed else None
    run = latest if latest is not None and now - latest <= grace else None
    return CatchUp(run, missed - (run is not None), latest, next_after(timing, now))


def _latest_at_or_before(timing: Timing, since: datetime, now: datetime) -> datetime | None:
    if timing.kind is TimingKind.INTERVAL:
        assert timing.start is not None and timing.every is not None
        start = timing.start.astimezone(UTC)
        if now < start:
            return None
        latest = start + ((now - start) // timing.every) * timing.every
        return latest if latest > since else None
    found = None
    for slot in slots_between(timing, max(since, now - timedelta(days=400)), now):
        found = slot
    return found


class SlotTrigger(BaseTrigger):  # type: ignore[misc]  # APScheduler 3 has no type hints
    """An APScheduler 3 trigger firing at a :class:`Timing`'s slots (via :func:`next_after`).

    With no previous fire time, a slot falling exactly at ``now`` is due.
    """

    __slots__ = ("timing",)

    def __init__(self, timing: Timing) -> None:
        self.timing = timing

    def get_next_fire_time(self, previous_fire_time: datetime | None,
                           now: datetime) -> datetime | None:
        """The slot after the previous fire time, or the first slot at or after ``now``."""
        after = previous_fire_time if previous_fire_time is not None else now - _TINY
        return next_after(self.timing, after)

    def __str__(self) -> str:
        return describe(self.timing)

    def __repr__(self) -> str:
        return f"<SlotTrigger ({describe(self.timing)})>"


def describe(timing: Timing, every_text: str | None = None) -> str:
    """A short human description (``every_text``: the interval as its user wrote it).

    >>> describe(Timing.cron("*/5 * * * *", "Europe/Berlin"))
    'cron */5 * * * * (Europe/Berlin)'
    """
    if timing.kind is TimingKind.INTERVAL:
        assert timing.start is not None
        return f"every {every_text or timing.every} from {timing.start.isoformat()}"
    if timing.kind is TimingKind.CRON:
        return f"cron {timing.cron_expr} ({timing.tz})"
    return f"target lag {timing.target_lag}"


# ---- cron and daylight saving ---------------------------------------------------------------

def _aware(t: datetime) -> None:
    if t.tzinfo is None:
        raise ValueError("an aware datetime is needed")


def _cron_next(expr: str, z: ZoneInfo, after: datetime) -> datetime | None:
    """First instant > ``after`` at which the cron expression fires in zone ``z``."""
    hourly = expr.split()[1] in ("*", "*/1") if len(expr.split()) == 5 else False
    near = _near_transition(z, after)
    wall_after = after.astimezone(z).replace(tzinfo=None)
    it = croniter(expr, wall_after - _NEAR if near else wall_after)
    best: datetime | None = None
    best_wall = wall_after
    for _ in range(100_000):
        wall: datetime = it.get_next(datetime)
        if best is not None and (wall > best_wall + _NEAR or not _near_transition(z, best)):
            break
        for inst in _instants(wall, z, hourly):
            if inst > after and (best is None or inst < best):
                best, best_wall = inst, wall
    return best


def _near_transition(z: ZoneInfo, t: datetime) -> bool:
    """True when the zone's UTC offset changes within three hours of ``t``."""
    offsets = {(t + d).astimezone(z).utcoffset() for d in (-_NEAR, timedelta(0), _NEAR)}
    return len(offsets) > 1


def _instants(wall: datetime, z: ZoneInfo, hourly: bool) -> list[datetime]:
    """The UTC instants at which naive local time ``wall`` fires (see the module doc)."""
    first = wall.replace(tzinfo=z, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=z, fold=1).astimezone(UTC)
    if first == second:
        return [first]
    if first.astimezone(z).replace(tzinfo=None) != wall:  # in a gap: fire when it ends
        return [_transition(second, first, z)]
    return [first, second] if hourly else [first]


def _transition(lo: datetime, hi: datetime, z: ZoneInfo) -> datetime:
    """The instant in ``(lo, hi]`` at which the zone's offset changes (to the second)."""
    before = lo.astimezone(z).utcoffset()
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(z).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return hi.replace(microsecond=0)
