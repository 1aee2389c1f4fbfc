"""Claiming several jobs in one round trip: the oldest first, never past the cap of running
worker jobs, never a job another worker holds, and a worker with free slots starts them all."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from mvgraph.jobs import store
from mvgraph.jobs.worker import Worker, WorkerConfig

Conn = psycopg.Connection[tuple[object, ...]]


def submitted(conn: Conn, n: int) -> list[int]:
    conn.execute("CREATE MATERIALIZED VIEW cj AS SELECT 1 AS k")
    return [store.submit(conn, "REFRESH MATERIALIZED VIEW cj") for _ in range(n)]


def statuses(conn: Conn, jobs: list[int]) -> list[str]:
    return [str(r[0]) for r in conn.execute(
        "SELECT status FROM mvgraph.job WHERE id = ANY(%s) ORDER BY id", [jobs]).fetchall()]


def cap(conn: Conn, n: int) -> None:
    conn.execute("INSERT INTO mvgraph.setting (key, value) VALUES ('max_concurrent_jobs', %s) "
                 "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", [str(n)])


def test_claims_the_oldest_up_to_the_number_wanted(conn: Conn) -> None:
    cap(conn, 10)
    jobs = submitted(conn, 5)
    got = store.claim_many(conn, "w1", 30.0, 3)
    assert [j.id for j in got] == jobs[:3] and all(j.attempt == 1 for j in got)
    assert statuses(conn, jobs) == ["running"] * 3 + ["queued"] * 2
    assert [j.id for j in store.claim_many(conn, "w2", 30.0, 10)] == jobs[3:]
    assert store.claim_many(conn, "w2", 30.0, 10) == []


def test_the_cap_of_running_jobs_holds(conn: Conn) -> None:
    cap(conn, 4)
    jobs = submitted(conn, 6)
    assert len(store.claim_many(conn, "w1", 30.0, 3)) == 3
    assert [j.id for j in store.claim_many(conn, "w2", 30.0, 3)] == [jobs[3]]
    assert store.claim_many(conn, "w2", 30.0, 3) == []
    assert statuses(conn, jobs).count("running") == 4


def test_a_worker_with_free_slots_claims_the_queued_jobs_in_one_round_trip(
        conn: Conn, db_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cap(conn, 10)
    jobs = submitted(conn, 6)
    sizes: list[int] = []
    real = store.claim_many

    def counting(c: Conn, name: str, lease: float, wanted: int) -> list[store.ClaimedJob]:
        got = real(c, name, lease, wanted)
        sizes.append(len(got))
        return got

    monkeypatch.setattr(store, "claim_many", counting)
    worker = Worker(WorkerConfig(db_dsn, name="batch", concurrency=4))
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while statuses(conn, jobs) != ["done"] * 6 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.stop()
        thread.join(60)
    assert statuses(conn, jobs) == ["done"] * 6
    assert sizes and sizes[0] == 4  # the four free slots filled by the first claim
