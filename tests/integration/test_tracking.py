"""The tracking trigger (migration 11): one index-less row per table and writing statement,
counted once per transaction, exact under rollbacks and savepoints, never making writers wait,
compacted after refreshes."""

from __future__ import annotations

import psycopg
import pytest

import mvgraph
from mvgraph.db.connect import connect
from mvgraph.db.migrate import migrate
from mvgraph.db.scripts import run_files, run_script
from tests.conftest import FIXTURES

Conn = psycopg.Connection[tuple[object, ...]]


@pytest.fixture
def gauss(conn: Conn) -> Conn:
    """The GaussDB fixture, every table tracked by triggers, every view refreshed once."""
    run_files(conn, [FIXTURES / "gaussdb_nested" / "schema.sql"])
    mvgraph.track(conn, every=True)
    assert mvgraph.refresh(conn, "+mv6 mv2").status == "ok"
    return conn


def mv1_verdict(conn: Conn) -> tuple[str, str]:
    step = mvgraph.plan(conn, "mv1").steps[0]
    return step.action.value, step.reason


def write_rows(conn: Conn, table: str) -> int:
    row = conn.execute("SELECT count(*) FROM mvgraph.write_log WHERE relid = %s::regclass",
                       [table]).fetchone()
    assert row is not None
    return int(str(row[0]))


def test_write_rolled_back_to_a_savepoint_is_not_a_change(gauss: Conn) -> None:
    with gauss.transaction():
        with pytest.raises(psycopg.errors.RaiseException), gauss.transaction():  # a savepoint
            gauss.execute("INSERT INTO test_table VALUES (11, 1, 1)")
            gauss.execute("DO $$ BEGIN RAISE EXCEPTION 'roll back'; END $$")
        gauss.execute("SELECT 1")
    assert mv1_verdict(gauss)[0] == "skip"
    assert write_rows(gauss, "test_table") == 0


def test_write_after_a_rolled_back_savepoint_is_logged_again(gauss: Conn) -> None:
    with gauss.transaction():
        gauss.execute("INSERT INTO test_table VALUES (12, 1, 1)")  # kept ...
        with pytest.raises(psycopg.errors.RaiseException), gauss.transaction():
            gauss.execute("UPDATE test_table SET val = val + 1 WHERE id = 12")  # ... gone
            gauss.execute("DO $$ BEGIN RAISE EXCEPTION 'roll back'; END $$")
    with gauss.transaction():
        with pytest.raises(psycopg.errors.RaiseException), gauss.transaction():
            gauss.execute("INSERT INTO test_table VALUES (13, 1, 1)")  # gone ...
            gauss.execute("DO $$ BEGIN RAISE EXCEPTION 'roll back'; END $$")
        gauss.execute("INSERT INTO test_table VALUES (14, 1, 1)")  # ... this one kept
    action, reason = mv1_verdict(gauss)
    assert action == "refresh"
    assert "input public.test_table changed (2 transactions" in reason, reason
    assert write_rows(gauss, "test_table") == 2


def test_many_statements_in_one_transaction_count_as_one_change(gauss: Conn) -> None:
    """One row per statement on the writers' path; readers count transactions."""
    with gauss.transaction():
        for i in range(20):
            gauss.execute("INSERT INTO test_table VALUES (%s, 1, 1)", [200 + i])
            gauss.execute("INSERT INTO t2 VALUES (%s, 'x')", [200 + i])
    gauss.execute("UPDATE test_table SET val = 0 WHERE id = 200")  # a second transaction
    assert write_rows(gauss, "test_table") == 21
    assert write_rows(gauss, "t2") == 20
    assert "input public.test_table changed (2 transactions" in mv1_verdict(gauss)[1]
    assert gauss.execute("SELECT count(*) FROM mvgraph.changes WHERE relid = 't2'::regclass"
                         ).fetchone() == (1,)


def test_two_writers_of_one_table_do_not_wait_for_each_other(gauss: Conn, db_dsn: str) -> None:
    with connect(db_dsn, autocommit=False) as a, connect(db_dsn, autocommit=False) as b:
        for w in (a, b):
            w.execute("SET lock_timeout = '2s'")
        a.execute("INSERT INTO test_table VALUES (16, 1, 1)")  # both open, on the same table
        b.execute("INSERT INTO test_table VALUES (17, 1, 1)")
        b.execute("UPDATE test_table SET val = 2 WHERE id = 1")
        a.execute("INSERT INTO test_table VALUES (18, 1, 1)")
        b.commit()
        a.commit()
    assert "changed (2 transactions" in mv1_verdict(gauss)[1]


def test_compaction_empties_the_logs_once_every_reader_refreshed(gauss: Conn) -> None:
    for i in range(5):
        gauss.execute("INSERT INTO test_table VALUES (%s, 1, 1)", [300 + i])
        gauss.execute("INSERT INTO t2 VALUES (%s, 'y')", [300 + i])
    assert write_rows(gauss, "test_table") == 5
    mvgraph.refresh(gauss, "+mv6")  # every reader of test_table; t2's reader mv2 is not run
    assert write_rows(gauss, "test_table") == 0
    assert write_rows(gauss, "t2") == 5
    mvgraph.refresh(gauss, "mv2")
    assert gauss.execute("SELECT count(*) FROM mvgraph.write_log").fetchone() == (0,)
    assert gauss.execute("SELECT count(*) FROM mvgraph.change_log c "
                         "WHERE c.relid IN ('test_table'::regclass, 't2'::regclass)"
                         ).fetchone() == (0,)


def test_partition_writes_log_every_ancestor(conn: Conn) -> None:
    run_script(conn, """
        CREATE TABLE ev (id int) PARTITION BY RANGE (id);
        CREATE TABLE ev_a PARTITION OF ev FOR VALUES FROM (0) TO (100);
        CREATE MATERIALIZED VIEW mev AS SELECT count(*) AS n FROM ev;
    """)
    mvgraph.track(conn, ["ev"])
    mvgraph.refresh(conn, "mev")
    with conn.transaction():
        conn.execute("INSERT INTO ev_a VALUES (1)")
        conn.execute("INSERT INTO ev_a VALUES (2)")
    rows = conn.execute("SELECT relid::regclass::text, count(*) FROM mvgraph.write_log "
                        "GROUP BY 1 ORDER BY 1").fetchall()
    assert rows == [("ev", 2), ("ev_a", 2)]  # two statements
    assert conn.execute("SELECT count(*) FROM mvgraph.changes WHERE kind = 'w'").fetchone() == (2,)
    assert mvgraph.plan(conn, "mev").steps[0].action.value == "refresh"


def test_upgrade_keeps_rows_of_the_old_trigger_and_converts_its_triggers(
        empty_db_dsn: str) -> None:
    """Rows the version-10 trigger wrote (into change_log) and rows of the new one for the same
    transaction count once; the triggers stay as they are (their function is replaced)."""
    with connect(empty_db_dsn) as conn:
        migrate(conn, target=10)
        run_script(conn, """
            CREATE TABLE t (id int);
            CREATE TRIGGER mvgraph_track BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON t
            FOR EACH STATEMENT EXECUTE FUNCTION mvgraph.track_write();
            ALTER TABLE t ENABLE ALWAYS TRIGGER mvgraph_track;
            INSERT INTO mvgraph.table_mode (relid, name, mode) VALUES ('t'::regclass, 'public.t',
                                                                       'triggers');
        """)
        with connect(empty_db_dsn, autocommit=False) as writer:
            writer.execute("INSERT INTO t VALUES (1)")  # the old trigger: a change_log row
            migrate(conn)
            writer.execute("INSERT INTO t VALUES (2)")  # the new one: a write_log row
            writer.commit()
        conn.execute("INSERT INTO t VALUES (3)")
        counts = conn.execute("SELECT (SELECT count(*) FROM mvgraph.change_log), "
                              "(SELECT count(*) FROM mvgraph.write_log), "
                              "(SELECT count(*) FROM mvgraph.changes WHERE kind = 'w')"
                              ).fetchone()
        assert counts == (1, 2, 2)
        mvgraph.track(conn, ["t"])  # the trigger is current: nothing to convert or log
        assert conn.execute("SELECT count(*) FROM mvgraph.change_log WHERE kind = 't'"
                            ).fetchone() == (0,)
