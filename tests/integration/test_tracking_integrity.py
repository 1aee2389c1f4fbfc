"""Tracking a table owner cannot switch off (issue 17, items 6, 7 and 9), from the attacker's
side: ``mallory`` owns the tracked tables but has no mvgraph level; the administrator (the
superuser) tracks them and owns the views over them. After each hiding trick a write follows,
and the canary, a downstream materialized view, must be planned for refresh, not skipped, with a
reason naming the table and the fix."""

from __future__ import annotations

import re
from collections.abc import Iterator

import psycopg
import pytest

import mvgraph
from mvgraph.db.scripts import run_script
from mvgraph.errors import TrackingError
from mvgraph.refresh.service import prepare

Conn = psycopg.Connection[tuple[object, ...]]


@pytest.fixture
def mallory(conn: Conn, db_dsn: str) -> Iterator[Conn]:
    """A connection as mallory, owner of t (plain), p (partitioned) and h (inheritance parent),
    each read by a view (mv_t, mv_p, mv_h) that the administrator tracks and refreshes."""
    prepare(conn)
    role = f"mallory_{conn.info.dbname}"
    run_script(conn, f"""
        CREATE ROLE {role} LOGIN;
        GRANT CREATE ON SCHEMA public TO {role};
        GRANT CREATE ON DATABASE {conn.info.dbname} TO {role};
        CREATE TABLE t (id int PRIMARY KEY, v int);
        CREATE TABLE p (id int, v int) PARTITION BY RANGE (id);
        CREATE TABLE p_1 PARTITION OF p FOR VALUES FROM (0) TO (100);
        CREATE TABLE h (id int, v int);
        INSERT INTO t VALUES (1, 1); INSERT INTO p VALUES (1, 1); INSERT INTO h VALUES (1, 1);
        ALTER TABLE t OWNER TO {role}; ALTER TABLE p OWNER TO {role};
        ALTER TABLE p_1 OWNER TO {role}; ALTER TABLE h OWNER TO {role};
        CREATE MATERIALIZED VIEW mv_t AS SELECT sum(v) AS s FROM t;
        CREATE MATERIALIZED VIEW mv_p AS SELECT sum(v) AS s FROM p;
        CREATE MATERIALIZED VIEW mv_h AS SELECT sum(v) AS s FROM h;
    """)
    mvgraph.track(conn, ["t", "p", "h"])
    assert mvgraph.refresh(conn, "mv_t mv_p mv_h").status == "ok"
    assert verdict(conn, "mv_t")[0] == "skip"
    with psycopg.connect(psycopg.conninfo.make_conninfo(db_dsn, user=role),
                         autocommit=True) as c:
        yield c
    run_script(conn, f"DROP OWNED BY {role} CASCADE; DROP ROLE {role};")


def verdict(conn: Conn, view: str) -> tuple[str, str]:
    step = mvgraph.plan(conn, view).steps[0]
    return step.action.value, step.reason


def test_a_disabled_trigger_makes_the_readers_stale(conn: Conn, mallory: Conn) -> None:
    mallory.execute("ALTER TABLE t DISABLE TRIGGER mvgraph_track")
    mallory.execute("UPDATE t SET v = 1000")
    action, reason = verdict(conn, "mv_t")
    assert action == "refresh"
    assert "public.t has its tracking trigger disabled; run `mvgraph track public.t`" in reason
    st = mvgraph.status(conn)
    assert next(tb.problems for tb in st.tables if str(tb.name) == "public.t")
    assert any("writes to public.t are not all logged" in w for w in st.warnings)
    # a replica-only trigger (fires under session_replication_role = replica only) neither
    mallory.execute("ALTER TABLE t ENABLE REPLICA TRIGGER mvgraph_track")
    assert "public.t has its tracking trigger enabled for replication sessions only" in \
        verdict(conn, "mv_t")[1]
    mvgraph.track(conn, ["t"])  # the fix: a trigger again, and the readers are refreshed once
    assert mvgraph.refresh(conn, "mv_t").status == "ok"
    assert conn.execute("SELECT s FROM mv_t").fetchone() == (1000,)
    assert verdict(conn, "mv_t")[0] == "skip"


def test_disable_write_enable_between_two_plans_is_seen(conn: Conn, mallory: Conn) -> None:
    """The trigger is back and enabled, but its pg_trigger row is not the one mvgraph recorded
    (seen even without the DDL event trigger)."""
    run_script(conn, "ALTER EVENT TRIGGER mvgraph_ddl_end DISABLE")
    with mallory.transaction():
        mallory.execute("ALTER TABLE t DISABLE TRIGGER mvgraph_track")
        mallory.execute("UPDATE t SET v = 2000")
        mallory.execute("ALTER TABLE t ENABLE ALWAYS TRIGGER mvgraph_track")
    assert conn.execute("SELECT count(*) FROM mvgraph.write_log").fetchone() == (0,)
    action, reason = verdict(conn, "mv_t")
    assert action == "refresh"
    assert "public.t has a tracking trigger that `mvgraph track` did not install" in reason


def test_a_decoy_trigger_on_a_new_partition_makes_the_readers_stale(
        conn: Conn, mallory: Conn) -> None:
    run_script(mallory, """
        CREATE FUNCTION public.decoy() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN RETURN NULL; END $$;
        CREATE TABLE p_2 PARTITION OF p FOR VALUES FROM (100) TO (200);
        CREATE TRIGGER mvgraph_track AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON p_2
            FOR EACH STATEMENT EXECUTE FUNCTION public.decoy();
        INSERT INTO p_2 VALUES (150, 5000);
    """)
    action, reason = verdict(conn, "mv_p")
    assert action == "refresh"
    assert "public.p_2 (below public.p) has no tracking trigger; run `mvgraph track public.p`" \
        in reason
    mvgraph.track(conn, ["p"])  # the decoy is replaced by mvgraph's trigger
    assert mvgraph.refresh(conn, "mv_p").status == "ok"
    mallory.execute("INSERT INTO p_2 VALUES (151, 1)")
    assert verdict(conn, "mv_p")[0] == "refresh"


def test_inheritance_children_are_tracked_with_their_parent(conn: Conn, mallory: Conn) -> None:
    mallory.execute("CREATE TABLE h_child (extra text) INHERITS (h)")
    mallory.execute("INSERT INTO h_child VALUES (2, 7000, 'x')")
    action, reason = verdict(conn, "mv_h")
    assert action == "refresh"
    assert "public.h_child (below public.h) has no tracking trigger" in reason
    mvgraph.track(conn, ["h"])  # the child gets the trigger; its writes count for h
    assert mvgraph.refresh(conn, "mv_h").status == "ok"
    assert verdict(conn, "mv_h")[0] == "skip"
    mallory.execute("UPDATE h_child SET v = 1")
    action, reason = verdict(conn, "mv_h")
    assert (action, reason) == ("refresh", "input public.h changed (1 transaction since last "
                                           "refresh)")
    mvgraph.refresh(conn, "mv_h")
    mallory.execute("UPDATE h SET v = 2")  # through the parent: logged for it
    assert verdict(conn, "mv_h")[0] == "refresh"


def test_statements_that_write_nothing_log_nothing(conn: Conn, mallory: Conn) -> None:
    conn.execute("DELETE FROM mvgraph.write_log")
    run_script(conn, """
        DO $$ BEGIN
            FOR i IN 1 .. 20000 LOOP
                INSERT INTO t SELECT 1, 1 WHERE false;
            END LOOP;
        END $$;
    """)
    for _ in range(20):  # separate transactions too
        conn.execute("INSERT INTO t SELECT 1, 1 WHERE false")
        conn.execute("UPDATE t SET v = 0 WHERE false")
        conn.execute("DELETE FROM t WHERE false")
        conn.execute("INSERT INTO t VALUES (1, 1) ON CONFLICT DO NOTHING")
    assert conn.execute("SELECT count(*) FROM mvgraph.write_log").fetchone() == (0,)
    assert verdict(conn, "mv_t")[0] == "skip"
    conn.execute("INSERT INTO t SELECT 2, 2")  # a statement that writes: one row
    conn.execute("TRUNCATE h")  # TRUNCATE always logs
    rows = conn.execute("SELECT relid::regclass::text, count(*) FROM mvgraph.write_log "
                        "GROUP BY 1 ORDER BY 1").fetchall()
    assert rows == [("h", 1), ("t", 1)]
    with conn.transaction():  # rows written by a statement through a partitioned table
        conn.execute("INSERT INTO p VALUES (2, 2)")
    assert verdict(conn, "mv_p")[0] == "refresh"


def test_a_decoy_publication_is_refused(conn: Conn, mallory: Conn) -> None:
    """mallory makes a publication of mvgraph's name that publishes only TRUNCATE, before the
    administrator switches t to wal mode."""
    mallory.execute("CREATE PUBLICATION mvgraph_wal WITH (publish = 'truncate')")
    with pytest.raises(TrackingError) as err:
        mvgraph.track(conn, ["t"], mode="wal")
    text = str(err.value)
    assert "\n" not in text
    assert "publication mvgraph_wal was not created by mvgraph" in text
    assert "DROP PUBLICATION mvgraph_wal" in text
    mallory.execute("INSERT INTO t VALUES (3, 3)")  # t keeps its trigger: the canary sees it
    assert verdict(conn, "mv_t")[0] == "refresh"
    mallory.execute("DROP PUBLICATION mvgraph_wal")
    mvgraph.track(conn, ["t"], mode="wal")
    mvgraph.refresh(conn, "mv_t")
    mallory.execute("INSERT INTO t VALUES (4, 4)")
    assert verdict(conn, "mv_t")[0] == "refresh"


def test_an_altered_publication_fails_the_plan(conn: Conn, mallory: Conn) -> None:
    mvgraph.track(conn, ["t"], mode="wal")
    mvgraph.refresh(conn, "mv_t")
    conn.execute("ALTER PUBLICATION mvgraph_wal SET (publish = 'truncate')")
    mallory.execute("INSERT INTO t VALUES (5, 5)")  # not published: lost to the slot
    with pytest.raises(TrackingError, match="publication mvgraph_wal publishes truncate instead "
                                            "of insert, update, delete, truncate"):
        mvgraph.plan(conn, "mv_t")
    conn.execute("ALTER PUBLICATION mvgraph_wal SET (publish = 'insert, update, delete, "
                 "truncate')")
    with pytest.raises(TrackingError, match=r"publication mvgraph_wal was altered since mvgraph "
                                            r"made it.*`mvgraph untrack`"):
        mvgraph.plan(conn, "mv_t")
    mvgraph.untrack(conn, ["t"])  # the fix: made again, and tracking starts anew
    mvgraph.track(conn, ["t"], mode="wal")
    assert verdict(conn, "mv_t")[0] == "refresh"
    mvgraph.refresh(conn, "mv_t")
    assert conn.execute("SELECT s FROM mv_t").fetchone() == (6,)


def test_a_table_taken_out_of_the_publication_fails_the_plan(conn: Conn, mallory: Conn) -> None:
    mvgraph.track(conn, ["t"], mode="wal")
    mvgraph.refresh(conn, "mv_t")
    conn.execute("ALTER PUBLICATION mvgraph_wal DROP TABLE t")
    mallory.execute("INSERT INTO t VALUES (6, 6)")
    with pytest.raises(TrackingError, match=re.escape(
            "table public.t is in wal mode but in no mvgraph publication; run `mvgraph track "
            "public.t --mode wal`")):
        mvgraph.plan(conn, "mv_t")
    mvgraph.track(conn, ["t"], mode="wal")  # the fix: t is published again, tracking restarts
    assert verdict(conn, "mv_t")[0] == "refresh"
