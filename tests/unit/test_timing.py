"""Schedule timing with fixed clocks: fixed rate, past starts, cron in time zones across DST."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from mvgraph.errors import UsageError
from mvgraph.scheduler.timing import (
    SlotTrigger,
    Timing,
    catch_up,
    count_between,
    next_after,
    slots_between,
)

BERLIN = ZoneInfo("Europe/Berlin")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)  # type: ignore[misc]


# ---- intervals -------------------------------------------------------------------------------

def test_interval_slots_are_start_plus_k_times_interval() -> None:
    t = Timing.interval(timedelta(seconds=7), utc(2024, 1, 1))
    slots = list(slots_between(t, utc(2024, 1, 1), utc(2024, 1, 1, 0, 0, 30)))
    assert slots == [utc(2024, 1, 1, 0, 0, s) for s in (7, 14, 21, 28)]


def test_a_slow_run_does_not_push_later_slots() -> None:
    t = Timing.interval(timedelta(minutes=1), utc(2024, 1, 1))
    # a run that fired at 00:01 and ended at 00:01:50 still has 00:02 next
    assert next_after(t, utc(2024, 1, 1, 0, 1, 50)) == utc(2024, 1, 1, 0, 2)


def test_a_start_in_the_past_means_the_next_future_slot_not_a_burst() -> None:
    t = Timing.interval(timedelta(seconds=1), utc(2020, 1, 1, 12, 12, 12))  # the seed's start
    now = utc(2025, 6, 1, 8, 0, 0, 400_000)
    assert next_after(t, now) == utc(2025, 6, 1, 8, 0, 1)
    trigger = SlotTrigger(t)
    assert trigger.get_next_fire_time(None, now) == utc(2025, 6, 1, 8, 0, 1)


def test_a_start_in_the_future_is_the_first_slot() -> None:
    t = Timing.interval(timedelta(hours=1), utc(2030, 1, 1, 6))
    assert next_after(t, utc(2025, 1, 1)) == utc(2030, 1, 1, 6)


def test_a_slot_exactly_now_is_due_for_the_trigger_but_not_after_it() -> None:
    t = Timing.interval(timedelta(minutes=5), utc(2024, 1, 1))
    trigger = SlotTrigger(t)
    assert trigger.get_next_fire_time(None, utc(2024, 1, 1, 0, 10)) == utc(2024, 1, 1, 0, 10)
    assert trigger.get_next_fire_time(utc(2024, 1, 1, 0, 10), utc(2024, 1, 1, 0, 10, 1)) \
        == utc(2024, 1, 1, 0, 15)


def test_intervals_are_exact_durations_across_dst() -> None:
    # a day is 24 hours: 12:00 CET becomes 13:00 CEST after spring forward (cron keeps walls)
    t = Timing.interval(timedelta(days=1), berlin(2024, 3, 30, 12), "Europe/Berlin")
    nxt = next_after(t, berlin(2024, 3, 30, 13))
    assert nxt is not None and nxt.astimezone(BERLIN) == berlin(2024, 3, 31, 13)


def test_interval_counts_are_exact_without_enumerating() -> None:
    t = Timing.interval(timedelta(seconds=1), utc(2020, 1, 1))
    assert count_between(t, utc(2020, 1, 1), utc(2021, 1, 1)) == 366 * 86400


@pytest.mark.parametrize("bad", [timedelta(0), timedelta(seconds=-1)])
def test_non_positive_intervals_are_refused(bad: timedelta) -> None:
    with pytest.raises(UsageError, match="positive"):
        Timing.interval(bad, utc(2024, 1, 1))


# ---- cron and time zones ---------------------------------------------------------------------

def test_cron_in_a_time_zone() -> None:
    t = Timing.cron("0 9 * * 1-5", "Europe/Berlin")  # weekdays 09:00 Berlin
    nxt = next_after(t, utc(2024, 1, 5, 9))  # Friday 10:00 Berlin
    assert nxt == berlin(2024, 1, 8, 9)  # Monday


def test_cron_daily_across_spring_forward_keeps_the_wall_clock() -> None:
    t = Timing.cron("0 12 * * *", "Europe/Berlin")
    slots = list(slots_between(t, berlin(2024, 3, 30, 13), berlin(2024, 4, 1, 13)))
    assert slots == [berlin(2024, 3, 31, 12), berlin(2024, 4, 1, 12)]
    assert [s.astimezone(UTC).hour for s in slots] == [10, 10]  # CEST: UTC+2


def test_cron_at_a_wall_time_that_does_not_exist_fires_once_at_the_end_of_the_gap() -> None:
    t = Timing.cron("30 2 * * *", "Europe/Berlin")  # 2024-03-31 02:30 does not exist
    slots = list(slots_between(t, berlin(2024, 3, 30, 12), berlin(2024, 4, 1, 12)))
    assert slots == [berlin(2024, 3, 31, 3, 0), berlin(2024, 4, 1, 2, 30)]


def test_cron_every_quarter_hour_through_the_gap_fires_once_for_the_missing_hour() -> None:
    t = Timing.cron("*/15 * * * *", "Europe/Berlin")
    slots = list(slots_between(t, berlin(2024, 3, 31, 1, 40), berlin(2024, 3, 31, 3, 20)))
    assert [s.astimezone(BERLIN).strftime("%H:%M%z") for s in slots] == [
        "01:45+0100", "03:00+0200", "03:15+0200"]


def test_cron_daily_in_the_repeated_hour_fires_once() -> None:
    t = Timing.cron("30 2 * * *", "Europe/Berlin")  # 2024-10-27 02:30 happens twice
    slots = list(slots_between(t, berlin(2024, 10, 26, 12), berlin(2024, 10, 28, 12)))
    # the first occurrence (CEST, UTC+2); then the next day's 02:30 CET
    assert slots == [utc(2024, 10, 27, 0, 30), utc(2024, 10, 28, 1, 30)]


def test_cron_every_half_hour_fires_in_both_occurrences_of_the_repeated_hour() -> None:
    t = Timing.cron("*/30 * * * *", "Europe/Berlin")
    slots = list(slots_between(t, utc(2024, 10, 26, 23, 45), utc(2024, 10, 27, 2, 15)))
    assert slots == [utc(2024, 10, 27, 0, 0), utc(2024, 10, 27, 0, 30),   # 02:00, 02:30 CEST
                     utc(2024, 10, 27, 1, 0), utc(2024, 10, 27, 1, 30),   # 02:00, 02:30 CET
                     utc(2024, 10, 27, 2, 0)]                             # 03:00 CET
    # asked from inside the second occurrence, the next slot is still the real next instant
    assert next_after(t, utc(2024, 10, 27, 1, 10)) == utc(2024, 10, 27, 1, 30)


def test_cron_trigger_for_apscheduler_uses_the_same_function() -> None:
    t = Timing.cron("0 * * * *", "UTC")
    trigger = SlotTrigger(t)
    assert trigger.get_next_fire_time(utc(2024, 1, 1, 5), utc(2024, 1, 1, 5, 0, 1)) \
        == utc(2024, 1, 1, 6)
    assert "cron 0 * * * *" in str(trigger)


@pytest.mark.parametrize("expr", ["61 * * * *", "* * *", "every minute", "* * * * * *"])
def test_bad_cron_expressions_are_refused(expr: str) -> None:
    with pytest.raises(UsageError, match="cron"):
        Timing.cron(expr)


def test_unknown_time_zone_is_refused() -> None:
    with pytest.raises(UsageError, match="time zone"):
        Timing.cron("* * * * *", "Mars/Olympus")
    with pytest.raises(UsageError, match="time zone"):
        Timing.interval(timedelta(hours=1), utc(2024, 1, 1), "../etc/passwd")


# ---- coalescing and target lag ---------------------------------------------------------------

def test_missed_slots_within_the_grace_period_coalesce_into_one_run() -> None:
    t = Timing.interval(timedelta(minutes=1), utc(2024, 1, 1))
    c = catch_up(t, utc(2024, 1, 1, 0, 0), utc(2024, 1, 1, 1, 0, 20), timedelta(minutes=2))
    assert c.run == utc(2024, 1, 1, 1, 0)
    assert c.skipped == 59
    assert c.next == utc(2024, 1, 1, 1, 1)


def test_missed_slots_beyond_the_grace_period_are_skipped() -> None:
    t = Timing.cron("0 3 * * *", "Europe/Berlin")
    c = catch_up(t, berlin(2024, 1, 1, 3), berlin(2024, 1, 4, 12), timedelta(hours=1))
    assert c.run is None
    assert c.skipped == 3
    assert c.latest_missed == berlin(2024, 1, 4, 3)
    assert c.next == berlin(2024, 1, 5, 3)


def test_nothing_missed_means_no_catch_up() -> None:
    t = Timing.interval(timedelta(hours=1), utc(2024, 1, 1))
    c = catch_up(t, utc(2024, 1, 1, 5), utc(2024, 1, 1, 5, 30), timedelta(hours=1))
    assert (c.run, c.skipped, c.latest_missed, c.next) == (None, 0, None, utc(2024, 1, 1, 6))


def test_a_target_lag_has_no_slots() -> None:
    t = Timing.lag(timedelta(minutes=10))
    assert next_after(t, utc(2024, 1, 1)) is None
    assert SlotTrigger(t).get_next_fire_time(None, utc(2024, 1, 1)) is None
