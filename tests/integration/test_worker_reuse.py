"""A worker keeps its catalog graph, its job connections and its slot between jobs: DDL still
reaches the next job's plan, and a finished job's slot takes the next queued job at once."""

from __future__ import annotations

import psycopg

from mvgraph.catalog import catalog_fingerprint
from mvgraph.db.scripts import run_script
from tests.integration.test_jobs import job_status, wait_for, worker

Conn = psycopg.Connection[tuple[object, ...]]


def submit(conn: Conn, statement: str) -> int:
    row = conn.execute("SELECT mvgraph.submit(%s)", [statement]).fetchone()
    assert row is not None
    return int(str(row[0]))


def test_the_fingerprint_changes_with_ddl_and_not_with_refresh(conn: Conn) -> None:
    run_script(conn, "CREATE TABLE t (i int); CREATE VIEW pv AS SELECT i FROM t;"
                     "CREATE MATERIALIZED VIEW m AS SELECT i FROM pv;")
    seen = [catalog_fingerprint(conn)]
    conn.execute("REFRESH MATERIALIZED VIEW m")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.execute("ANALYZE t")
    assert catalog_fingerprint(conn) == seen[-1]
    for ddl in ("CREATE OR REPLACE VIEW pv AS SELECT i + 1 AS i FROM t",
                "ALTER MATERIALIZED VIEW m RENAME TO m2", "CREATE SCHEMA s",
                "ALTER MATERIALIZED VIEW m2 SET SCHEMA s", "ALTER SCHEMA s RENAME TO s2",
                "CREATE TABLE u (i int)", "DROP TABLE u",
                "CREATE FUNCTION f() RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT 1'",
                "ALTER FUNCTION f() VOLATILE"):
        conn.execute(ddl)
        assert catalog_fingerprint(conn) != seen[-1], ddl  # (DROP TABLE u: back to before)
        seen.append(catalog_fingerprint(conn))


def test_the_fingerprint_ignores_other_sessions_temporary_objects(conn: Conn,
                                                                   db_dsn: str) -> None:
    """A backend's first temporary table creates its pg_temp_N and pg_toast_temp_N namespaces
    (kept after it ends); neither they nor temporary relations and views are in the graph, so
    they leave the fingerprint alone (they made every worker reload its graph). Inheritance
    is DDL the fingerprint sees."""
    run_script(conn, "CREATE TABLE t (i int); CREATE MATERIALIZED VIEW m AS SELECT i FROM t;")
    before = catalog_fingerprint(conn)
    with psycopg.connect(db_dsn, autocommit=True) as other:
        other.execute("CREATE TEMP TABLE scratch (i int, note text)")
        other.execute("CREATE TEMP VIEW scratch_v AS SELECT i FROM scratch")
        assert other.execute("SELECT count(*) FROM pg_namespace WHERE nspname ~ "
                             "'^pg_(toast_)?temp_'").fetchone() == (2,)
        assert catalog_fingerprint(conn) == before
    assert catalog_fingerprint(conn) == before
    conn.execute("CREATE TABLE child () INHERITS (t)")
    with_child = catalog_fingerprint(conn)
    assert with_child != before
    conn.execute("ALTER TABLE child NO INHERIT t")
    alone = catalog_fingerprint(conn)
    conn.execute("ALTER TABLE child INHERIT t")
    assert catalog_fingerprint(conn) != alone


def test_a_worker_plans_with_the_catalog_after_ddl(conn: Conn, db_dsn: str) -> None:
    run_script(conn, "CREATE TABLE t AS SELECT 1 AS i; CREATE MATERIALIZED VIEW a AS "
                     "SELECT i FROM t;")
    with worker(db_dsn):
        first = submit(conn, "REFRESH MATERIALIZED VIEW a")
        wait_for(lambda: job_status(conn, first) == "done")
        # a view created, one renamed: the next jobs see both
        run_script(conn, "CREATE MATERIALIZED VIEW b AS SELECT i FROM a; "
                         "ALTER MATERIALIZED VIEW a RENAME TO a2;")
        jobs = [submit(conn, "REFRESH MATERIALIZED VIEW b"),
                submit(conn, "REFRESH MATERIALIZED VIEW a2 CASCADE FORWARD")]
        wait_for(lambda: all(job_status(conn, j) in ("done", "failed") for j in jobs))
        errors = conn.execute("SELECT status, error FROM mvgraph.job WHERE id = ANY(%s) "
                              "ORDER BY id", [jobs]).fetchall()
        assert errors == [("done", None), ("done", None)]
        steps = conn.execute("SELECT name FROM mvgraph.job_step WHERE job_id = %s ORDER BY seq",
                             [jobs[1]]).fetchall()
        assert [r[0] for r in steps] == ["public.a2", "public.b"]


def test_a_busy_worker_takes_the_next_job_without_a_notification(conn: Conn,
                                                                 db_dsn: str) -> None:
    """Jobs queued while the only worker is busy start when its job ends, not at its poll."""
    run_script(conn, "CREATE TABLE t AS SELECT 1 AS i; CREATE MATERIALIZED VIEW slow AS "
                     "SELECT i, pg_sleep(1)::text AS nap FROM t; "
                     "CREATE MATERIALIZED VIEW quick AS SELECT i FROM t;")
    with worker(db_dsn, "--poll", "30"):
        busy = submit(conn, "REFRESH MATERIALIZED VIEW slow")
        wait_for(lambda: job_status(conn, busy) == "running")
        queued = [submit(conn, "REFRESH MATERIALIZED VIEW quick") for _ in range(3)]
        wait_for(lambda: all(job_status(conn, j) == "done" for j in queued), timeout=15)
    row = conn.execute("SELECT max(j.started_at) - (SELECT finished_at FROM mvgraph.job "
                       "WHERE id = %s) FROM mvgraph.job j WHERE j.id = ANY(%s)",
                       [busy, queued]).fetchone()
    assert row is not None and row[0].total_seconds() < 5, row
