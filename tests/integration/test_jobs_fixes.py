"""Issue 18's job fixes with real workers: cancelling a background creation drops its view with
the submitter's rights (item 6), a background REFRESH of nothing is refused at submit (7),
SHOW JOBS lists work in progress and a job of several statements keeps each tag (10), the
timeout settings apply to sql jobs (11), a cancelled job shows the steps it did and how long
its interrupted step ran (16)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

import mvgraph
from mvgraph.db.scripts import run_script
from mvgraph.errors import UnknownRelation
from tests.conftest import cli
from tests.integration.test_background_sql import populated, result, submit
from tests.integration.test_jobs import (
    Conn,
    counted_chain,
    job_status,
    running_step,
    wait_for,
    worker,
)


@contextmanager
def operator_role(conn: Conn, db_dsn: str, name: str = "op", level: str = "operator"
                  ) -> Iterator[str]:
    """A login without superuser rights at an mvgraph level, which may create in public and
    read ``t``; yields its DSN."""
    role = f"{name}_{conn.info.dbname}"
    run_script(conn, f"""
        CREATE ROLE {role} LOGIN;
        SELECT mvgraph.grant_privileges('{role}', '{level}');
        GRANT CREATE ON SCHEMA public TO {role};
        GRANT SELECT ON t TO {role};
    """)
    try:
        yield psycopg.conninfo.make_conninfo(db_dsn, user=role)
    finally:
        run_script(conn, f"DELETE FROM mvgraph.job; DROP OWNED BY {role}; DROP ROLE {role};")


def step(conn: Conn, job: int) -> tuple[object, ...]:
    row = conn.execute("SELECT status, duration_s FROM mvgraph.job_step WHERE job_id = %s "
                       "ORDER BY seq LIMIT 1", [job]).fetchone()
    assert row is not None
    return tuple(row)


def progress(conn: Conn, job: int) -> tuple[object, ...]:
    row = conn.execute("SELECT status, done_steps, total_steps FROM mvgraph.jobs WHERE id = %s",
                       [job]).fetchone()
    assert row is not None
    return tuple(row)


# ---- item 6: a cancelled background creation leaves nothing ---------------------------------

def test_cancelling_a_queued_creation_drops_its_view_so_the_script_runs_again(
        capsys: pytest.CaptureFixture[str], conn: Conn, db_dsn: str) -> None:
    run_script(conn, "CREATE TABLE t (id int); INSERT INTO t VALUES (1);")
    script = "SET BACKGROUND_DDL = true; CREATE MATERIALIZED VIEW m AS SELECT id FROM t;"
    with operator_role(conn, db_dsn) as op_dsn:
        code, out, err = cli(capsys, "--dsn", op_dsn, "sql", script, "--json")
        assert code == 0, err
        job = json.loads(out)[1]["job"]
        assert populated(conn, "m") is False  # defined at submit
        code, out, err = cli(capsys, "--dsn", op_dsn, "sql", f"CANCEL JOBS {job}")
        assert code == 0 and "cancelled" in out, err
        assert job_status(conn, job) == "cancelled"
        assert populated(conn, "m") is None  # dropped, as the submitter
        code, out, err = cli(capsys, "--dsn", op_dsn, "sql", script, "--json")
        assert code == 0, err  # no "already exists"
        again = json.loads(out)[1]["job"]
        with psycopg.connect(op_dsn, autocommit=True) as op:  # the SQL API does the same
            assert op.execute("SELECT mvgraph.cancel_job(%s)", [again]).fetchone() == \
                ("cancelled",)
        assert populated(conn, "m") is None
        code, out, err = cli(capsys, "--dsn", op_dsn, "sql", script, "--json")
        assert code == 0, err
        last = json.loads(out)[1]["job"]
        code, out, err = cli(capsys, "--dsn", op_dsn, "cancel", str(last))  # and the CLI
        assert code == 0 and "cancelled" in out, err
        assert populated(conn, "m") is None


def test_cancelling_a_running_creation_drops_its_view_on_the_submitters_connection(
        conn: Conn, db_dsn: str) -> None:
    run_script(conn, "CREATE TABLE t (id int); INSERT INTO t VALUES (1);")
    with operator_role(conn, db_dsn) as op_dsn, \
            psycopg.connect(op_dsn, autocommit=True) as op:
        job = submit(op, "CREATE MATERIALIZED VIEW slow AS "
                         "SELECT id, pg_sleep(30)::text AS nap FROM t")
        with worker(db_dsn):
            wait_for(lambda: running_step(conn, job, "public.slow"))
            time.sleep(0.5)
            assert op.execute("SELECT mvgraph.cancel_job(%s)", [job]).fetchone() == \
                ("cancelling",)
            wait_for(lambda: job_status(conn, job) == "cancelled", timeout=15)
            wait_for(lambda: populated(conn, "slow") is None, timeout=10)
        owner = conn.execute("SELECT owner FROM mvgraph.job WHERE id = %s", [job]).fetchone()
        assert owner is not None and str(owner[0]).startswith("op_")
        status, took = step(conn, job)  # item 16: how long the interrupted step ran
        assert status == "cancelled" and isinstance(took, float) and took >= 0.4, took
        assert progress(conn, job) == ("cancelled", 0, 1)
        again = submit(op, "CREATE MATERIALIZED VIEW slow AS SELECT id FROM t")
        assert populated(conn, "slow") is False and job_status(conn, again) == "queued"


def test_a_creation_cancelled_by_someone_who_may_not_drop_it_is_dropped_by_a_worker(
        conn: Conn, db_dsn: str) -> None:
    run_script(conn, "CREATE TABLE t (id int); INSERT INTO t VALUES (1);")
    with operator_role(conn, db_dsn) as op_dsn, \
            operator_role(conn, db_dsn, "adm", "admin") as admin_dsn:
        with psycopg.connect(op_dsn, autocommit=True) as op:
            job = submit(op, "CREATE MATERIALIZED VIEW m AS SELECT id FROM t")
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            assert admin.execute("SELECT mvgraph.cancel_job(%s)", [job]).fetchone() == \
                ("cancelling",)  # not the view's owner: it may not drop it
        assert populated(conn, "m") is False and job_status(conn, job) == "queued"
        with worker(db_dsn):
            wait_for(lambda: job_status(conn, job) == "cancelled")
            wait_for(lambda: populated(conn, "m") is None)
        assert progress(conn, job) == ("cancelled", 0, 0)


def test_a_view_something_depends_on_stays_and_the_cancel_still_happens(
        conn: Conn, db_dsn: str) -> None:
    run_script(conn, "CREATE TABLE t (id int); INSERT INTO t VALUES (1);")
    job = submit(conn, "CREATE MATERIALIZED VIEW m AS SELECT id FROM t")
    run_script(conn, "CREATE VIEW on_m AS SELECT id FROM m;")
    assert conn.execute("SELECT mvgraph.cancel_job(%s)", [job]).fetchone() == ("cancelled",)
    assert populated(conn, "m") is False  # RESTRICT: another object's view is never dropped


# ---- item 7: a background REFRESH is validated at submit ------------------------------------

def test_a_background_refresh_of_nothing_is_refused_at_once(
        capsys: pytest.CaptureFixture[str], conn: Conn, db_dsn: str) -> None:
    run_script(conn, "CREATE TABLE t (id int); CREATE MATERIALIZED VIEW mv AS SELECT id FROM t;")
    before = conn.execute("SELECT count(*) FROM mvgraph.job").fetchone()
    code, out, err = cli(capsys, "--dsn", db_dsn, "sql", "--background",
                         "REFRESH MATERIALIZED VIEW nosuch CASCADE ALL")
    assert code == 4 and out == "", (out, err)
    assert "<command line>:1" in err and "nosuch does not exist" in err
    assert len(err.strip().splitlines()) == 1, err
    code, _, err = cli(capsys, "--dsn", db_dsn, "sql", "--background",
                       "REFRESH MATERIALIZED VIEW t RESTRICT")
    assert code == 4 and "t is not a materialized view" in err, err
    with pytest.raises(UnknownRelation, match="nosuch does not exist"):
        mvgraph.submit("REFRESH MATERIALIZED VIEW public.nosuch", dsn=db_dsn)
    with pytest.raises(psycopg.errors.UndefinedTable):
        submit(conn, 'REFRESH MATERIALIZED VIEW "MV" RESTRICT')
    assert conn.execute("SELECT count(*) FROM mvgraph.job").fetchone() == before
    code, out, err = cli(capsys, "--dsn", db_dsn, "sql", "--background",
                         "REFRESH MATERIALIZED VIEW MV CASCADE ALL")
    assert code == 0 and out.strip().isdigit(), err  # an existing view is queued as before
    assert isinstance(mvgraph.submit('REFRESH MATERIALIZED VIEW "public".mv', dsn=db_dsn), int)


# ---- item 10: SHOW JOBS is work in progress; several statements, several tags ----------------

def test_show_jobs_lists_work_in_progress_and_jobs_all_the_history(
        capsys: pytest.CaptureFixture[str], conn: Conn, db_dsn: str) -> None:
    finished = submit(conn, "SELECT 1")
    conn.execute("SELECT mvgraph.cancel_job(%s)", [finished])
    waiting = submit(conn, "SELECT 2")
    code, out, err = cli(capsys, "--dsn", db_dsn, "sql", "SHOW JOBS", "--json")
    assert code == 0, err
    shown = json.loads(out)[0]
    ids = [r[shown["columns"].index("id")] for r in shown["rows"]]
    assert ids == [waiting]
    code, out, err = cli(capsys, "--dsn", db_dsn, "jobs", "--all", "--json")
    assert code == 0 and {j["id"] for j in json.loads(out)} == {finished, waiting}, err


def test_a_job_of_several_statements_reports_each_tag(
        capsys: pytest.CaptureFixture[str], conn: Conn, db_dsn: str) -> None:
    many = submit(conn, "CREATE TABLE x (a int); INSERT INTO x VALUES (1), (2);\n"
                        "SELECT count(*) AS n FROM x;")
    bad = submit(conn, "INSERT INTO x VALUES (3); VACUUM x")
    with worker(db_dsn):
        wait_for(lambda: job_status(conn, many) == "done")
        wait_for(lambda: job_status(conn, bad) == "failed")
    got = result(conn, many)["result"]
    assert isinstance(got, dict)
    assert got["tags"] == ["CREATE TABLE", "INSERT 0 2", "SELECT 1"]
    assert (got["tag"], got["columns"], got["rows"]) == ("SELECT 1", ["n"], [[2]])
    code, out, err = cli(capsys, "--dsn", db_dsn, "job", "result", str(many))
    assert code == 0 and "(CREATE TABLE; INSERT 0 2; SELECT 1)" in out, err
    error = str(result(conn, bad)["error"])
    assert error.startswith("statement 2 of 2: ") and "job of its own" in error, error
    assert conn.execute("SELECT count(*) FROM x").fetchone() == (2,)  # one transaction


# ---- item 11: the timeout settings apply to sql jobs -----------------------------------------

def test_statement_and_lock_timeouts_apply_to_sql_jobs(
        capsys: pytest.CaptureFixture[str], conn: Conn, db_dsn: str) -> None:
    run_script(conn, "CREATE TABLE t (id int);")
    for key, value in (("statement_timeout", "2s"), ("lock_timeout", "1s")):
        code, _, err = cli(capsys, "--dsn", db_dsn, "settings", key, value)
        assert code == 0, err
    sleepy = submit(conn, "SELECT pg_sleep(5)")
    with psycopg.connect(db_dsn) as holder:
        holder.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")
        locked = submit(conn, "INSERT INTO t VALUES (1)")
        with worker(db_dsn, "--concurrency", "2"):  # without the settings both would succeed
            wait_for(lambda: job_status(conn, sleepy) == "failed", timeout=30)
            wait_for(lambda: job_status(conn, locked) == "failed", timeout=30)
        holder.rollback()
    assert "statement timeout" in str(result(conn, sleepy)["error"])
    assert "lock timeout" in str(result(conn, locked)["error"])


# ---- item 16: a cancelled job shows the steps it did -----------------------------------------

def test_a_cancelled_job_shows_the_steps_it_did(
        capsys: pytest.CaptureFixture[str], conn: Conn, db_dsn: str) -> None:
    counted_chain(conn, 3, 1.5)
    job = mvgraph.submit_refresh(db_dsn, "c3", "cascade backward")
    sleeper = submit(conn, "SELECT pg_sleep(30)")
    with worker(db_dsn, "--concurrency", "2"):
        wait_for(lambda: running_step(conn, job, "public.c2"))
        wait_for(lambda: conn.execute("SELECT 1 FROM mvgraph.job_step WHERE job_id = %s AND "
                                      "status = 'running'", [sleeper]).fetchone())
        time.sleep(0.5)
        conn.execute("SELECT mvgraph.cancel_job(%s)", [job])
        conn.execute("SELECT mvgraph.cancel_job(%s)", [sleeper])
        wait_for(lambda: {job_status(conn, j) for j in (job, sleeper)} == {"cancelled"})
    assert progress(conn, job) == ("cancelled", 1, 3)
    assert progress(conn, sleeper) == ("cancelled", 0, 1)
    code, out, err = cli(capsys, "--dsn", db_dsn, "jobs", "--json")
    assert code == 0, err
    shown = {j["id"]: j for j in json.loads(out)}
    assert (shown[sleeper]["status"], shown[sleeper]["percent"]) == ("cancelled", 0.0)
    assert shown[job]["percent"] == pytest.approx(33.3)
    code, out, err = cli(capsys, "--dsn", db_dsn, "job", str(job), "--json")
    assert code == 0, err
    steps = {s["step"]: s for s in json.loads(out)["steps"]}
    assert steps["public.c2"]["status"] == "cancelled"
    assert (steps["public.c2"]["duration_s"] or 0) >= 0.4, steps["public.c2"]
    status, took = step(conn, sleeper)
    assert status == "cancelled" and isinstance(took, float) and took >= 0.4, took
