"""Freshness targets' planner: pure, with fixed clocks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mvgraph.model.names import RelationName
from mvgraph.scheduler.lag import (
    LagTarget,
    Verdict,
    ViewState,
    batches,
    current_lag,
    decide,
    plan,
    tick_period,
)

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
LAG = timedelta(minutes=10)
NO_MARGIN = timedelta(0)


def n(name: str) -> RelationName:
    return RelationName("public", name)


def target(name: str, *cascade: str, sid: int = 1, owner: str = "app", **kw: object
           ) -> LagTarget:
    return LagTarget(sid, n(name), kw.pop("lag", LAG),  # type: ignore[arg-type]
                     frozenset(n(c) for c in (name, *cascade)), owner, T0 - timedelta(days=1),
                     **kw)  # type: ignore[arg-type]


def fresh(name: str, duration: float | None = None) -> ViewState:
    return ViewState(n(name), T0 - timedelta(hours=1), duration_s=duration)


def changed(name: str, at: datetime, duration: float | None = None) -> ViewState:
    return ViewState(n(name), T0 - timedelta(hours=1), first_change=at, duration_s=duration)


def test_nothing_upstream_changed_means_no_run_however_old_the_refresh() -> None:
    views = {n("t"): fresh("t"), n("up"): fresh("up")}
    d = decide(target("t", "up"), views, T0 + timedelta(days=30), margin=NO_MARGIN)
    assert d.verdict is Verdict.FRESH and d.lag == timedelta(0) and d.slot is None


def test_due_when_first_change_plus_lag_minus_duration_and_margin_is_reached() -> None:
    views = {n("t"): changed("t", T0, duration=30)}
    t = target("t")
    margin = timedelta(seconds=20)
    due = T0 + LAG - timedelta(seconds=50)
    before = decide(t, views, due - timedelta(seconds=1), margin=margin)
    assert before.verdict is Verdict.WAIT and before.due_at == due
    at = decide(t, views, due, margin=margin)
    assert at.verdict is Verdict.SUBMIT and at.slot == T0 and at.due_at == due
    assert at.lag == LAG - timedelta(seconds=50)


def test_a_change_under_an_intermediate_view_counts_for_the_target() -> None:
    # t reads mid, mid reads a table written at T0; mid was not refreshed, t saw nothing new
    views = {n("t"): fresh("t", 5), n("mid"): changed("mid", T0, 25)}
    d = decide(target("t", "mid"), views, T0 + LAG - timedelta(seconds=30), margin=NO_MARGIN)
    assert d.verdict is Verdict.SUBMIT and d.since == T0


def test_the_oldest_missing_change_of_the_cascade_decides() -> None:
    views = {n("t"): changed("t", T0 + timedelta(minutes=5)), n("up"): changed("up", T0)}
    assert current_lag(target("t", "up"), views, T0 + timedelta(minutes=7)) == \
        timedelta(minutes=7)


def test_an_undated_change_counts_from_the_last_refresh() -> None:
    v = ViewState(n("t"), T0, undated_change=True)
    assert current_lag(target("t"), {n("t"): v}, T0 + timedelta(minutes=3)) == \
        timedelta(minutes=3)


def test_never_refreshed_is_due_at_once_with_no_lag_to_show() -> None:
    views = {n("t"): ViewState(n("t"), None)}
    d = decide(target("t"), views, T0)
    assert d.verdict is Verdict.SUBMIT and d.lag is None


def test_a_previous_job_still_queued_or_running_skips_the_target() -> None:
    views = {n("t"): changed("t", T0)}
    d = decide(target("t", busy=True), views, T0 + LAG)
    assert d.verdict is Verdict.BUSY


def test_a_new_episode_after_the_last_job_gets_a_new_slot() -> None:
    # the last job ended after the oldest missing change (a change it could not see)
    end = T0 + timedelta(seconds=40)
    d = decide(target("t", last_end=end), {n("t"): changed("t", T0)}, T0 + LAG)
    assert d.verdict is Verdict.SUBMIT and d.slot == end
    # an older job does not move the slot: one change episode, one slot
    d = decide(target("t", last_end=T0 - timedelta(minutes=1)), {n("t"): changed("t", T0)},
               T0 + LAG)
    assert d.slot == T0


def test_a_failed_run_is_retried_after_a_pause_not_at_every_tick() -> None:
    end = T0 + LAG
    t = target("t", last_end=end, last_failed=True)
    views = {n("t"): changed("t", T0)}
    retry = timedelta(seconds=30)
    assert decide(t, views, end + timedelta(seconds=1), retry_after=retry).verdict \
        is Verdict.RETRY_WAIT
    d = decide(t, views, end + retry, retry_after=retry)
    assert d.verdict is Verdict.SUBMIT and d.slot == end


def test_one_job_per_owner_names_only_targets_outside_other_due_cascades() -> None:
    # a <- shared -> b ; c reads b (b is inside c's cascade); d belongs to another owner
    views = {m: changed(m, T0) for m in ("a", "b", "c", "d", "shared")}
    targets = [target("a", "shared", sid=1), target("b", "shared", sid=2),
               target("c", "b", "shared", sid=3), target("d", sid=4, owner="other")]
    decisions = plan(targets, views, T0 + LAG, margin=NO_MARGIN)
    assert all(d.verdict is Verdict.SUBMIT for d in decisions)
    got = batches(decisions)
    assert [(b.owner, [str(t) for t in b.statement_targets],
             [d.target.schedule_id for d in b.decisions]) for b in got] == [
        ("app", ["public.a", "public.c"], [1, 2, 3]), ("other", ["public.d"], [4])]


def test_targets_not_due_are_left_out_of_the_batch() -> None:
    views = {n("a"): changed("a", T0), n("b"): changed("b", T0 + timedelta(minutes=9))}
    decisions = plan([target("a", sid=1), target("b", sid=2)], views, T0 + LAG,
                     margin=NO_MARGIN)
    assert [d.verdict for d in decisions] == [Verdict.SUBMIT, Verdict.WAIT]
    assert [b.statement_targets for b in batches(decisions)] == [(n("a"),)]


def test_the_tick_slows_to_2_s_only_while_every_margin_covers_it() -> None:
    """A write is seen one tick late at most: 2 s ticks only when every target's margin (a
    tenth of its lag) is at least 2 s; a short lag keeps the daemon's every second."""
    assert tick_period([]) == 2.0
    assert tick_period([target("a", lag=timedelta(seconds=20)), target("b")]) == 2.0
    assert tick_period([target("a", lag=timedelta(seconds=19)), target("b")]) is None
    assert tick_period([target("a", lag=timedelta(seconds=5))]) is None
