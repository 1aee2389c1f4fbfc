"""Freshness targets against a real database: what submit_due submits and records, and the
lag that status shows."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import psycopg

import mvgraph
from mvgraph.db.connect import connect
from mvgraph.jobs.worker import Worker, WorkerConfig
from mvgraph.scheduler.lag import Verdict, due_targets, lag_report, submit_due

Conn = psycopg.Connection[tuple[object, ...]]

SCHEMA = """
CREATE TABLE raw (x int);
INSERT INTO raw VALUES (1);
CREATE MATERIALIZED VIEW mid AS SELECT x FROM raw;
CREATE MATERIALIZED VIEW t1 AS SELECT count(*) AS n FROM mid;
CREATE MATERIALIZED VIEW t2 AS SELECT sum(x) AS s FROM mid;
CREATE MATERIALIZED VIEW other AS SELECT 1 AS one;
"""


def setup(conn: Conn, dsn: str, lag: str = "10 minutes") -> None:
    conn.execute(SCHEMA)
    mvgraph.track(conn, ["raw"])
    mvgraph.refresh(conn, ["t1", "t2", "other"], "cascade backward")
    for view in ("t1", "t2"):
        mvgraph.add_schedule(view, target_lag=lag, dsn=dsn)


def server_now(conn: Conn) -> object:
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]


def slots(conn: Conn) -> list[tuple[object, ...]]:
    return conn.execute("SELECT s.name, ss.slot, ss.job_id, ss.status FROM mvgraph.schedule_slot"
                        " ss JOIN mvgraph.schedule s ON s.id = ss.schedule_id ORDER BY 1"
                        ).fetchall()


@contextmanager
def worker(dsn: str) -> Iterator[None]:
    w = Worker(WorkerConfig(dsn, poll_s=0.2, heartbeat_s=1, lease_s=5, shutdown_s=5))
    thread = threading.Thread(target=w.run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        w.stop()
        thread.join(15)


def wait_done(conn: Conn, job: int, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute("SELECT status FROM mvgraph.job WHERE id = %s", (job,)).fetchone()
        assert row is not None
        if row[0] in ("done", "failed", "cancelled"):
            return str(row[0])
        time.sleep(0.1)
    raise AssertionError(f"job {job} did not finish within {timeout} s")


def test_nothing_upstream_changed_means_no_job_however_late(conn: Conn, db_dsn: str) -> None:
    setup(conn, db_dsn)
    later = server_now(conn) + timedelta(days=3)  # type: ignore[operator]
    result = submit_due(conn, later)
    assert result.firings == () and slots(conn) == []
    assert {d.verdict for d in result.decisions} == {Verdict.FRESH}
    assert conn.execute("SELECT count(*) FROM mvgraph.job WHERE background").fetchone() == (0,)


def test_a_base_write_makes_both_targets_due_within_their_lag_and_one_job_covers_them(
        conn: Conn, db_dsn: str) -> None:
    setup(conn, db_dsn)
    conn.execute("INSERT INTO raw VALUES (2)")
    written = conn.execute("SELECT max(at) FROM mvgraph.changes WHERE kind = 'w'").fetchone()
    assert written is not None
    at = written[0]
    assert due_targets(conn, at + timedelta(minutes=5)) == []  # type: ignore[operator]
    when = at + timedelta(minutes=10)  # type: ignore[operator]
    result = submit_due(conn, when)
    assert len(result.firings) == 1
    job = result.firings[0].job_id
    statement, steps = conn.execute(
        "SELECT statement, (SELECT array_agg(name ORDER BY seq) FROM mvgraph.job_step "
        "WHERE job_id = j.id) FROM mvgraph.job j WHERE id = %s", (job,)).fetchone() or (None,
                                                                                       None)
    assert statement == "REFRESH MATERIALIZED VIEW public.t1, public.t2 CASCADE BACKWARD"
    assert steps == ["public.mid", "public.t1", "public.t2"]  # the shared view once
    assert [(r[0], r[1], r[2], r[3]) for r in slots(conn)] == [
        ("public.t1", at, job, "fired"), ("public.t2", at, job, "fired")]
    # while it waits for a worker, the next ticks (this daemon or another) submit nothing
    again = submit_due(conn, when + timedelta(seconds=1))
    with connect(db_dsn) as other:
        third = submit_due(other, when + timedelta(seconds=2))
    assert again.firings == () and third.firings == ()
    assert {d.verdict for d in again.decisions} == {Verdict.BUSY}
    with worker(db_dsn):
        assert wait_done(conn, job) == "done"
    after = submit_due(conn, when + timedelta(seconds=3))
    assert after.firings == () and {d.verdict for d in after.decisions} == {Verdict.FRESH}
    assert conn.execute("SELECT count(*) FROM mvgraph.job WHERE background").fetchone() == (1,)


def test_an_episode_is_claimed_once_across_daemons(conn: Conn, db_dsn: str) -> None:
    setup(conn, db_dsn)
    conn.execute("INSERT INTO raw VALUES (2)")
    when = server_now(conn) + timedelta(minutes=10)  # type: ignore[operator]
    results = []
    barrier = threading.Barrier(3)

    def tick() -> None:
        with connect(db_dsn) as c:
            barrier.wait()
            results.append(submit_due(c, when))

    threads = [threading.Thread(target=tick) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(len(f.decisions) for r in results for f in r.firings) == 2  # t1 and t2, once
    assert len(slots(conn)) == 2


def test_status_shows_each_targets_lag_against_its_goal(conn: Conn, db_dsn: str) -> None:
    setup(conn, db_dsn)
    st = {str(v.name): v for v in mvgraph.status(conn).views}
    assert (st["public.t1"].lag_s, st["public.t1"].target_lag_s) == (0.0, 600.0)
    assert (st["public.other"].lag_s, st["public.other"].target_lag_s) == (None, None)
    conn.execute("INSERT INTO raw VALUES (2)")
    time.sleep(0.3)
    st = {str(v.name): v for v in mvgraph.status(conn).views}
    assert st["public.t2"].lag_s is not None and 0.2 < st["public.t2"].lag_s < 60
    as_json = {v["name"]: v for v in mvgraph.status(conn).to_dict()["views"]}  # type: ignore[attr-defined]
    assert as_json["public.t2"]["target_lag_s"] == 600.0
    assert as_json["public.t2"]["lag_s"] > 0.2
    lags = {str(d.target.view): d.lag_s for d in lag_report(conn)}
    assert set(lags) == {"public.t1", "public.t2"}


def test_a_short_lag_is_met_by_the_ticks_and_a_worker(conn: Conn, db_dsn: str) -> None:
    setup(conn, db_dsn, lag="3 seconds")
    conn.execute("INSERT INTO raw VALUES (5)")
    with worker(db_dsn):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            submit_due(conn)
            row = conn.execute("SELECT s FROM t2").fetchone()
            if row == (6,):
                break
            time.sleep(0.2)
        assert conn.execute("SELECT s FROM t2").fetchone() == (6,)
    lag = {str(d.target.view): d for d in lag_report(conn)}["public.t2"]
    assert lag.verdict is Verdict.FRESH
    history = conn.execute("SELECT slot, recorded_at FROM mvgraph.schedule_slot").fetchall()
    assert history and all(r[1] - r[0] < timedelta(seconds=3) for r in history)  # type: ignore[operator]
