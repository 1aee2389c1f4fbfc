"""Refresh behaviours and planning: pure, no database."""

from __future__ import annotations

from datetime import datetime

import pytest

from mvgraph import Definition, Kind, MVGraph, RelationName, UnknownRelation, UsageError
from mvgraph.refresh.behavior import (
    Action,
    InputChange,
    MVFacts,
    Plan,
    RefreshBehavior,
    decide,
    plan,
    transitive_freshness,
)

R = RelationName
T0 = datetime(2026, 11, 20, 10, 0)


def rel(name: str) -> RelationName:
    return R.parse(name)


def gauss() -> MVGraph:
    """GaussDB's example: mv1 over t1; mv5 over mv1 (through view v1) and t2; mv6 over mv5."""
    d = [
        Definition(rel("t1"), Kind.TABLE), Definition(rel("t2"), Kind.TABLE),
        Definition(rel("mv1"), Kind.MATVIEW, frozenset({rel("t1")})),
        Definition(rel("v1"), Kind.VIEW, frozenset({rel("mv1")})),
        Definition(rel("mv5"), Kind.MATVIEW, frozenset({rel("v1"), rel("t2")})),
        Definition(rel("mv6"), Kind.MATVIEW, frozenset({rel("mv5")})),
        Definition(rel("mv2"), Kind.MATVIEW, frozenset({rel("t2")})),
    ]
    return MVGraph.from_definitions(d)


def fresh(*names: str) -> dict[RelationName, MVFacts]:
    return {rel(n): MVFacts(rel(n), refreshed_at=T0) for n in names}


ALL_FRESH = fresh("mv1", "mv2", "mv5", "mv6")


@pytest.mark.parametrize(("behavior", "expected"), [
    ("cascade all", ["public.mv1", "public.mv5", "public.mv6"]),
    ("cascade backward", ["public.mv1", "public.mv5"]),
    ("cascade forward", ["public.mv5", "public.mv6"]),
    ("restrict", ["public.mv5"]),
    ("default", ["public.mv5"]),
])
def test_gaussdb_example_orders(behavior: str, expected: list[str]) -> None:
    p = plan(gauss(), [rel("mv5")], behavior, ALL_FRESH)
    assert [str(s.name) for s in p.steps] == expected


def test_default_skips_unchanged_and_restrict_forces() -> None:
    p = plan(gauss(), [rel("mv5")], "default", ALL_FRESH)
    assert p.steps[0].action is Action.SKIP
    assert p.steps[0].reason == "unchanged since 2026-11-20 10:00:00"
    p = plan(gauss(), [rel("mv5")], "restrict", ALL_FRESH)
    assert p.steps[0].action is Action.REFRESH
    assert p.steps[0].reason == "forced (RESTRICT)"


def test_cascades_use_default_for_every_view_including_the_named_one() -> None:
    facts = dict(ALL_FRESH)
    p = plan(gauss(), [rel("mv5")], "cascade all", facts)
    assert all(s.action is Action.SKIP for s in p.steps)


def test_staleness_propagates_inside_the_run() -> None:
    facts = dict(ALL_FRESH)
    facts[rel("mv1")] = MVFacts(rel("mv1"), refreshed_at=T0,
                                changes=(InputChange(rel("t1"), "write", 3),))
    p = plan(gauss(), [rel("mv5")], "cascade all", facts)
    verdicts = {str(s.name): (s.action, s.reason) for s in p.steps}
    assert verdicts["public.mv1"] == (
        Action.REFRESH, "input public.t1 changed (3 transactions since last refresh)")
    assert verdicts["public.mv5"] == (Action.REFRESH,
                                      "input public.mv1 is refreshed earlier in this run")
    assert verdicts["public.mv6"][0] is Action.REFRESH


def test_unrelated_views_stay_out_of_cascades() -> None:
    p = plan(gauss(), [rel("mv1")], "cascade forward", ALL_FRESH)
    assert [str(s.name) for s in p.steps] == ["public.mv1", "public.mv5", "public.mv6"]


def test_after_lists_upstream_steps_through_views() -> None:
    p = plan(gauss(), [rel("mv6")], "cascade backward", ALL_FRESH)
    after = {str(s.name): [str(a) for a in s.after] for s in p.steps}
    assert after == {"public.mv1": [], "public.mv5": ["public.mv1"],
                     "public.mv6": ["public.mv5"]}


def test_order_follows_paths_through_views_outside_the_plan() -> None:
    """b reads a only through the plain view v; the plan must still put a first."""
    g = MVGraph.from_definitions([
        Definition(rel("t"), Kind.TABLE),
        Definition(rel("z_first"), Kind.MATVIEW, frozenset({rel("t")})),
        Definition(rel("v"), Kind.VIEW, frozenset({rel("z_first")})),
        Definition(rel("a_second"), Kind.MATVIEW, frozenset({rel("v")})),
    ])
    p = plan(g, [], "default", {}, scope=[rel("z_first"), rel("a_second")])
    assert [str(s.name) for s in p.steps] == ["public.z_first", "public.a_second"]
    assert p.steps[1].after == (rel("z_first"),)


def test_selector_scope_refreshes_each_view_with_default() -> None:
    g = gauss()
    p = plan(g, [], "default", ALL_FRESH, scope=g.select("+mv5+"))
    assert [str(s.name) for s in p.steps] == ["public.mv1", "public.mv5", "public.mv6"]
    assert all(s.action is Action.SKIP for s in p.steps)


@pytest.mark.parametrize(("facts", "action", "reason"), [
    (MVFacts(rel("m")), Action.REFRESH, "never refreshed by mvgraph"),
    (MVFacts(rel("m"), populated=False, refreshed_at=T0), Action.REFRESH, "not populated"),
    (MVFacts(rel("m"), refreshed_at=T0, volatile=("now",)), Action.REFRESH,
     "calls now (always stale)"),
    (MVFacts(rel("m"), refreshed_at=T0, changes=(InputChange(rel("raw.x"), "stats"),)),
     Action.REFRESH, "input raw.x changed (approximate: pg_stat counters)"),
    (MVFacts(rel("m"), refreshed_at=T0, changes=(InputChange(rel("v"), "ddl"),)),
     Action.REFRESH, "definition of input public.v changed"),
    (MVFacts(rel("m"), refreshed_at=T0, changes=(InputChange(rel("mv1"), "outside"),)),
     Action.REFRESH, "input public.mv1 was refreshed outside mvgraph"),
    (MVFacts(rel("m"), refreshed_at=T0, outside_refreshes_seen=False), Action.SKIP,
     "unchanged since 2026-11-20 10:00:00 (refreshes outside mvgraph are not seen: no event "
     "trigger)"),
    (MVFacts(rel("m"), refreshed_at=T0, approximate=(rel("raw.x"),)), Action.SKIP,
     "unchanged since 2026-11-20 10:00:00 (approximate: raw.x in stats mode, whose pg_stat "
     "counters can lag recent writes)"),
    (MVFacts(rel("m"), refreshed_at=T0, changes=(
        InputChange(rel("raw.x"), "not_tracked", detail="raw.x"),)), Action.REFRESH,
     "input raw.x is untracked, so it counts as changed; run `mvgraph track raw.x` for exact "
     "skips"),
    (MVFacts(rel("m"), refreshed_at=T0, changes=(
        InputChange(rel("ev_1"), "not_tracked", detail="public.ev"),)), Action.REFRESH,
     "input public.ev_1 is untracked (writes through public.ev are not logged), so it counts "
     "as changed; run `mvgraph track public.ev` for exact skips"),
])
def test_decide_reasons(facts: MVFacts, action: Action, reason: str) -> None:
    assert decide(facts) == (action, reason)


@pytest.mark.parametrize(("text", "expected"), [
    ("cascade all", RefreshBehavior.CASCADE_ALL), ("CASCADE_ALL", RefreshBehavior.CASCADE_ALL),
    ("all", RefreshBehavior.CASCADE_ALL), ("Cascade-Forward", RefreshBehavior.CASCADE_FORWARD),
    ("backward", RefreshBehavior.CASCADE_BACKWARD), ("restrict", RefreshBehavior.RESTRICT),
    (None, RefreshBehavior.DEFAULT), ("default", RefreshBehavior.DEFAULT),
])
def test_behavior_spellings(text: str | None, expected: RefreshBehavior) -> None:
    assert RefreshBehavior.parse(text) is expected


def test_bad_behavior_and_non_matview_target() -> None:
    with pytest.raises(UsageError, match="unknown refresh behaviour"):
        RefreshBehavior.parse("sideways")
    for bare in ("cascade", " CASCADE "):
        with pytest.raises(UsageError, match="use CASCADE FORWARD, CASCADE BACKWARD or CASCADE"):
            RefreshBehavior.parse(bare)
    with pytest.raises(UnknownRelation, match="not a materialized view"):
        plan(gauss(), [rel("v1")], "default", ALL_FRESH)


def test_freshness_is_transitive_through_views() -> None:
    """mv5 reads mv1 through the plain view v1; mv6 reads mv5; mv2 is on another branch."""
    own = {rel("mv1"): (Action.REFRESH, "input public.t1 changed"),
           rel("mv5"): (Action.SKIP, "unchanged"), rel("mv6"): (Action.SKIP, "unchanged"),
           rel("mv2"): (Action.SKIP, "unchanged")}
    got = transitive_freshness(gauss(), own)
    assert got == {rel("mv1"): (False, "input public.t1 changed"),
                   rel("mv5"): (False, "stale (upstream public.mv1 is stale)"),
                   rel("mv6"): (False, "stale (upstream public.mv5 is stale)"),
                   rel("mv2"): (True, "unchanged")}


def test_a_stale_view_keeps_its_own_reason_and_fresh_upstream_changes_nothing() -> None:
    own = {rel("mv1"): (Action.SKIP, "unchanged"), rel("mv5"): (Action.REFRESH, "own reason"),
           rel("mv6"): (Action.SKIP, "unchanged"), rel("mv2"): (Action.SKIP, "unchanged")}
    got = transitive_freshness(gauss(), own)
    assert got[rel("mv1")] == (True, "unchanged")
    assert got[rel("mv5")] == (False, "own reason")
    assert got[rel("mv6")] == (False, "stale (upstream public.mv5 is stale)")


def test_selector_plan_header_and_statement_stay_short() -> None:
    g = gauss()
    facts = dict(ALL_FRESH)
    facts[rel("mv2")] = MVFacts(rel("mv2"))
    scope = [n for n in g.select("*") if g.kind(n) is Kind.MATVIEW]
    p = plan(g, scope, "default", facts, scope=scope)
    p = Plan(p.behavior, p.targets, p.steps, selector="*")
    assert p.header() == "plan for '*': 4 materialized views, 1 to refresh, 3 to skip"
    assert p.statement() == "mvgraph refresh '*'"
    named = plan(g, [rel("mv5")], "cascade all", facts)
    assert named.header() == ("REFRESH MATERIALIZED VIEW public.mv5 CASCADE ALL: "
                              "3 materialized views, 0 to refresh, 3 to skip")
