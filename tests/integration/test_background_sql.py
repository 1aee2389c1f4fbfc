"""Background SQL with real worker processes: any statement as a job (tag, notices, first
rows), background CREATE MATERIALIZED VIEW (DROP cancels it), the front-end's job statements,
and the submitter's rights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from mvgraph.db.scripts import run_script
from mvgraph.refresh.service import session
from tests.conftest import ROOT, cli
from tests.integration.test_jobs import Conn, job_status, wait_for, worker


def submit(conn: Conn, statement: str) -> int:
    row = conn.execute("SELECT mvgraph.submit(%s)", [statement]).fetchone()
    assert row is not None
    return int(str(row[0]))


def result(conn: Conn, job: int) -> dict[str, object]:
    row = conn.execute("SELECT mvgraph.job_result(%s)", [job]).fetchone()
    assert row is not None and isinstance(row[0], dict)
    return row[0]


def populated(conn: Conn, name: str) -> bool | None:
    row = conn.execute("SELECT relispopulated FROM pg_class WHERE relname = %s", [name]
                       ).fetchone()
    return None if row is None else bool(row[0])


def test_background_vacuum_and_its_result(capsys: pytest.CaptureFixture[str], conn: Conn,
                                          db_dsn: str) -> None:
    run_script(conn, "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 50);")
    code, out, err = cli(capsys, "--dsn", db_dsn, "sql", "--background", "VACUUM ANALYZE t")
    assert code == 0, err
    job = int(out.strip())
    assert job_status(conn, job) == "queued"
    assert conn.execute("SELECT kind, statement FROM mvgraph.job WHERE id = %s", [job]
                        ).fetchone() == ("sql", "VACUUM ANALYZE t")
    with worker(db_dsn):
        wait_for(lambda: job_status(conn, job) == "done")
    assert result(conn, job)["result"]["tag"] == "VACUUM"  # type: ignore[index]
    assert conn.execute("SELECT last_vacuum IS NOT NULL AND last_analyze IS NOT NULL "
                        "FROM pg_stat_user_tables WHERE relname = 't'").fetchone() == (True,)
    code, out, err = cli(capsys, "--dsn", db_dsn, "job", "result", str(job))
    assert code == 0 and f"job {job}: done (VACUUM)" in out, err
    code, out, _ = cli(capsys, "--dsn", db_dsn, "job", "result", str(job), "--json")
    assert code == 0 and json.loads(out)["result"]["tag"] == "VACUUM"
    code, _, err = cli(capsys, "--dsn", db_dsn, "job", "result", "999999")
    assert code == 4 and "no job 999999" in err


def test_a_select_keeps_its_first_rows_and_says_it_was_truncated(conn: Conn,
                                                                 db_dsn: str) -> None:
    small = submit(conn, "SELECT g AS n, 'x' || g AS label FROM generate_series(1, 3) g")
    big = submit(conn, "SELECT g FROM generate_series(1, 1000) g")
    wide = submit(conn, "SELECT repeat('w', 10000) FROM generate_series(1, 20)")
    with worker(db_dsn):
        wait_for(lambda: {job_status(conn, j) for j in (small, big, wide)} == {"done"})
    got = result(conn, small)["result"]
    assert got == {"tag": "SELECT 3", "columns": ["n", "label"], "row_count": 3,
                   "rows": [[1, "x1"], [2, "x2"], [3, "x3"]], "truncated": False,
                   "notices": []}
    got = result(conn, big)["result"]
    assert isinstance(got, dict)
    assert (got["tag"], got["row_count"], got["truncated"], len(got["rows"])) == \
        ("SELECT 1000", 1000, True, 100)
    assert got["rows"][:2] == [[1], [2]]
    got = result(conn, wide)["result"]
    assert isinstance(got, dict)
    assert got["truncated"] and len(json.dumps(got["rows"])) <= 64 * 1024


def test_notices_are_kept_and_a_failure_keeps_them_too(conn: Conn, db_dsn: str) -> None:
    ok = submit(conn, "DO $$ BEGIN RAISE NOTICE 'one'; RAISE WARNING 'two'; END $$")
    bad = submit(conn, "DO $$ BEGIN RAISE NOTICE 'before'; PERFORM 1 / 0; END $$")
    with worker(db_dsn):
        wait_for(lambda: job_status(conn, ok) == "done" and job_status(conn, bad) == "failed")
    assert result(conn, ok)["result"] == {"tag": "DO", "columns": [], "rows": [],
                                          "row_count": 0, "truncated": False,
                                          "notices": ["NOTICE: one", "WARNING: two"]}
    failed = result(conn, bad)
    assert "division by zero" in str(failed["error"])
    assert failed["result"]["notices"] == ["NOTICE: before"]  # type: ignore[index]
    assert failed["steps"] == {"failed": 1}


def test_a_statement_runs_in_the_submitters_search_path_and_rolls_back_when_cancelled(
        conn: Conn, db_dsn: str) -> None:
    run_script(conn, "CREATE SCHEMA app; CREATE TABLE app.t (id int);")
    conn.execute("SET search_path = app")
    job = submit(conn, "INSERT INTO t SELECT g FROM generate_series(1, 5) g, pg_sleep(30)")
    conn.execute("RESET search_path")
    with worker(db_dsn):
        wait_for(lambda: conn.execute("SELECT 1 FROM mvgraph.job_step WHERE job_id = %s AND "
                                      "status = 'running'", [job]).fetchone())
        conn.execute("SELECT mvgraph.cancel_job(%s)", [job])
        wait_for(lambda: job_status(conn, job) == "cancelled", timeout=10)
    assert conn.execute("SELECT count(*) FROM app.t").fetchone() == (0,)
    again = submit(conn, "INSERT INTO app.t VALUES (1), (2) RETURNING id")
    with worker(db_dsn):
        wait_for(lambda: job_status(conn, again) == "done")
    got = result(conn, again)["result"]
    assert isinstance(got, dict) and (got["tag"], got["rows"]) == ("INSERT 0 2", [[1], [2]])


def test_background_create_is_defined_at_once_and_populated_by_a_worker(
        capsys: pytest.CaptureFixture[str], conn: Conn, db_dsn: str) -> None:
    run_script(conn, "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2);")
    code, out, err = cli(capsys, "--dsn", db_dsn, "sql", "--background",
                         "CREATE MATERIALIZED VIEW m REFRESH CASCADE ALL START WITH (now()) "
                         "EVERY (interval '1 h') AS SELECT count(*) AS n FROM t")
    assert code == 0, err
    job = int(out.strip())
    assert populated(conn, "m") is False  # defined now, no data yet
    assert conn.execute("SELECT what, interval FROM scheduler.pg_task").fetchall() == [
        ("REFRESH MATERIALIZED VIEW public.m CASCADE ALL", "interval '1 h'")]  # its schedule too
    with worker(db_dsn):
        wait_for(lambda: job_status(conn, job) == "done")
    assert conn.execute("SELECT n FROM m").fetchone() == (2,)
    assert conn.execute("SELECT kind FROM mvgraph.job WHERE id = %s", [job]).fetchone() == \
        ("create",)
    code, _, err = cli(capsys, "--dsn", db_dsn, "sql", "--background",
                       "CREATE MATERIALIZED VIEW bad AS SELECT nope FROM t")
    assert code == 1 and "nope" in err and "<command line>:1" in err  # reported at once
    assert populated(conn, "bad") is None


def test_dropping_a_view_being_created_cancels_its_job(conn: Conn, db_dsn: str) -> None:
    run_script(conn, "CREATE TABLE t (id int); INSERT INTO t VALUES (1);")
    with session(db_dsn):  # installs the event triggers
        pass
    queued = submit(conn, "CREATE MATERIALIZED VIEW q AS SELECT id FROM t")
    conn.execute("DROP MATERIALIZED VIEW q")  # the event trigger closes it at once
    assert job_status(conn, queued) == "cancelled"
    assert "materialized view public.q was dropped" in str(result(conn, queued)["error"])
    slow = submit(conn, "CREATE MATERIALIZED VIEW s AS SELECT id, pg_sleep(30)::text AS nap FROM t")
    with worker(db_dsn):
        wait_for(lambda: conn.execute("SELECT 1 FROM mvgraph.job_step WHERE job_id = %s AND "
                                      "status = 'running'", [slow]).fetchone())
        conn.execute("DROP MATERIALIZED VIEW s")  # waits for the REFRESH, which is cancelled
        wait_for(lambda: job_status(conn, slow) == "cancelled", timeout=10)
    assert populated(conn, "s") is None
    assert "materialized view public.s was dropped" in str(result(conn, slow)["error"])


def test_a_foreground_create_that_fails_leaves_nothing(
        capsys: pytest.CaptureFixture[str], conn: Conn, db_dsn: str) -> None:
    run_script(conn, "CREATE TABLE t (id int); INSERT INTO t VALUES (0);")
    jobs_before = conn.execute("SELECT count(*) FROM mvgraph.job").fetchone()
    code, _, err = cli(capsys, "--dsn", db_dsn, "sql",
                       "CREATE MATERIALIZED VIEW f REFRESH RESTRICT AS SELECT 1 / id AS x FROM t")
    assert code == 1 and "division by zero" in err
    assert populated(conn, "f") is None
    assert conn.execute("SELECT count(*) FROM mvgraph.job").fetchone() == jobs_before
    assert conn.execute("SELECT count(*) FROM mvgraph.mv_state").fetchone() == (0,)
    code, _, err = cli(capsys, "--dsn", db_dsn, "sql",  # GaussDB clauses are accepted
                       "CREATE MATERIALIZED VIEW g BUILD IMMEDIATE REFRESH DEFAULT "
                       "AS SELECT id FROM t")
    assert code == 0, err
    assert populated(conn, "g") is True


def test_set_background_ddl_and_the_job_statements_in_a_script(
        capsys: pytest.CaptureFixture[str], conn: Conn, db_dsn: str, tmp_path: Path) -> None:
    run_script(conn, "CREATE TABLE t (id int); INSERT INTO t VALUES (1);"
                     "CREATE MATERIALIZED VIEW a AS SELECT id FROM t WITH NO DATA;")
    script = """
        SET BACKGROUND_DDL = true;
        CREATE MATERIALIZED VIEW b AS SELECT id FROM t;
        REFRESH MATERIALIZED VIEW a RESTRICT;
        SELECT 41 + 1 AS answer;
        SET BACKGROUND_DDL = false;
        CREATE MATERIALIZED VIEW c AS SELECT id FROM t;
        SHOW JOBS;
    """
    (tmp_path / "script.sql").write_text(script)
    code, out, err = cli(capsys, "--dsn", db_dsn, "sql", "-f", str(tmp_path / "script.sql"),
                         "--json")
    assert code == 0, err
    done = json.loads(out)
    assert [d["status"] for d in done][:4] == ["SET", done[1]["status"], done[2]["status"],
                                               "SELECT 1"]
    b_job, a_job = done[1]["job"], done[2]["job"]
    assert isinstance(b_job, int) and isinstance(a_job, int)
    assert done[3]["rows"] == [[42]] and done[5]["status"] == "SELECT 1"
    assert populated(conn, "b") is False and populated(conn, "a") is False
    assert populated(conn, "c") is True  # foreground again
    shown = done[6]
    assert {r[shown["columns"].index("id")] for r in shown["rows"]} >= {a_job, b_job}
    code, out, err = cli(capsys, "--dsn", db_dsn, "sql", f"SUSPEND JOB {a_job}")
    assert code == 0 and "suspended" in out, err
    code, out, err = cli(capsys, "--dsn", db_dsn, "sql", f"RESUME JOB {a_job}")
    assert code == 0 and "queued" in out, err
    with worker(db_dsn):
        wait_for(lambda: {job_status(conn, j) for j in (a_job, b_job)} == {"done"})
    assert populated(conn, "a") is True and populated(conn, "b") is True
    code, out, _ = cli(capsys, "--dsn", db_dsn, "sql", f"CANCEL JOBS {a_job}, {b_job}")
    assert code == 0 and out.count("done") == 2
    code, _, err = cli(capsys, "--dsn", db_dsn, "sql", "CANCEL JOBS x")
    assert code == 1 and "job ids" in err
    code, _, err = cli(capsys, "--dsn", db_dsn, "sql", "SET BACKGROUND_DDL = maybe")
    assert code == 1 and "true or false" in err


def test_a_role_without_rights_submits_from_sql_and_the_cli_and_nothing_changes(
        capsys: pytest.CaptureFixture[str], conn: Conn, db_dsn: str) -> None:
    role = f"weak_{conn.info.dbname}"
    run_script(conn, f"""
        CREATE TABLE precious (id int); INSERT INTO precious VALUES (1);
        CREATE MATERIALIZED VIEW mv AS SELECT id FROM precious WITH NO DATA;
        CREATE ROLE {role} LOGIN;
        SELECT mvgraph.grant_privileges('{role}', 'operator');
    """)
    weak_dsn = psycopg.conninfo.make_conninfo(db_dsn, user=role)
    try:
        with psycopg.connect(weak_dsn, autocommit=True) as weak:
            jobs = [submit(weak, "DROP TABLE precious"),
                    submit(weak, "REFRESH MATERIALIZED VIEW mv RESTRICT")]
        env = {**os.environ, "MVGRAPH_DSN": weak_dsn}
        proc = subprocess.run([sys.executable, "-m", "mvgraph", "sql", "--background",
                               "DROP TABLE precious; REFRESH MATERIALIZED VIEW mv RESTRICT"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        jobs += [int(line) for line in proc.stdout.split()]
        assert len(jobs) == 4
        with worker(db_dsn):
            wait_for(lambda: {job_status(conn, j) for j in jobs} == {"failed"})
        for job in jobs:
            error = str(result(conn, job)["error"])
            assert any(m in error for m in ("must be owner of table precious",
                                            "permission denied for materialized view mv",
                                            "must be owner of materialized view mv",
                                            "may not refresh public.mv")), error
        assert conn.execute("SELECT count(*) FROM precious").fetchone() == (1,)
        assert populated(conn, "mv") is False
        run_script(conn, f"SELECT mvgraph.grant_privileges('{role}', 'viewer')")
        proc = subprocess.run([sys.executable, "-m", "mvgraph", "sql", "--background",
                               "VACUUM precious"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 1 and f"mvgraph grant {role} --operator" in proc.stderr \
            and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    finally:
        run_script(conn, f"DELETE FROM mvgraph.job; DROP OWNED BY {role}; DROP ROLE {role};")
