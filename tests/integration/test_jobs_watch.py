"""Watching and steering jobs: ``jobs`` with progress and time left, ``job ID``, ``wait``,
``jobs --watch`` and the library's ``Job``, against a real server and real worker processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import psycopg
import pytest

import mvgraph
from mvgraph.model.status import JobStatus
from tests.conftest import ROOT, cli
from tests.integration.test_jobs import (
    counted_chain,
    hits,
    job_status,
    running_step,
    wait_for,
    worker,
)

Conn = psycopg.Connection[tuple[object, ...]]


def listed(capsys: pytest.CaptureFixture[str], dsn: str, job: int) -> dict[str, object]:
    code, out, err = cli(capsys, "--dsn", dsn, "jobs", "--all", "--json")
    assert code == 0, err
    return {int(str(j["id"])): j for j in json.loads(out)}[job]


def durations(conn: Conn, job: int) -> dict[str, float]:
    return {str(r[0]): float(str(r[1])) for r in conn.execute(
        "SELECT name, duration_s FROM mvgraph.job_step WHERE job_id = %s", [job])}


def mvgraph_cli(dsn: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "mvgraph", *args], cwd=ROOT,
                            env={**os.environ, "MVGRAPH_DSN": dsn}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_jobs_json_has_percent_elapsed_and_time_left_from_past_durations(
        capsys: pytest.CaptureFixture[str], conn: Conn, db_dsn: str) -> None:
    counted_chain(conn, 3, 0.2)
    nothing_known = mvgraph.submit_refresh(db_dsn, "c3", "cascade backward")
    row = listed(capsys, db_dsn, nothing_known)
    assert (row["status"], row["done_steps"], row["total_steps"]) == ("queued", 0, 3)
    assert (row["percent"], row["elapsed_s"], row["eta_s"]) == (0.0, None, None)
    code, out, _ = cli(capsys, "--dsn", db_dsn, "jobs")
    assert code == 0 and "0/3 0%" in out and " ?" in out  # time left unknown
    mvgraph.cancel_job(nothing_known, dsn=db_dsn)

    past = mvgraph.refresh(db_dsn, "c2", "cascade backward").job_id  # c1, c2: durations known
    took = durations(conn, past)
    job = mvgraph.submit_refresh(db_dsn, "c3", "cascade backward", force=True)
    row = listed(capsys, db_dsn, job)
    known = took["public.c1"] + took["public.c2"]
    # c3 was never refreshed: it counts the average of the job's known views
    assert row["eta_s"] == pytest.approx(known * 1.5, abs=0.002)
    with worker(db_dsn):
        wait_for(lambda: job_status(conn, job) == "done")
    row = listed(capsys, db_dsn, job)
    assert (row["done_steps"], row["total_steps"], row["percent"], row["eta_s"]) == (3, 3,
                                                                                    100.0, 0)
    assert isinstance(row["elapsed_s"], float) and row["elapsed_s"] > 0
    assert row["started_at"] and row["statement"] == "REFRESH MATERIALIZED VIEW public.c3 " \
                                                     "CASCADE BACKWARD"
    cancelled = listed(capsys, db_dsn, nothing_known)
    assert (cancelled["status"], cancelled["eta_s"]) == ("cancelled", None)


def test_job_id_shows_the_steps_like_a_task_progress_view(
        capsys: pytest.CaptureFixture[str], conn: Conn, db_dsn: str) -> None:
    counted_chain(conn, 3, 0.4)
    job = mvgraph.submit_refresh(db_dsn, "c3", "cascade backward")
    with worker(db_dsn):
        wait_for(lambda: running_step(conn, job, "public.c2"))
        code, out, err = cli(capsys, "--dsn", db_dsn, "job", str(job), "--json")
        assert code == 0, err
        shown = json.loads(out)
        assert (shown["id"], shown["status"], shown["done_steps"]) == (job, "running", 1)
        steps = {s["step"]: s for s in shown["steps"]}
        assert [s["seq"] for s in shown["steps"]] == [1, 2, 3]
        assert (steps["public.c1"]["status"], steps["public.c1"]["progress"]) == ("done", "1/3")
        assert steps["public.c2"]["status"] == "running" and steps["public.c2"]["progress"] \
            == "1/3" and isinstance(steps["public.c2"]["backend_pid"], int)
        assert (steps["public.c3"]["status"], steps["public.c3"]["progress"]) == ("pending", "-")
        wait_for(lambda: job_status(conn, job) == "done")
    code, out, _ = cli(capsys, "--dsn", db_dsn, "job", str(job), "--json")
    steps = json.loads(out)["steps"]
    assert [s["progress"] for s in steps] == ["1/3", "2/3", "3/3"]
    assert all(s["duration_s"] > 0 and s["started_at"] and s["finished_at"] and s["message"]
               for s in steps)
    code, out, _ = cli(capsys, "--dsn", db_dsn, "job", str(job))
    assert code == 0 and f"job {job} done 3/3 100%" in out
    assert all(name in out for name in ("public.c1", "public.c2", "public.c3", "3/3")), out
    code, out, err = cli(capsys, "--dsn", db_dsn, "job", "999999")
    assert (code, out) == (4, "") and err.strip() == \
        "error: no job 999999; list jobs with `mvgraph jobs --all`"
    code, _, err = cli(capsys, "--dsn", db_dsn, "job", "abc")
    assert code == 2 and "'abc' is not a job id" in err
    code, out, _ = cli(capsys, "--dsn", db_dsn, "job", "result", str(job), "--json")
    assert code == 0 and json.loads(out)["status"] == "done"


def test_wait_exit_codes(capsys: pytest.CaptureFixture[str], conn: Conn, db_dsn: str) -> None:
    counted_chain(conn, 2, 0.3)
    queued = mvgraph.submit_refresh(db_dsn, "c2", "cascade backward")
    code, out, err = cli(capsys, "--dsn", db_dsn, "wait", str(queued), "--timeout", "0.3")
    assert (code, out) == (124, "") and f"job {queued} is still queued after 0.3s" in err
    conn.execute("CREATE MATERIALIZED VIEW nosuch AS SELECT 1")  # checked at submit ...
    bad = mvgraph.submit("REFRESH MATERIALIZED VIEW nosuch", dsn=db_dsn)
    conn.execute("DROP MATERIALIZED VIEW nosuch")  # ... and gone when the worker plans it
    slow = mvgraph.submit_refresh(db_dsn, "c2", "cascade backward", force=True)
    with worker(db_dsn):
        code, out, err = cli(capsys, "--dsn", db_dsn, "wait", str(queued))
        assert code == 0, err
        assert out.startswith(f"job {queued} done: 2/2 steps in ")
        code, out, _ = cli(capsys, "--dsn", db_dsn, "wait", str(bad), "--timeout", "30")
        assert code == 1 and out.startswith(f"job {bad} failed: 0/0 steps") and "nosuch" in out
        waiting = mvgraph_cli(db_dsn, "wait", str(slow))  # another process, woken by NOTIFY
        wait_for(lambda: running_step(conn, slow, "public.c1"))
        assert mvgraph.cancel_job(slow, dsn=db_dsn) == "cancelling"
        out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 3, err
    assert out.startswith(f"job {slow} cancelled: ")
    code, _, err = cli(capsys, "--dsn", db_dsn, "wait", "999999")
    assert code == 4 and "no job 999999" in err


def test_the_job_object_end_to_end(conn: Conn, db_dsn: str) -> None:
    counted_chain(conn, 2, 0.3)
    job = mvgraph.submit_refresh(db_dsn, "c2", "cascade backward")
    assert isinstance(job, mvgraph.Job) and isinstance(job, int) and int(job) == job.id
    assert (repr(job), str(job)) == (f"Job({job.id})", str(job.id))
    assert job_status(conn, job) == "queued"  # SQL takes it
    assert job.status() is JobStatus.QUEUED
    assert [s.name for s in job.steps()] == ["public.c1", "public.c2"]
    assert job.progress() == mvgraph.Progress(0, 2, 0.0, None, None)
    with pytest.raises(mvgraph.JobTimeout) as timed_out:
        job.wait(0.2)
    assert isinstance(timed_out.value, TimeoutError) and timed_out.value.exit_code == 124
    assert job.suspend() == "suspended" and job.status() is JobStatus.SUSPENDED
    assert job.resume() == "queued"
    with worker(db_dsn):
        assert job.wait(30) is JobStatus.DONE
        later = mvgraph.submit("REFRESH MATERIALIZED VIEW c2 CASCADE BACKWARD", dsn=db_dsn)
        assert isinstance(later, mvgraph.Job)
        assert later.wait(30) is JobStatus.DONE
    progress = job.progress()
    assert (progress.done, progress.total, progress.percent, progress.eta_s) == (2, 2, 100.0, 0)
    assert job.result()["status"] == "done"
    assert [s.status.value for s in job.steps()] == ["done", "done"]
    assert job.cancel() == "done"  # nothing left to cancel
    assert hits(conn, 2) == [2, 2]  # once per job (nextval: the views are always stale)
    with pytest.raises(mvgraph.NotFound, match="no job 999999"):
        mvgraph.Job(999999, db_dsn).status()


def test_watch_draws_a_bar_per_running_job_and_ends_cleanly(
        capsys: pytest.CaptureFixture[str], conn: Conn, db_dsn: str) -> None:
    counted_chain(conn, 3, 0.6)
    job = mvgraph.submit_refresh(db_dsn, "c3", "cascade backward")
    with worker(db_dsn):
        wait_for(lambda: running_step(conn, job, "public.c1"))
        code, out, err = cli(capsys, "--dsn", db_dsn, "jobs", "--watch-for", "0.6")
        assert code == 0, err
        assert f"job {job} REFRESH MATERIALIZED VIEW" in out  # the bar
        assert "1 job" in out and "running" in out  # the table
        watch = mvgraph_cli(db_dsn, "jobs", "--watch")
        watching = ("SELECT query_start FROM pg_stat_activity WHERE datname = "
                    "current_database() AND application_name = 'mvgraph jobs --watch' AND "
                    "query LIKE '%mvgraph.jobs%'")
        first: list[object] = []
        wait_for(lambda: bool(first.extend(r[0] for r in conn.execute(watching)) or first))
        # a later read means the frame of the first one was drawn
        wait_for(lambda: any(r[0] != first[0] for r in conn.execute(watching)))
        watch.send_signal(signal.SIGINT)
        out, err = watch.communicate(timeout=20)
    assert watch.returncode == 0, err
    assert "1 job" in out and err == ""
    code, _, err = cli(capsys, "--dsn", db_dsn, "jobs", "--watch", "--json")
    assert code == 2 and "--watch and --json exclude each other" in err
