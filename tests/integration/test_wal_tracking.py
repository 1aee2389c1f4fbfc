"""Tracking mode wal: the replication slot's life, its lag warning, and exactness across a
restart, mixed modes and concurrent consumers (the refresh exactness tests run for both modes
in test_refresh.py)."""

from __future__ import annotations

import threading

import psycopg
import pytest

import mvgraph
from mvgraph.db.connect import connect
from mvgraph.db.install import init
from mvgraph.db.scripts import run_files
from mvgraph.refresh.service import settings
from mvgraph.tracking import wal
from tests.conftest import FIXTURES, cli
from tests.pgserver import bindir, cluster

Conn = psycopg.Connection[tuple[object, ...]]


def slots(conn: Conn) -> list[str]:
    return [str(r[0]) for r in conn.execute(
        "SELECT slot_name FROM pg_replication_slots WHERE database = current_database()")]


def publications(conn: Conn) -> list[str]:
    return [str(r[0]) for r in conn.execute("SELECT pubname FROM pg_publication ORDER BY 1")]


def verdict(conn: Conn, view: str) -> str:
    step = mvgraph.plan(conn, view).steps[0]
    return f"{step.action.value}: {step.reason}"


def load(conn: Conn, mode: str = "wal") -> None:
    run_files(conn, [FIXTURES / "gaussdb_nested" / "schema.sql"])
    mvgraph.track(conn, every=True, mode=mode)
    assert mvgraph.refresh(conn, "+mv6 mv2").status == "ok"


def test_slot_and_publications_live_exactly_while_a_table_is_in_wal_mode(conn: Conn) -> None:
    load(conn)
    oid = conn.execute("SELECT oid FROM pg_database WHERE datname = current_database()"
                       ).fetchone()
    assert oid is not None
    assert slots(conn) == [f"mvgraph_{oid[0]}"]
    assert publications(conn) == ["mvgraph_wal", "mvgraph_wal_insert"]
    assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgname = 'mvgraph_track'"
                        ).fetchone() == (0,)  # every fixture table has a primary key
    mvgraph.untrack(conn, ["test_table"])
    assert slots(conn) != []  # t2 is still in wal mode
    mvgraph.untrack(conn, every=True)
    assert slots(conn) == [] and publications(conn) == []


def test_switching_back_to_triggers_keeps_earlier_writes_and_drops_the_slot(conn: Conn) -> None:
    load(conn)
    conn.execute("INSERT INTO test_table VALUES (10, 1, 5)")  # not consumed yet
    mvgraph.track(conn, every=True, mode="triggers")
    assert slots(conn) == [] and publications(conn) == []
    assert verdict(conn, "mv1").startswith("refresh: ")
    mvgraph.refresh(conn, "+mv6 mv2")
    assert verdict(conn, "mv1").startswith("skip: ")
    conn.execute("INSERT INTO test_table VALUES (11, 1, 5)")  # by the trigger now
    assert "input public.test_table changed (1 transaction" in verdict(conn, "mv1")


def test_mixed_modes(conn: Conn) -> None:
    load(conn, "triggers")
    mvgraph.track(conn, ["test_table"], mode="wal")
    mvgraph.refresh(conn, "+mv6 mv2")
    modes = {str(t.name): t.mode for t in mvgraph.status(conn).tables}
    assert modes == {"public.test_table": "wal", "public.t2": "triggers"}
    conn.execute("INSERT INTO t2 VALUES (9, 'zeta')")
    assert "input public.t2 changed (1 transaction" in verdict(conn, "mv2")
    assert verdict(conn, "mv1").startswith("skip: ")
    conn.execute("UPDATE test_table SET val = val + 1 WHERE id = 1")
    assert "input public.test_table changed (1 transaction" in verdict(conn, "mv1")


def test_a_table_without_replica_identity_keeps_its_writers_working(conn: Conn) -> None:
    conn.execute("CREATE TABLE hist (id int, v int)")  # no primary key, like pgbench_history
    conn.execute("CREATE MATERIALIZED VIEW mh AS SELECT count(*) AS n FROM hist")
    mvgraph.track(conn, every=True, mode="wal")
    mvgraph.refresh(conn, "mh")
    assert publications(conn) == ["mvgraph_wal", "mvgraph_wal_insert"]
    assert conn.execute("SELECT pubname FROM pg_publication_tables WHERE tablename = 'hist'"
                        ).fetchall() == [("mvgraph_wal_insert",)]
    for statement in ("INSERT INTO hist VALUES (1, 1)", "UPDATE hist SET v = 2",
                      "DELETE FROM hist"):
        conn.execute(statement)  # UPDATE and DELETE would fail if they were published
        assert "input public.hist changed (1 transaction" in verdict(conn, "mh"), statement
        mvgraph.refresh(conn, "mh")
    conn.execute("ALTER TABLE hist ADD PRIMARY KEY (id)")
    mvgraph.track(conn, ["hist"], mode="wal")  # now it has one: everything comes from the WAL
    assert conn.execute("SELECT pubname FROM pg_publication_tables WHERE tablename = 'hist'"
                        ).fetchall() == [("mvgraph_wal",)]
    assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgname = 'mvgraph_track'"
                        ).fetchone() == (0,)


def test_concurrent_consumers_read_each_transaction_once(conn: Conn, db_dsn: str) -> None:
    load(conn)
    for i in range(20):
        conn.execute("INSERT INTO test_table VALUES (%s, 1, 1)", [100 + i])
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            with connect(db_dsn) as c:
                for _ in range(3):
                    wal.catch_up(c)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=consume) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # one row per transaction in the (index-less) log: no consumer read a transaction again
    assert conn.execute("SELECT count(*) FROM mvgraph.write_log c JOIN pg_class r ON "
                        "r.oid = c.relid WHERE r.relname = 'test_table'").fetchone() == (20,)
    assert conn.execute("SELECT count(*) FROM mvgraph.changes c JOIN pg_class r ON "
                        "r.oid = c.relid WHERE r.relname = 'test_table' AND c.kind = 'w'"
                        ).fetchone() == (20,)
    assert "input public.test_table changed (20 transactions" in verdict(conn, "mv1")


def test_status_warns_when_the_slot_keeps_too_much_wal(conn: Conn,
                                                        capsys: pytest.CaptureFixture[str],
                                                        db_dsn: str) -> None:
    load(conn)
    assert mvgraph.status(conn).warnings == ()
    with pytest.raises(mvgraph.UsageError):
        settings(conn, "wal_slot_max_lag", "lots")
    settings(conn, "wal_slot_max_lag", "1")  # bytes
    conn.execute("INSERT INTO test_table VALUES (10, 1, 5)")
    warnings = mvgraph.status(conn).warnings
    assert len(warnings) == 1 and "wal_slot_max_lag" in warnings[0], warnings
    code, _out, err = cli(capsys, "status", "--dsn", db_dsn)
    assert code == 0 and "warning:" in err and "max_slot_wal_keep_size" in err, err


def test_the_slot_survives_a_restart_and_nothing_is_lost() -> None:
    with cluster(bindir()) as pg, connect(pg.uri) as c:
        init(c)
        load(c)
        c.execute("INSERT INTO test_table VALUES (10, 1, 5)")  # decoded after the restart
        c.close()
        pg.restart()
        with connect(pg.uri) as again:
            assert slots(again) != []
            assert "input public.test_table changed (1 transaction" in verdict(again, "mv1")
            mvgraph.refresh(again, "+mv6 mv2")
            assert verdict(again, "mv1").startswith("skip: ")
            again.execute("DELETE FROM test_table WHERE id = 10")
            assert "input public.test_table changed (1 transaction" in verdict(again, "mv1")
            mvgraph.untrack(again, every=True)
            assert slots(again) == []


def test_wal_mode_without_logical_wal_level_is_a_clear_usage_error(
        capsys: pytest.CaptureFixture[str]) -> None:
    with cluster(bindir(), wal_level=None) as pg, connect(pg.uri) as c:
        init(c)
        run_files(c, [FIXTURES / "gaussdb_nested" / "schema.sql"])
        code, _out, err = cli(capsys, "track", "--all", "--mode", "wal", "--dsn", pg.uri)
        assert code == 2, err
        assert len(err.strip().splitlines()) == 1
        assert "wal_level = logical" in err and "ALTER SYSTEM SET wal_level" in err, err
        assert c.execute("SELECT count(*) FROM mvgraph.table_mode").fetchone() == (0,)
        assert slots(c) == [] and publications(c) == []


def test_a_slot_the_server_invalidated_is_made_again_and_readers_refresh_once() -> None:
    with cluster(bindir()) as pg, connect(pg.uri) as c:
        init(c)
        load(c)
        c.execute("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
        c.execute("SELECT pg_reload_conf()")
        c.execute("CREATE TABLE filler (x text)")
        for _ in range(4):  # a few WAL segments past the slot, then a checkpoint removes them
            c.execute("INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 3000)")
            c.execute("SELECT pg_switch_wal()")
            c.execute("CHECKPOINT")
        assert c.execute("SELECT wal_status FROM pg_replication_slots").fetchone() == ("lost",)
        assert verdict(c, "mv1").startswith("refresh: change tracking of input "
                                            "public.test_table started")
        assert c.execute("SELECT wal_status FROM pg_replication_slots").fetchone() != ("lost",)
        mvgraph.refresh(c, "+mv6 mv2")
        c.execute("INSERT INTO test_table VALUES (10, 1, 5)")
        assert "input public.test_table changed (1 transaction" in verdict(c, "mv1")


def test_a_failed_switch_to_wal_leaves_no_slot(conn: Conn) -> None:
    conn.execute("CREATE TABLE tmp_src (id int PRIMARY KEY)")
    conn.execute("CREATE MATERIALIZED VIEW tmp_mv AS SELECT count(*) FROM tmp_src")
    conn.execute("CREATE ROLE wal_nobody")
    conn.execute("ALTER TABLE tmp_src OWNER TO wal_nobody")
    conn.execute("CREATE ROLE wal_tracker REPLICATION")
    conn.execute("GRANT CREATE ON DATABASE " + str(conn.info.dbname) + " TO wal_tracker")
    conn.execute("GRANT USAGE, CREATE ON SCHEMA mvgraph, public TO wal_tracker")
    conn.execute("GRANT ALL ON ALL TABLES IN SCHEMA mvgraph TO wal_tracker")
    conn.execute("SET ROLE wal_tracker")
    try:
        with pytest.raises(mvgraph.MvgraphError):  # must own the table to publish it
            mvgraph.track(conn, ["tmp_src"], mode="wal")
    finally:
        conn.execute("RESET ROLE")
    assert slots(conn) == [] and publications(conn) == []
    assert conn.execute("SELECT count(*) FROM mvgraph.table_mode").fetchone() == (0,)
    conn.execute("DROP OWNED BY wal_tracker, wal_nobody CASCADE")
    conn.execute("DROP ROLE wal_tracker")
    conn.execute("DROP ROLE wal_nobody")


def restart_lsn(conn: Conn) -> str:
    row = conn.execute("SELECT restart_lsn::text FROM pg_replication_slots "
                       "WHERE slot_name = %s", [wal.slot_name(conn)]).fetchone()
    assert row is not None
    return str(row[0])


def test_reads_keep_the_slots_restart_point_close(conn: Conn) -> None:
    """Every read decodes again from the slot's restart point: a read finding it more than 1 MB
    behind logs a running-transactions record so that the point moves up with the reads (not
    only when the background writer logs one, every 15 s). A record of the background writer
    read first may hold the point back for one read, hence up to three reads."""
    if conn.info.server_version < 160000:
        pytest.skip("pg_log_standby_snapshot() needs PostgreSQL 16: older servers' reads do "
                    "without it (the point moves with the background writer's records)")
    load(conn)
    conn.execute("INSERT INTO test_table SELECT g, 1, 1 FROM generate_series(1000, 40000) g")
    conn.execute("DELETE FROM test_table WHERE id >= 1000")  # more than 1 MB of WAL
    before = str(conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0])
    moved = False
    for _ in range(3):
        wal.catch_up(conn)
        moved = conn.execute("SELECT %s::pg_lsn >= %s::pg_lsn", [restart_lsn(conn), before]
                             ).fetchone() == (True,)
        if moved:
            break
    assert moved
    assert "input public.test_table changed (2 transactions" in verdict(conn, "mv1")
