"""REFRESH run outside mvgraph (psql, dbt, pg_cron) counts as a refresh of the view."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

import mvgraph
from mvgraph.db.connect import connect
from mvgraph.db.scripts import run_script

Conn = psycopg.Connection[tuple[object, ...]]


@pytest.fixture
def chain(conn: Conn) -> Conn:
    """t -> m1 (unique index: CONCURRENTLY works) -> m2; plain_m has no unique index."""
    run_script(conn, """
        CREATE TABLE t (id int PRIMARY KEY, v int);
        INSERT INTO t VALUES (1, 1), (2, 2);
        CREATE MATERIALIZED VIEW m1 AS SELECT id, v FROM t;
        CREATE UNIQUE INDEX ON m1 (id);
        CREATE MATERIALIZED VIEW m2 AS SELECT sum(v) AS total FROM m1;
        CREATE MATERIALIZED VIEW plain_m AS SELECT id FROM t;
    """)
    mvgraph.track(conn, every=True)
    assert mvgraph.refresh(conn, "m1 m2 plain_m").status == "ok"
    return conn


def verdicts(conn: Conn, targets: str, behavior: str = "default") -> dict[str, str]:
    return {str(s.name): s.reason if s.action.value == "refresh" else "skip"
            for s in mvgraph.plan(conn, targets, behavior).steps}


def outside(dsn: str, *statements: str) -> None:
    """Statements from another connection, as psql would send them (one transaction)."""
    with connect(dsn, autocommit=False) as other:
        for s in statements:
            other.execute(s)
        other.commit()


@pytest.mark.parametrize("how", ["", "CONCURRENTLY"])
def test_outside_refresh_counts_and_dependents_are_stale(chain: Conn, db_dsn: str,
                                                         how: str) -> None:
    chain.execute("INSERT INTO t VALUES (3, 3)")
    assert verdicts(chain, "m1")["public.m1"] != "skip"
    outside(db_dsn, f"REFRESH MATERIALIZED VIEW {how} m1")
    got = verdicts(chain, "m1", "cascade forward")
    assert got["public.m1"] == "skip"
    assert got["public.m2"].startswith("input public.m1 was refreshed outside mvgraph")
    assert mvgraph.refresh(chain, "m1", "cascade forward").refreshed == [
        mvgraph.RelationName("public", "m2")]
    assert chain.execute("SELECT total FROM m2").fetchone() == (6,)


def test_write_open_across_an_outside_refresh_is_not_lost(chain: Conn, db_dsn: str) -> None:
    with connect(db_dsn, autocommit=False) as writer:
        writer.execute("INSERT INTO t VALUES (4, 4)")  # open while the REFRESH runs
        outside(db_dsn, "REFRESH MATERIALIZED VIEW m1")
        writer.commit()
    assert chain.execute("SELECT count(*) FROM m1 WHERE id = 4").fetchone() == (0,)
    assert verdicts(chain, "m1")["public.m1"].startswith("input public.t changed")


def test_write_committed_during_an_outside_refresh_is_not_lost(chain: Conn,
                                                                db_dsn: str) -> None:
    chain.execute("CREATE MATERIALIZED VIEW slow AS SELECT id, v FROM t, pg_sleep(1) "
                  "WITH NO DATA")
    mvgraph.configure(chain, "slow", volatile="never")  # pg_sleep only slows it down
    mvgraph.refresh(chain, "slow")
    errors: list[BaseException] = []

    def run_refresh() -> None:
        try:
            outside(db_dsn, "REFRESH MATERIALIZED VIEW slow")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with connect(db_dsn, autocommit=False) as writer:
        writer.execute("INSERT INTO t VALUES (5, 5)")
        refresher = threading.Thread(target=run_refresh)
        refresher.start()
        deadline = time.monotonic() + 10  # until the REFRESH is reading (its snapshot taken)
        while not chain.execute("SELECT 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
                                "AND query LIKE 'REFRESH%slow%'").fetchone():
            assert time.monotonic() < deadline, "the REFRESH did not start"
            time.sleep(0.02)
        writer.commit()
        refresher.join(30)
    assert not errors
    assert chain.execute("SELECT count(*) FROM slow WHERE id = 5").fetchone() == (0,)
    assert verdicts(chain, "slow")["public.slow"].startswith("input public.t changed")


def test_write_after_the_refresh_in_the_same_transaction_is_not_lost(chain: Conn,
                                                                     db_dsn: str) -> None:
    outside(db_dsn, "REFRESH MATERIALIZED VIEW m1", "INSERT INTO t VALUES (6, 6)")
    assert verdicts(chain, "m1")["public.m1"].startswith("input public.t changed")
    outside(db_dsn, "BEGIN ISOLATION LEVEL REPEATABLE READ", "REFRESH MATERIALIZED VIEW m1")
    assert verdicts(chain, "m1")["public.m1"] == "skip"
    with connect(db_dsn, autocommit=False) as other:  # its id is older than the snapshot's xmax
        other.execute("INSERT INTO t VALUES (7, 7)")
        chain.execute("INSERT INTO t VALUES (8, 8)")  # a later transaction commits first
        other.execute("REFRESH MATERIALIZED VIEW m1")
        other.execute("UPDATE t SET v = 0 WHERE id = 7")
        other.commit()
    assert chain.execute("SELECT v FROM m1 WHERE id = 7").fetchone() == (7,)
    assert verdicts(chain, "m1")["public.m1"].startswith("input public.t changed")


def test_failed_outside_refresh_records_nothing(chain: Conn, db_dsn: str) -> None:
    chain.execute("INSERT INTO t VALUES (7, 7)")
    before = chain.execute("SELECT mv, snapshot::text, refreshed_at FROM mvgraph.mv_state "
                           "ORDER BY mv").fetchall()
    logged = chain.execute("SELECT relid, xid, kind FROM mvgraph.changes ORDER BY 1, 2"
                           ).fetchall()
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
        outside(db_dsn, "REFRESH MATERIALIZED VIEW CONCURRENTLY plain_m")  # no unique index
    assert chain.execute("SELECT mv, snapshot::text, refreshed_at FROM mvgraph.mv_state "
                         "ORDER BY mv").fetchall() == before
    assert chain.execute("SELECT relid, xid, kind FROM mvgraph.changes ORDER BY 1, 2"
                         ).fetchall() == logged
    assert verdicts(chain, "plain_m")["public.plain_m"].startswith("input public.t changed")


def test_recorded_inputs_are_the_ones_mvgraph_records(conn: Conn, db_dsn: str) -> None:
    """Compaction keeps change rows by the recorded inputs: an outside refresh records the same
    set as mvgraph (through plain views, partition ancestors included)."""
    run_script(conn, """
        CREATE TABLE p (id int, v int) PARTITION BY RANGE (id);
        CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (100);
        CREATE TABLE d (id int);
        CREATE VIEW pv AS SELECT p1.id, p1.v FROM p1 JOIN d USING (id);
        CREATE MATERIALIZED VIEW mp AS SELECT id, v FROM pv;
        CREATE MATERIALIZED VIEW mq AS SELECT count(*) AS n FROM mp;
    """)
    mvgraph.track(conn, every=True)
    mvgraph.refresh(conn, "mp mq")
    query = ("SELECT mv::regclass::text, ARRAY(SELECT unnest(inputs) ORDER BY 1)::text "
             "FROM mvgraph.mv_state ORDER BY 1")
    by_mvgraph = dict(conn.execute(query).fetchall())
    conn.execute("TRUNCATE mvgraph.mv_state")
    outside(db_dsn, "REFRESH MATERIALIZED VIEW mp", "REFRESH MATERIALIZED VIEW mq")
    assert dict(conn.execute(query).fetchall()) == by_mvgraph
    assert str(by_mvgraph["mp"]).count(",") == 3  # pv, p1, p, d


def test_outside_refresh_of_a_view_mvgraph_never_refreshed(conn: Conn, db_dsn: str) -> None:
    run_script(conn, "CREATE TABLE t (id int); CREATE MATERIALIZED VIEW m AS SELECT id FROM t; "
                     "CREATE TABLE u (id int); CREATE MATERIALIZED VIEW other AS SELECT id FROM u;")
    mvgraph.track(conn, every=True)
    assert verdicts(conn, "m")["public.m"] == "never refreshed by mvgraph"
    outside(db_dsn, "REFRESH MATERIALIZED VIEW m")
    assert verdicts(conn, "m")["public.m"] == "skip"
    conn.execute("INSERT INTO t VALUES (1)")
    mvgraph.refresh(conn, "other")  # compacts the change log: m's unseen write must stay
    assert verdicts(conn, "m")["public.m"].startswith("input public.t changed")


def test_existing_installs_get_the_start_trigger(chain: Conn, db_dsn: str) -> None:
    chain.execute("DROP EVENT TRIGGER mvgraph_ddl_start")
    assert mvgraph.status(chain).event_trigger is False  # reported, not installed
    assert mvgraph.init(chain).triggers_installed == ("mvgraph_ddl_start",)
    assert mvgraph.status(chain).event_trigger is True
    chain.execute("INSERT INTO t VALUES (8, 8)")
    outside(db_dsn, "REFRESH MATERIALIZED VIEW m1")
    assert verdicts(chain, "m1")["public.m1"] == "skip"
