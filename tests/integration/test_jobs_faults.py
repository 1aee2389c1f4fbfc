"""Faults under real worker processes (issue 18): a server restart requeues the jobs it cut
(none fails, no schedule counts a failure), a backlog drains without waiting for polls, and
``wait`` says at once when nothing would ever run the job."""

from __future__ import annotations

import os
import signal

import psycopg
import pytest

import mvgraph
from mvgraph.db.connect import connect
from mvgraph.db.install import init
from mvgraph.db.scripts import run_script
from tests.conftest import cli
from tests.e2e.test_daemon import daemon, stop
from tests.integration.test_jobs import job_status, start_worker, wait_for, worker
from tests.pgserver import bindir, cluster

Conn = psycopg.Connection[tuple[object, ...]]


def submit(conn: Conn, statement: str) -> int:
    row = conn.execute("SELECT mvgraph.submit(%s)", [statement]).fetchone()
    assert row is not None
    return int(str(row[0]))


def job_row(conn: Conn, job: int) -> tuple[str, str | None, int]:
    row = conn.execute("SELECT status, error, attempt FROM mvgraph.job_data WHERE id = %s",
                       [job]).fetchone()
    assert row is not None
    return str(row[0]), None if row[1] is None else str(row[1]), int(str(row[2]))


def running_backend(conn: Conn, job: int) -> bool:
    row = conn.execute("SELECT count(*) FROM mvgraph.job_step WHERE job_id = %s AND "
                       "status = 'running' AND backend_pid IS NOT NULL", [job]).fetchone()
    return bool(row and int(str(row[0])))


def test_a_restart_requeues_the_jobs_it_cut_and_fails_none() -> None:
    """A `sql` job and a refresh job, each mid-statement when the server stops (`-m fast`:
    57P01 terminating connection due to administrator command): both go back to the queue
    and end done; nothing is recorded failed. Each statement sleeps long enough (4 s) that the
    two overlap even when the refresh job's first plan (the catalog read) is slow."""
    with cluster(bindir()) as pg:
        with connect(pg.uri) as c:
            init(c)
            run_script(c, "CREATE TABLE t (i int); CREATE TABLE base (x int); "
                          "INSERT INTO base VALUES (1); CREATE MATERIALIZED VIEW slow AS "
                          "SELECT x, pg_sleep(4)::text AS s FROM base WITH NO DATA;")
            statement = submit(c, "INSERT INTO t SELECT 1 FROM pg_sleep(4)")
            refresh = submit(c, "REFRESH MATERIALIZED VIEW slow")
        with worker(pg.uri, "--concurrency", "2") as proc:
            with connect(pg.uri) as c:
                wait_for(lambda: running_backend(c, statement) and running_backend(c, refresh))
            pg.restart(down_s=0.5)
            with connect(pg.uri) as c:
                wait_for(lambda: {job_status(c, statement), job_status(c, refresh)}
                         <= {"done", "failed", "cancelled"}, timeout=60)
                assert proc.poll() is None
                for job in (statement, refresh):
                    status, error, attempt = job_row(c, job)
                    assert (status, error) == ("done", None) and attempt >= 2, (job, status,
                                                                                 error)
                assert c.execute("SELECT count(*) FROM t").fetchone() == (1,)
                assert c.execute("SELECT count(*) FROM mvgraph.job_step WHERE status = "
                                 "'failed'").fetchone() == (0,)


def test_a_job_started_on_a_connection_the_restart_killed_is_requeued() -> None:
    """The worker keeps a job's connection for the next job of the same submitter; a restart
    kills it while idle. The next job, of either kind, starts on it, meets 57P01 and is
    requeued (not failed), then runs on a new connection."""
    with cluster(bindir()) as pg:
        with connect(pg.uri) as c:
            init(c)
            run_script(c, "CREATE TABLE t (i int); CREATE MATERIALIZED VIEW m AS SELECT 1 AS x;")
        with worker(pg.uri) as proc:
            for kind in ("sql", "refresh"):
                statement = ("INSERT INTO t VALUES (1)" if kind == "sql"
                             else "REFRESH MATERIALIZED VIEW m")
                with connect(pg.uri) as c:
                    first = submit(c, statement)
                    wait_for(lambda j=first: job_status(c, j) == "done")
                pg.restart(down_s=0.5)
                with connect(pg.uri) as c:
                    job = submit(c, statement)
                    wait_for(lambda j=job: job_status(c, j) in ("done", "failed"), timeout=40)
                    assert job_row(c, job)[:2] == ("done", None), (kind, job_row(c, job))
            assert proc.poll() is None


def test_a_backlog_of_sql_jobs_drains_without_waiting_for_polls(conn: Conn,
                                                                 db_dsn: str) -> None:
    """Ten `sql` jobs queued behind a busy worker (poll 30 s): each thread that ends a job
    claims the next one itself, so all ten finish long before a single poll."""
    run_script(conn, "CREATE TABLE t (i int);")
    with worker(db_dsn, "--poll", "30") as proc:
        busy = submit(conn, "SELECT pg_sleep(1)")
        wait_for(lambda: job_status(conn, busy) == "running")
        backlog = [submit(conn, f"INSERT INTO t VALUES ({i})") for i in range(10)]
        wait_for(lambda: all(job_status(conn, j) == "done" for j in backlog), timeout=25)
        assert proc.poll() is None
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (10,)


def test_a_backlog_of_mixed_kinds_drains_in_order(conn: Conn, db_dsn: str) -> None:
    """Refresh and `sql` jobs alternate in the queue; one worker slot takes each next job as
    the last ends, whatever the kinds, oldest first."""
    run_script(conn, "CREATE TABLE t (i int); CREATE MATERIALIZED VIEW m AS SELECT 1 AS x;")
    with worker(db_dsn, "--poll", "30"):
        busy = submit(conn, "SELECT pg_sleep(1)")
        wait_for(lambda: job_status(conn, busy) == "running")
        backlog = [submit(conn, f"INSERT INTO t VALUES ({i})" if i % 2 else
                          "REFRESH MATERIALIZED VIEW m") for i in range(6)]
        wait_for(lambda: all(job_status(conn, j) == "done" for j in backlog), timeout=25)
    started = [r[0] for r in conn.execute(
        "SELECT id FROM mvgraph.job WHERE id = ANY(%s) ORDER BY started_at, id", [backlog])]
    assert started == backlog


def test_wait_says_at_once_when_no_worker_is_alive(capsys: pytest.CaptureFixture[str],
                                                   conn: Conn, db_dsn: str) -> None:
    """`mvgraph wait` and `Job.wait` end with one line (exit 69) when the job waits for a
    worker and none is alive, long before their timeout; also after a kill -9 of the worker
    that ran it (its lease runs out). A daemon with workers counts as alive."""
    run_script(conn, "CREATE TABLE t (i int);")
    queued = submit(conn, "INSERT INTO t VALUES (1)")
    code, out, err = cli(capsys, "--dsn", db_dsn, "wait", str(queued), "--timeout", "120")
    assert code == 69 and out == "", (code, out, err)
    assert f"job {queued} is queued and no worker is running" in err
    assert len(err.strip().splitlines()) == 1
    job = mvgraph.Job(queued, db_dsn)
    with pytest.raises(mvgraph.NoJobRunner):
        job.wait(120)
    with pytest.raises(mvgraph.JobTimeout):  # for a worker that starts later
        job.wait(0.3, need_runner=False)
    slow = mvgraph.Job(submit(conn, "SELECT pg_sleep(30)"), db_dsn)
    proc = start_worker(db_dsn)
    try:
        wait_for(lambda: job_status(conn, queued) == "done" and slow.status().value
                 == "running", timeout=30)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        with pytest.raises(mvgraph.NoJobRunner, match="no worker is running"):
            slow.wait(120)  # its lease (2 s) runs out: nothing would requeue and run it
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
        conn.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE "
                     "'SELECT pg_sleep(30)%%' AND pid <> pg_backend_pid()")
    mvgraph.cancel_job(slow, dsn=db_dsn)
    later = mvgraph.Job(submit(conn, "INSERT INTO t VALUES (2)"), db_dsn)
    with daemon(db_dsn, "--workers", "1") as d:
        # once the daemon has started (on a loaded machine that takes longer than wait's
        # grace), the job waits for it: a daemon with workers counts as alive
        wait_for(lambda: conn.execute("SELECT count(*) FROM mvgraph.daemon").fetchone()
                 != (0,), timeout=60)
        assert later.wait(60) is mvgraph.JobStatus.DONE
        stop(d)
