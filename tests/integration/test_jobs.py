"""Jobs with real worker processes: queue, leases, cap, cancel / suspend / resume, rights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
import pytest

import mvgraph
from mvgraph.db.connect import connect
from mvgraph.db.install import init
from mvgraph.db.scripts import run_script
from tests.conftest import ROOT, cli
from tests.pgserver import bindir, cluster
from tests.processes import DrainedProcess

Conn = psycopg.Connection[tuple[object, ...]]
FAST = ["--lease", "2", "--heartbeat", "0.4", "--poll", "0.5"]


def wait_for(what: Callable[[], object], timeout: float = 20.0, every: float = 0.05) -> object:
    """Poll until ``what()`` is truthy (bounded); returns its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what.__doc__ or what}")


def start_worker(dsn: str, *args: str) -> subprocess.Popen[str]:
    """A worker process whose output is read while it runs."""
    env = {**os.environ, "MVGRAPH_DSN": dsn}
    return DrainedProcess([sys.executable, "-m", "mvgraph", "worker", *FAST, *args], env,
                          cwd=ROOT)


def worker_connected(dsn: str, pid: int) -> bool:
    """Whether the worker process ``pid`` holds its claim session (what ``wait`` looks for)."""
    with connect(dsn) as c:
        row = c.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                        "current_database() AND application_name LIKE %s",
                        [f"mvgraph worker %:{pid}"]).fetchone()
    return bool(row and int(str(row[0])))


@contextmanager
def worker(dsn: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    proc = start_worker(dsn, *args)
    try:
        wait_for(lambda: proc.poll() is not None or worker_connected(dsn, proc.pid), every=0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def job_status(conn: Conn, job: int) -> str:
    row = conn.execute("SELECT status FROM mvgraph.job WHERE id = %s", [job]).fetchone()
    return str(row[0]) if row else ""


def step_statuses(conn: Conn, job: int) -> dict[str, str]:
    return {str(r[0]): str(r[1]) for r in conn.execute(
        "SELECT name, status FROM mvgraph.job_step WHERE job_id = %s ORDER BY seq", [job])}


def counted_chain(conn: Conn, n: int, nap: float) -> None:
    """Views c1 -> c2 -> ... each taking ``nap`` seconds; each view's ``hits`` is the number of
    times it was refreshed (a sequence its query advances)."""
    sql = ["CREATE TABLE base (id int PRIMARY KEY); INSERT INTO base VALUES (1);"]
    for i in range(1, n + 1):
        src = "base" if i == 1 else f"c{i - 1}"
        sql.append(f"CREATE SEQUENCE hits{i}; CREATE MATERIALIZED VIEW c{i} AS "
                   f"SELECT nextval('hits{i}') AS hits, pg_sleep({nap})::text AS nap, "
                   f"count(*) AS n FROM {src} WITH NO DATA;")
    run_script(conn, "".join(sql))


def hits(conn: Conn, n: int) -> list[int]:
    return [int(str(conn.execute(f"SELECT last_value FROM hits{i} WHERE is_called UNION ALL "
                                 "SELECT 0 LIMIT 1").fetchone()[0]))  # type: ignore[index]
            for i in range(1, n + 1)]


def running_step(conn: Conn, job: int, name: str) -> bool:
    """The step is running on a live backend."""
    row = conn.execute("SELECT status FROM mvgraph.job_step WHERE job_id = %s AND name = %s",
                       [job, name]).fetchone()
    return row is not None and row[0] == "running"


def test_background_refresh_is_queued_with_its_steps_then_run_by_a_worker(
        capsys: pytest.CaptureFixture[str], conn: Conn, db_dsn: str) -> None:
    counted_chain(conn, 2, 0)
    code, out, _ = cli(capsys, "--dsn", db_dsn, "refresh", "c2", "--cascade", "backward",
                       "--background")
    assert code == 0
    job = int(out.strip())
    assert job_status(conn, job) == "queued"
    assert step_statuses(conn, job) == {"public.c1": "pending", "public.c2": "pending"}
    with worker(db_dsn):
        wait_for(lambda: job_status(conn, job) == "done")
    assert step_statuses(conn, job) == {"public.c1": "done", "public.c2": "done"}
    assert hits(conn, 2) == [1, 1]
    code, out, err = cli(capsys, "--dsn", db_dsn, "jobs", "--json")
    assert code == 0, err
    listed = {j["id"]: j for j in json.loads(out)}
    assert listed[job]["status"] == "done"
    assert (listed[job]["done_steps"], listed[job]["total_steps"]) == (2, 2)


def test_sql_submit_starts_when_a_worker_appears(conn: Conn, db_dsn: str) -> None:
    counted_chain(conn, 2, 0)
    row = conn.execute("SELECT mvgraph.submit('REFRESH MATERIALIZED VIEW c2 CASCADE BACKWARD')"
                       ).fetchone()
    assert row is not None
    job = int(str(row[0]))
    assert job_status(conn, job) == "queued" and step_statuses(conn, job) == {}
    with worker(db_dsn):
        wait_for(lambda: job_status(conn, job) == "done")
    result = conn.execute("SELECT mvgraph.job_result(%s)", [job]).fetchone()
    assert result is not None and isinstance(result[0], dict)
    assert (result[0]["status"], result[0]["steps"]) == ("done", {"done": 2})
    assert conn.execute("SELECT id, status, done_steps, total_steps FROM mvgraph.jobs "
                        "WHERE id = %s", [job]).fetchone() == (job, "done", 2, 2)
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        conn.execute("SELECT mvgraph.submit('  ')")


def test_kill_9_of_a_foreground_refresh_is_marked_failed_by_the_next_process(
        conn: Conn, db_dsn: str) -> None:
    counted_chain(conn, 2, 1.5)
    proc = subprocess.Popen([sys.executable, "-m", "mvgraph", "refresh", "c2", "--cascade",
                             "backward", "--dsn", db_dsn], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        job = int(str(wait_for(lambda: (conn.execute(
            "SELECT job_id FROM mvgraph.job_step WHERE name = 'public.c1' AND "
            "status = 'running'").fetchone() or [0])[0])))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert job_status(conn, job) == "running"
    wait_for(lambda: {j.id: j for j in mvgraph.list_jobs(db_dsn)}[job].status == "failed")
    error = conn.execute("SELECT error FROM mvgraph.job WHERE id = %s", [job]).fetchone()
    assert error is not None and "process lost" in str(error[0])
    steps = step_statuses(conn, job)
    assert steps["public.c2"] == "cancelled"  # never started
    assert steps["public.c1"] in ("done", "cancelled")  # refreshed whole, or untouched
    assert hits(conn, 2)[1] == 0


def test_a_killed_worker_loses_its_job_for_a_lease_and_no_step_runs_twice(
        conn: Conn, db_dsn: str) -> None:
    counted_chain(conn, 3, 0.7)
    job = mvgraph.submit_refresh(db_dsn, "c3", "cascade backward")
    first = start_worker(db_dsn)
    try:
        # killed while c2's REFRESH runs on the server: its transaction (sent whole, COMMIT
        # included) commits there without the client, and that finished step is not redone.
        # (Killed before the COMMIT reached the server, the step would roll back and rightly
        # run again; the counter below, a sequence, would then count the lost attempt too.)
        wait_for(lambda: running_step(conn, job, "public.c2") and conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND "
            "wait_event = 'PgSleep' AND query LIKE '%%mvgraph.refresh_step(%%'"
        ).fetchone() == (1,))
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=10)
    with worker(db_dsn):
        wait_for(lambda: job_status(conn, job) == "done")
    assert set(step_statuses(conn, job).values()) == {"done"}
    assert hits(conn, 3) == [1, 1, 1]  # each view refreshed exactly once
    attempts = conn.execute("SELECT attempt FROM mvgraph.job WHERE id = %s", [job]).fetchone()
    assert attempts == (2,)


def test_the_cap_holds_across_workers(conn: Conn, db_dsn: str) -> None:
    run_script(conn, "CREATE TABLE t (id int);" + "".join(
        f"CREATE MATERIALIZED VIEW v{i} AS SELECT pg_sleep(0.3)::text AS nap WITH NO DATA;"
        for i in range(10)))
    conn.execute("UPDATE mvgraph.setting SET value = '2' WHERE key = 'max_concurrent_jobs'")
    most = 0
    with worker(db_dsn, "-c", "2"), worker(db_dsn, "-c", "2"), worker(db_dsn, "-c", "2"):
        # submitted once the three workers listen (submitted before, the first worker to start
        # could run all ten before the others are up and the loop below looks)
        jobs = [mvgraph.submit(f"REFRESH MATERIALIZED VIEW v{i} RESTRICT", dsn=db_dsn)
                for i in range(10)]
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            row = conn.execute("SELECT count(*) FILTER (WHERE status = 'running'), "
                               "count(*) FILTER (WHERE status = 'done') FROM mvgraph.job "
                               "WHERE id = ANY(%s)", [jobs]).fetchone()
            assert row is not None
            most = max(most, int(str(row[0])))
            if row[1] == 10:
                break
            time.sleep(0.02)
    assert most == 2  # reached, never passed
    assert {job_status(conn, j) for j in jobs} == {"done"}


def test_cancel_from_another_process_stops_the_running_statement(
        capsys: pytest.CaptureFixture[str], conn: Conn, db_dsn: str) -> None:
    """Cancel from another process during a 20 s refresh: the command returns at once and the
    running statement is interrupted (the job is cancelled long before the step could end).
    How fast, in seconds, is a timing goal for a benchmark, not for a test on a shared
    machine."""
    counted_chain(conn, 2, 20)
    job = mvgraph.submit_refresh(db_dsn, "c2", "cascade backward")
    with worker(db_dsn):
        wait_for(lambda: running_step(conn, job, "public.c1"))
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "mvgraph", "cancel", str(job)], cwd=ROOT,
                              env={**os.environ, "MVGRAPH_DSN": db_dsn}, capture_output=True,
                              text=True, timeout=30)
        returned = time.monotonic() - started
        assert proc.returncode == 0 and proc.stdout == f"job {job}: cancelling\n", proc.stderr
        wait_for(lambda: job_status(conn, job) == "cancelled", timeout=10, every=0.01)
        cancelled = time.monotonic() - started
        assert returned < 10 and cancelled < 10, (returned, cancelled)
    assert step_statuses(conn, job) == {"public.c1": "cancelled", "public.c2": "cancelled"}
    assert conn.execute("SELECT count(*) FROM pg_class WHERE relname IN ('c1', 'c2') "
                        "AND relispopulated").fetchone() == (0,)
    code, _, err = cli(capsys, "--dsn", db_dsn, "cancel", "999999")
    assert code == 4 and "no job 999999" in err


def test_suspend_then_resume_continues_from_the_next_step(
        capsys: pytest.CaptureFixture[str], conn: Conn, db_dsn: str) -> None:
    counted_chain(conn, 3, 0.6)
    job = mvgraph.submit_refresh(db_dsn, "c3", "cascade backward")
    with worker(db_dsn):
        wait_for(lambda: running_step(conn, job, "public.c1"))
        code, out, _ = cli(capsys, "--dsn", db_dsn, "suspend", str(job))
        assert code == 0 and "suspending" in out
        wait_for(lambda: job_status(conn, job) == "suspended")
        assert step_statuses(conn, job) == {"public.c1": "done", "public.c2": "pending",
                                            "public.c3": "pending"}
        code, out, _ = cli(capsys, "--dsn", db_dsn, "resume", str(job))
        assert code == 0 and "queued" in out
        wait_for(lambda: job_status(conn, job) == "done")
    assert hits(conn, 3) == [1, 1, 1]


def test_a_job_runs_with_its_submitters_rights(conn: Conn, db_dsn: str) -> None:
    counted_chain(conn, 1, 0)
    role = f"weak_{conn.info.dbname}"
    run_script(conn, f"""
        CREATE ROLE {role} LOGIN;
        SELECT mvgraph.grant_privileges('{role}', 'operator');
    """)
    try:
        other = mvgraph.submit_refresh(db_dsn, "c1", "restrict")  # the superuser's own job
        with psycopg.connect(db_dsn, user=role, autocommit=True) as weak:
            row = weak.execute("SELECT mvgraph.submit('REFRESH MATERIALIZED VIEW c1 RESTRICT')"
                               ).fetchone()
            assert row is not None
            seen = weak.execute("SELECT id FROM mvgraph.job").fetchall()
            assert seen == [row]  # its own job only, not the superuser's
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                weak.execute("SELECT * FROM mvgraph.job_data")
        conn.execute("SELECT mvgraph.cancel_job(%s)", [other])
        job = int(str(row[0]))
        owner = conn.execute("SELECT owner FROM mvgraph.job WHERE id = %s", [job]).fetchone()
        assert owner == (role,)
        with worker(db_dsn):
            wait_for(lambda: job_status(conn, job) == "failed")
        error = conn.execute("SELECT error FROM mvgraph.job WHERE id = %s", [job]).fetchone()
        assert error is not None  # PostgreSQL 17+: MAINTAIN privilege; before: ownership
        assert any(m in str(error[0]) for m in ("permission denied for materialized view c1",
                                                "must be owner of materialized view c1",
                                                "may not refresh public.c1")), error
        assert conn.execute("SELECT relispopulated FROM pg_class WHERE relname = 'c1'"
                            ).fetchone() == (False,)
        assert hits(conn, 1) == [0]
    finally:
        run_script(conn, f"DELETE FROM mvgraph.job; DROP OWNED BY {role}; DROP ROLE {role};")


def test_sigterm_lets_the_running_step_finish_and_requeues_the_rest(
        conn: Conn, db_dsn: str) -> None:
    counted_chain(conn, 2, 0.8)
    job = mvgraph.submit_refresh(db_dsn, "c2", "cascade backward")
    with worker(db_dsn, "--shutdown-timeout", "10") as proc:
        wait_for(lambda: running_step(conn, job, "public.c1"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert job_status(conn, job) == "queued"
    assert step_statuses(conn, job) == {"public.c1": "done", "public.c2": "pending"}
    with worker(db_dsn):
        wait_for(lambda: job_status(conn, job) == "done")
    assert hits(conn, 2) == [1, 1]


def test_a_worker_survives_its_connections_being_terminated(conn: Conn, db_dsn: str) -> None:
    counted_chain(conn, 2, 0.8)
    job = mvgraph.submit_refresh(db_dsn, "c2", "cascade backward")
    with worker(db_dsn) as proc:
        wait_for(lambda: running_step(conn, job, "public.c1"))
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
                     "current_database() AND application_name LIKE 'mvgraph %' AND pid <> "
                     "pg_backend_pid()")
        wait_for(lambda: job_status(conn, job) == "done")
        later = mvgraph.submit("REFRESH MATERIALIZED VIEW c1 RESTRICT", dsn=db_dsn)
        wait_for(lambda: job_status(conn, later) == "done")
        assert proc.poll() is None
    assert hits(conn, 2)[1] == 1
    attempts = conn.execute("SELECT attempt FROM mvgraph.job WHERE id = %s", [job]).fetchone()
    assert attempts is not None and int(str(attempts[0])) >= 2  # lost, requeued, run again


def test_prune_and_retention(capsys: pytest.CaptureFixture[str], conn: Conn,
                             db_dsn: str) -> None:
    assert conn.execute("SELECT value FROM mvgraph.setting WHERE key = 'retention_days'"
                        ).fetchone() == ("7",)
    counted_chain(conn, 1, 0)
    old = mvgraph.refresh(db_dsn, "c1").job_id
    conn.execute("UPDATE mvgraph.job SET finished_at = now() - interval '3 days' WHERE id = %s",
                 [old])
    code, out, _ = cli(capsys, "--dsn", db_dsn, "jobs", "--all")
    assert code == 0 and out.startswith("1 job\n") and "done" in out and "1/1 100%" in out
    code, out, _ = cli(capsys, "--dsn", db_dsn, "jobs", "prune")
    assert code == 0 and "pruned 0 jobs" in out
    code, out, _ = cli(capsys, "--dsn", db_dsn, "jobs", "prune", "--older-than", "2")
    assert code == 0 and "pruned 1 job" in out
    code, _, err = cli(capsys, "--dsn", db_dsn, "settings", "max_concurrent_jobs", "0")
    assert code == 2 and "max_concurrent_jobs" in err
    code, _, err = cli(capsys, "--dsn", db_dsn, "worker", "--lease", "5", "--heartbeat", "10")
    assert code == 2 and "heartbeat must be shorter than the lease" in err


def test_an_idle_worker_wakes_on_notify_not_on_its_poll(conn: Conn, db_dsn: str) -> None:
    counted_chain(conn, 1, 0)
    with worker(db_dsn, "--poll", "30"):
        wait_for(lambda: conn.execute(
            "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND "
            "application_name LIKE 'mvgraph worker %' AND query LIKE '%claim_job%' "
            "AND state = 'idle'").fetchone())  # listening, after its first (empty) claim
        submitted = time.monotonic()
        job = mvgraph.submit("REFRESH MATERIALIZED VIEW c1", dsn=db_dsn)
        wait_for(lambda: job_status(conn, job) == "done")
        assert time.monotonic() - submitted < 5  # long before the 30 s poll


def test_restarting_the_server_under_a_worker() -> None:
    """The worker outlives a server restart: the job it was running is requeued and finished,
    and a job submitted after the restart runs too."""
    with cluster(bindir()) as pg, connect(pg.uri) as c:
        init(c)
        counted_chain(c, 2, 0.8)
        job = mvgraph.submit_refresh(pg.uri, "c2", "cascade backward")
        with worker(pg.uri) as proc:
            wait_for(lambda: running_step(c, job, "public.c1"))
            c.close()
            pg.restart(down_s=1.0)
            with connect(pg.uri) as again:
                wait_for(lambda: job_status(again, job) == "done", timeout=40)
                later = mvgraph.submit("REFRESH MATERIALIZED VIEW c1 RESTRICT", dsn=pg.uri)
                wait_for(lambda: job_status(again, later) == "done")
                assert proc.poll() is None
                assert set(step_statuses(again, job).values()) == {"done"}


def test_a_suspended_foreground_refresh_is_resumed_by_a_worker(conn: Conn, db_dsn: str) -> None:
    counted_chain(conn, 2, 0.8)
    proc = subprocess.Popen([sys.executable, "-m", "mvgraph", "refresh", "c2", "--cascade",
                             "backward", "--dsn", db_dsn], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        job = int(str(wait_for(lambda: (conn.execute(
            "SELECT job_id FROM mvgraph.job_step WHERE name = 'public.c1' AND "
            "status = 'running'").fetchone() or [0])[0])))
        assert mvgraph.suspend_job(job, dsn=db_dsn) == "suspending"
        _out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and f"mvgraph resume {job}" in err, err
    assert job_status(conn, job) == "suspended"
    assert step_statuses(conn, job) == {"public.c1": "done", "public.c2": "pending"}
    assert mvgraph.resume_job(job, dsn=db_dsn) == "queued"
    with worker(db_dsn):
        wait_for(lambda: job_status(conn, job) == "done")
    assert hits(conn, 2) == [1, 1]
