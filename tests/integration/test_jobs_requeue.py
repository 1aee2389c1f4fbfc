"""A job that ended is never requeued: a heartbeat racing the end of a run must not make the
worker run it twice (seen under the daemon: 20 one-second schedules, a lease "lost" right after
the refresh, the job requeued and refreshed again)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import psycopg

from mvgraph.jobs import store
from mvgraph.jobs.store import ClaimedJob
from mvgraph.jobs.worker import Worker, WorkerConfig, _Running
from mvgraph.model.status import JobStatus
from mvgraph.refresh.executor import StopMode

Conn = psycopg.Connection[tuple[object, ...]]


@dataclass
class StubExecutor:
    """Records what the worker asks of a run."""

    stops: list[StopMode] = field(default_factory=list)

    def stop(self, mode: StopMode, cancel_running: bool = True) -> None:
        self.stops.append(mode)


def claimed(conn: Conn) -> ClaimedJob:
    conn.execute("CREATE MATERIALIZED VIEW rq AS SELECT 1 AS k")
    store.submit(conn, "REFRESH MATERIALIZED VIEW rq")
    job = store.claim(conn, "test-worker", 30.0)
    assert job is not None
    return job


def status(conn: Conn, job: int) -> tuple[str, int]:
    row = conn.execute("SELECT status, attempt FROM mvgraph.job WHERE id = %s", [job]).fetchone()
    assert row is not None
    return str(row[0]), int(str(row[1]))


def test_a_finished_job_is_not_requeued(conn: Conn) -> None:
    job = claimed(conn)
    assert store.finish(conn, job.id, JobStatus.DONE, None, attempt=job.attempt)
    assert store.ended_attempt(conn, job.id, job.attempt)
    assert not store.finish(conn, job.id, JobStatus.QUEUED, "lost", attempt=job.attempt)
    assert status(conn, job.id) == ("done", job.attempt)


def test_a_running_job_is_requeued(conn: Conn) -> None:
    job = claimed(conn)
    assert not store.ended_attempt(conn, job.id, job.attempt)
    assert store.finish(conn, job.id, JobStatus.QUEUED, "lost", attempt=job.attempt)
    assert status(conn, job.id) == ("queued", job.attempt)


def test_a_heartbeat_racing_the_end_of_its_run_stops_nothing(conn: Conn, db_dsn: str) -> None:
    job = claimed(conn)
    store.finish(conn, job.id, JobStatus.DONE, None, attempt=job.attempt)
    worker = Worker(WorkerConfig(db_dsn))
    ex = StubExecutor()
    worker._beat(conn, [_Running(job, threading.current_thread(), ex)])  # type: ignore[arg-type]
    assert ex.stops == []
    assert status(conn, job.id) == ("done", job.attempt)


def test_a_job_taken_over_is_still_stopped_as_lost(conn: Conn, db_dsn: str) -> None:
    job = claimed(conn)
    # its lease expired and it went back to the queue (as reap_jobs does)
    conn.execute("UPDATE mvgraph.job SET status = 'queued', worker = NULL, lease_until = NULL "
                 "WHERE id = %s", [job.id])
    worker = Worker(WorkerConfig(db_dsn))
    ex = StubExecutor()
    worker._beat(conn, [_Running(job, threading.current_thread(), ex)])  # type: ignore[arg-type]
    assert ex.stops == [StopMode.LOST]
