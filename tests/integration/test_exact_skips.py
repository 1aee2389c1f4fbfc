"""Skipping is exact by default (issue 18, item 1): an untracked input is refreshed, never
skipped on statistics; ``stats`` is an explicit mode whose reasons say "approximate"."""

from __future__ import annotations

import json

import psycopg
import pytest

import mvgraph
from mvgraph.db.scripts import run_script
from tests.conftest import cli

Conn = psycopg.Connection[tuple[object, ...]]


def steps(report: mvgraph.RefreshReport) -> dict[str, tuple[str, str]]:
    return {str(s.name): (s.action, s.reason) for s in report.steps}


def test_untracked_input_is_refreshed_not_skipped(conn: Conn) -> None:
    run_script(conn, "CREATE TABLE t (id int); CREATE MATERIALIZED VIEW v AS SELECT id FROM t")
    mvgraph.refresh(conn, "v")
    conn.execute("INSERT INTO t VALUES (1)")  # autocommitted; the refresh follows at once
    action, reason = steps(mvgraph.refresh(conn, "v"))["public.v"]
    assert action == "refreshed"
    assert conn.execute("SELECT count(*) FROM v").fetchone() == (1,)
    assert "public.t" in reason and "untracked" in reason
    assert "`mvgraph track public.t`" in reason
    # nothing written since: still refreshed (nothing says the table is unchanged)
    assert steps(mvgraph.refresh(conn, "v"))["public.v"][0] == "refreshed"
    mvgraph.track(conn, ["t"])
    mvgraph.refresh(conn, "v")
    assert steps(mvgraph.refresh(conn, "v"))["public.v"][0] == "skipped"


def test_untracked_input_behind_plain_views_is_named(conn: Conn) -> None:
    run_script(conn, """
        CREATE SCHEMA raw; CREATE TABLE raw.orders (id int); CREATE TABLE tracked (id int);
        CREATE VIEW v1 AS SELECT id FROM raw.orders;
        CREATE VIEW v2 AS SELECT id FROM v1 UNION ALL SELECT id FROM tracked;
        CREATE MATERIALIZED VIEW m1 AS SELECT id FROM v2;
        CREATE MATERIALIZED VIEW m2 AS SELECT count(*) AS n FROM m1;
    """)
    mvgraph.track(conn, ["tracked"])
    mvgraph.refresh(conn, "m1+")
    plan = {str(s.name): s for s in mvgraph.plan(conn, "m1+").steps}
    assert plan["public.m1"].action.value == "refresh"
    assert "raw.orders" in plan["public.m1"].reason
    assert "`mvgraph track raw.orders`" in plan["public.m1"].reason
    assert "tracked" not in plan["public.m1"].reason.replace("untracked", "")
    # m2 reads only m1, whose refreshes are logged exactly: stale through m1 in a cascade,
    # not on its own
    assert plan["public.m2"].reason == "input public.m1 is refreshed earlier in this run"
    report = mvgraph.refresh(conn, "m2")
    assert steps(report)["public.m2"][0] == "skipped"


def test_explicit_stats_mode_is_labelled_approximate(conn: Conn) -> None:
    run_script(conn, "CREATE TABLE s (id int); CREATE MATERIALIZED VIEW ms AS SELECT id FROM s")
    mvgraph.track(conn, ["s"], mode="stats")
    mvgraph.refresh(conn, "ms")
    action, reason = steps(mvgraph.refresh(conn, "ms"))["public.ms"]
    assert action == "skipped"
    assert "approximate" in reason and "public.s" in reason
    conn.execute("INSERT INTO s VALUES (1)")
    conn.execute("SELECT pg_stat_force_next_flush()")
    import time

    deadline = time.monotonic() + 5  # the counters arrive a little late: that is the point
    while (p := mvgraph.plan(conn, "ms")).steps[0].action.value == "skip" \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert p.steps[0].action.value == "refresh"
    assert "approximate" in p.steps[0].reason


def test_status_lists_untracked_inputs(conn: Conn, db_dsn: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    run_script(conn, """
        CREATE TABLE t (id int); CREATE TABLE u (id int); CREATE TABLE s (id int);
        CREATE MATERIALIZED VIEW v AS SELECT t.id FROM t, u, s;
    """)
    mvgraph.track(conn, ["u"])
    mvgraph.track(conn, ["s"], mode="stats")
    report = mvgraph.status(conn)
    assert [str(n) for n in report.untracked] == ["public.t"]
    data = report.to_dict()
    assert data["untracked"] == ["public.t"]
    modes = {t["name"]: t["mode"] for t in data["tables"]}  # type: ignore[attr-defined]
    assert modes == {"public.t": "untracked", "public.u": "triggers", "public.s": "stats"}
    code, out, _ = cli(capsys, "--dsn", db_dsn, "status", "--json")
    assert code == 0 and json.loads(out)["untracked"] == ["public.t"]
    code, out, _ = cli(capsys, "--dsn", db_dsn, "status")
    assert code == 0
    flat = " ".join(out.split())
    assert "mvgraph track public.t" in flat and "approximate" in flat


def test_partitions_are_covered_by_their_tracked_root(conn: Conn) -> None:
    run_script(conn, """
        CREATE TABLE ev (id int) PARTITION BY RANGE (id);
        CREATE TABLE ev_a PARTITION OF ev FOR VALUES FROM (0) TO (100)
            PARTITION BY RANGE (id);
        CREATE TABLE ev_a1 PARTITION OF ev_a FOR VALUES FROM (0) TO (50);
        CREATE MATERIALIZED VIEW m_leaf AS SELECT count(*) AS n FROM ev_a1;
    """)
    mvgraph.refresh(conn, "m_leaf")
    reason = steps(mvgraph.refresh(conn, "m_leaf"))["public.m_leaf"][1]
    assert "public.ev_a1" in reason and "`mvgraph track public.ev`" in reason
    # tracking the partition alone does not see writes routed through its parents
    mvgraph.track(conn, ["ev_a1"])
    mvgraph.refresh(conn, "m_leaf")
    reason = steps(mvgraph.refresh(conn, "m_leaf"))["public.m_leaf"][1]
    assert "public.ev" in reason and "`mvgraph track public.ev`" in reason
    mvgraph.untrack(conn, ["ev_a1"])
    mvgraph.track(conn, ["ev"])  # the root covers every partition below it
    mvgraph.refresh(conn, "m_leaf")
    assert steps(mvgraph.refresh(conn, "m_leaf"))["public.m_leaf"][0] == "skipped"
    conn.execute("INSERT INTO ev VALUES (7)")  # routed to ev_a1 through the root
    report = mvgraph.refresh(conn, "m_leaf")
    assert steps(report)["public.m_leaf"][0] == "refreshed"
    assert conn.execute("SELECT n FROM m_leaf").fetchone() == (1,)
    status = mvgraph.status(conn)
    assert status.untracked == ()
    assert {str(t.name): t.mode for t in status.tables} == {"public.ev_a1": "triggers"}


def test_track_all_tracks_the_root_above_a_partition_read_directly(conn: Conn) -> None:
    run_script(conn, """
        CREATE TABLE ev (id int) PARTITION BY RANGE (id);
        CREATE TABLE ev_a1 PARTITION OF ev FOR VALUES FROM (0) TO (50);
        CREATE MATERIALIZED VIEW m_leaf AS SELECT count(*) AS n FROM ev_a1;
    """)
    assert [str(n) for n in mvgraph.track(conn, every=True)] == ["public.ev_a1", "public.ev"]
    mvgraph.refresh(conn, "m_leaf")
    assert steps(mvgraph.refresh(conn, "m_leaf"))["public.m_leaf"][0] == "skipped"


def test_system_relations_and_sequences_are_not_untracked_tables(conn: Conn) -> None:
    run_script(conn, """
        CREATE SEQUENCE sq;
        CREATE MATERIALIZED VIEW ml AS SELECT count(*) AS n FROM pg_locks;
        CREATE MATERIALIZED VIEW mq AS SELECT last_value FROM sq;
    """)
    mvgraph.refresh(conn, "ml mq")
    got = steps(mvgraph.refresh(conn, "ml mq"))
    assert got["public.ml"][1] == "reads system relation pg_catalog.pg_locks (always stale)"
    assert got["public.mq"][1] == "reads sequence public.sq (always stale)"
    assert mvgraph.status(conn).untracked == ()
