"""Lock modes against a real server: global serialises runs, off locks nothing, a timeout names
the holder, and a holder killed with SIGKILL leaves no lock behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

import mvgraph
from mvgraph.catalog import relations
from mvgraph.db.connect import connect
from mvgraph.db.scripts import run_script
from mvgraph.errors import LockTimeout
from mvgraph.model.events import JobStarted
from mvgraph.refresh.executor import Executor, RefreshReport, advisory_key
from mvgraph.refresh.locks import GLOBAL_LOCK_KEY, job_of
from mvgraph.refresh.service import settings
from tests.conftest import ROOT, cli

Conn = psycopg.Connection[tuple[object, ...]]

# Two chains that share nothing: ta -> a1 -> a2 and tb -> b1 -> b2.
SCHEMA = """
CREATE TABLE ta (k int PRIMARY KEY, v int NOT NULL);
CREATE TABLE tb (k int PRIMARY KEY, v int NOT NULL);
INSERT INTO ta SELECT g, g FROM generate_series(1, 20) g;
INSERT INTO tb SELECT g, g FROM generate_series(1, 20) g;
CREATE MATERIALIZED VIEW a1 AS SELECT k, v FROM ta;
CREATE MATERIALIZED VIEW a2 AS SELECT sum(v) AS s FROM a1;
CREATE MATERIALIZED VIEW b1 AS SELECT k, v FROM tb;
CREATE MATERIALIZED VIEW b2 AS SELECT sum(v) AS s FROM b1;
"""
MV_LOCKS = """
SELECT count(*) FROM pg_locks
 WHERE locktype = 'advisory' AND classid = 28022 AND objsubid = 1
   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
GLOBAL_HOLDER = """
SELECT l.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)
 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
   AND l.classid::bigint = %(key)s >> 32 AND l.objid::bigint = %(key)s & 4294967295
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
GLOBAL_WAITERS = """
SELECT count(*) FROM pg_locks
 WHERE locktype = 'advisory' AND NOT granted AND objsubid = 1
   AND classid::bigint = %(key)s >> 32 AND objid::bigint = %(key)s & 4294967295
"""


@pytest.fixture
def chains(conn: Conn) -> Conn:
    """The two disjoint chains, each refreshed once."""
    run_script(conn, SCHEMA)
    assert mvgraph.refresh(conn, ["a1", "b1"], "cascade forward", force=True).status == "ok"
    return conn


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll ``check`` until it returns something true; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


@contextmanager
def table_locked(dsn: str, table: str) -> Iterator[Conn]:
    """ACCESS EXCLUSIVE on ``table`` until the block ends: a REFRESH reading it waits."""
    with connect(dsn, autocommit=False, application_name="test table lock") as c:
        c.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")  # a fixed test name
        try:
            yield c
        finally:
            c.rollback()


class Run(threading.Thread):
    """A refresh in a thread of its own (its own connection)."""

    def __init__(self, dsn: str, target: str, **kwargs: Any) -> None:
        super().__init__(daemon=True)
        self.dsn, self.target, self.kwargs = dsn, target, kwargs
        self.report: RefreshReport | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.report = mvgraph.refresh(self.dsn, self.target, "cascade forward", force=True,
                                          lock_timeout="60s", **self.kwargs)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def finish(self) -> RefreshReport:
        self.join(60)
        assert not self.is_alive(), f"the run of {self.target} did not end"
        if self.error is not None:
            raise self.error
        assert self.report is not None
        return self.report


def running_step(conn: Conn, name: str) -> int | None:
    """The job whose step refreshing ``name`` is running now."""
    row = conn.execute("SELECT job_id FROM mvgraph.job_step WHERE name = %s AND "
                       "status = 'running'", [name]).fetchone()
    return int(str(row[0])) if row else None


def step_times(conn: Conn, job: int | None) -> list[tuple[Any, Any]]:
    rows = conn.execute("SELECT started_at, finished_at FROM mvgraph.job_step WHERE job_id = %s "
                        "AND status = 'done' ORDER BY seq", [job]).fetchall()
    assert rows and all(r[0] is not None and r[1] is not None for r in rows)
    return [(r[0], r[1]) for r in rows]


@pytest.mark.parametrize("mode", ["global", "on"])
def test_global_serialises_two_cascades_on_disjoint_views(chains: Conn, db_dsn: str,
                                                          mode: str) -> None:
    settings(chains, "lock_mode", mode)
    with table_locked(db_dsn, "ta"):  # the first cascade stops inside its first step
        first = Run(db_dsn, "a1")
        first.start()
        job1 = wait_for(lambda: running_step(chains, "public.a1"), "a1 to start")
        holder = chains.execute(GLOBAL_HOLDER, {"key": GLOBAL_LOCK_KEY}).fetchone()
        assert holder is not None and holder[1] == f"mvgraph job {job1}"
        second = Run(db_dsn, "b1", parallel=2)
        second.start()
        wait_for(lambda: chains.execute(GLOBAL_WAITERS, {"key": GLOBAL_LOCK_KEY}).fetchone()
                 == (1,), "the second cascade to wait for the global lock")
        second.join(0.5)
        assert second.is_alive(), "the cascade on b1 ran while another held the global lock"
        assert chains.execute("SELECT count(*) FROM mvgraph.job_step WHERE name LIKE 'public.b%%'"
                              " AND status = 'running'").fetchone() == (0,)
    r1, r2 = first.finish(), second.finish()
    assert r1.status == r2.status == "ok"
    assert [str(n) for n in r2.refreshed] == ["public.b1", "public.b2"]
    one, two = step_times(chains, r1.job_id), step_times(chains, r2.job_id)
    assert max(end for _, end in one) <= min(start for start, _ in two)  # no overlap


def test_view_mode_runs_disjoint_cascades_side_by_side(chains: Conn, db_dsn: str) -> None:
    settings(chains, "lock_mode", "dml")
    assert settings(chains, "lock_mode")["lock_mode"] == "view"
    with table_locked(db_dsn, "ta"):
        first = Run(db_dsn, "a1")
        first.start()
        wait_for(lambda: running_step(chains, "public.a1"), "a1 to start")
        second = Run(db_dsn, "b1")
        second.start()
        assert second.finish().status == "ok"  # while a1 still waits
        assert first.is_alive()
        assert chains.execute(GLOBAL_HOLDER, {"key": GLOBAL_LOCK_KEY}).fetchone() is None
    assert first.finish().status == "ok"


def test_a_global_lock_timeout_names_the_holder(chains: Conn, db_dsn: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    settings(chains, "lock_mode", "global")
    settings(chains, "global_lock_timeout", "300ms")
    with table_locked(db_dsn, "ta"):
        first = Run(db_dsn, "a1")
        first.start()
        job1 = wait_for(lambda: running_step(chains, "public.a1"), "a1 to start")
        row = chains.execute(GLOBAL_HOLDER, {"key": GLOBAL_LOCK_KEY}).fetchone()
        assert row is not None
        with pytest.raises(LockTimeout) as err:
            mvgraph.refresh(db_dsn, "b1", "cascade forward", force=True)
        message = str(err.value)
        assert "\n" not in message
        assert f"pid {row[0]} (mvgraph job {job1}," in message
        assert "refreshing public.a1" in message
        assert "waited 300ms" in message and "global_lock_timeout" in message
        code, _, stderr = cli(capsys, "--dsn", db_dsn, "refresh", "b1")
        assert code == 1
        assert f"mvgraph job {job1}" in stderr and "refreshing public.a1" in stderr
        assert len(stderr.strip().splitlines()) == 1
        failed = chains.execute("SELECT status, error FROM mvgraph.job WHERE id <> %s "
                                "ORDER BY id DESC LIMIT 1", [job1]).fetchone()
        assert failed is not None and failed[0] == "failed"
        assert f"mvgraph job {job1}" in str(failed[1])
    assert first.finish().status == "ok"


def test_a_global_lock_held_outside_mvgraph_is_named_too(chains: Conn, db_dsn: str) -> None:
    settings(chains, "lock_mode", "on")
    with connect(db_dsn, application_name="maintenance script") as other:
        other.execute("SELECT pg_advisory_lock(%s)", [GLOBAL_LOCK_KEY])
        pid = other.info.backend_pid
        with pytest.raises(LockTimeout, match=rf"held by pid {pid} \(maintenance script, user "):
            mvgraph.refresh(db_dsn, "b1", lock_timeout="200ms")  # the default wait: the lock's
    assert mvgraph.refresh(db_dsn, "b1").status == "ok"  # released when `other` closed


def test_global_timeouts_apply_while_the_lock_is_held(chains: Conn) -> None:
    settings(chains, "lock_mode", "global")
    settings(chains, "statement_timeout", "0")
    settings(chains, "global_lock_statement_timeout", "45s")
    settings(chains, "global_lock_idle_timeout", "20s")
    seen: dict[str, str] = {}
    executors: list[Executor] = []

    def listener(event: object) -> None:  # JobStarted comes once the global lock is held
        if isinstance(event, JobStarted):
            c = executors[0].conn
            held = c.execute(GLOBAL_HOLDER, {"key": GLOBAL_LOCK_KEY}).fetchone()
            seen["holder"] = str(held[0]) if held else ""
            for name in ("statement_timeout", "idle_in_transaction_session_timeout",
                         "client_connection_check_interval"):
                value = c.execute("SELECT current_setting(%s, true)", [name]).fetchone()
                seen[name] = str(value[0]) if value else ""

    before = chains.execute("SELECT current_setting('idle_in_transaction_session_timeout'), "
                            "current_setting('statement_timeout')").fetchone()
    report = mvgraph.refresh(chains, "b1", "cascade forward", listener=listener,
                             executor_hook=executors.append)
    assert report.status == "ok"
    assert seen["holder"] == str(chains.info.backend_pid)
    assert seen["statement_timeout"] == "45s"
    assert seen["idle_in_transaction_session_timeout"] == "20s"
    if chains.info.server_version >= 140000:
        assert seen["client_connection_check_interval"] == "1s"
    after = chains.execute("SELECT current_setting('idle_in_transaction_session_timeout'), "
                           "current_setting('statement_timeout')").fetchone()
    assert after == before  # the caller's connection is given back as it was
    assert chains.execute(GLOBAL_HOLDER, {"key": GLOBAL_LOCK_KEY}).fetchone() is None

    settings(chains, "global_lock_statement_timeout", "100ms")
    chains.execute("CREATE MATERIALIZED VIEW slow AS SELECT 1 AS x FROM pg_sleep(2)")
    report = mvgraph.refresh(chains, "slow", "restrict")
    assert report.status == "failed" and "statement timeout" in (report.steps[0].error or "")
    settings(chains, "lock_mode", "view")  # the global_lock_* settings apply in global only
    assert mvgraph.refresh(chains, "slow", "restrict").status == "ok"


@pytest.mark.parametrize("atomic", [False, True])
def test_off_takes_no_advisory_lock(chains: Conn, db_dsn: str, atomic: bool) -> None:
    a1 = mvgraph.RelationName("public", "a1")
    oid = relations(chains, [a1])[a1].oid
    for mode, expected in (("view", 1), ("off", 0)):
        settings(chains, "lock_mode", mode)
        with table_locked(db_dsn, "ta"):
            run = Run(db_dsn, "a1", atomic=atomic)
            run.start()
            if atomic:  # one transaction: its step row is written at the end
                wait_for(lambda: chains.execute(
                    "SELECT count(*) FROM pg_locks WHERE relation = 'ta'::regclass AND NOT "
                    "granted").fetchone() == (1,), "the atomic run to reach ta")
            else:
                wait_for(lambda: running_step(chains, "public.a1"), "a1 to start")
            held = chains.execute(MV_LOCKS).fetchone()
            # view: the view's lock (an atomic run: a1's and a2's); off: none
            assert held == ((2 if atomic else 1) * expected,), mode
        assert run.finish().status == "ok"
    # and a view's lock held elsewhere does not stop a run in mode off
    with connect(db_dsn, autocommit=False) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", [advisory_key(oid)])
        report = mvgraph.refresh(chains, "a1", "restrict", atomic=atomic, lock_timeout="200ms")
        holder.rollback()
    assert report.status == "ok"


def test_lock_mode_words_and_timeouts_in_the_cli(db_dsn: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    for word, stored in (("on", "global"), ("DML", "view"), ("off", "off"),
                         ("global", "global"), ("view", "view")):
        code, out, _ = cli(capsys, "--dsn", db_dsn, "settings", "lock_mode", word)
        assert code == 0 and f"lock_mode = {stored}" in out
    for key in ("global_lock_timeout", "global_lock_statement_timeout",
                "global_lock_idle_timeout"):
        for value in ("250ms", "5s", "1min", "0"):
            assert cli(capsys, "--dsn", db_dsn, "settings", key, value)[0] == 0
        code, _, err = cli(capsys, "--dsn", db_dsn, "settings", key, "soon")
        assert code == 2 and key in err and len(err.strip().splitlines()) == 1
        assert cli(capsys, "--dsn", db_dsn, "settings", key, "-1")[0] == 2
    code, _, err = cli(capsys, "--dsn", db_dsn, "settings", "lock_mode", "sometimes")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "'sometimes' is not a valid lock_mode; use view (or dml), global (or on) or off" in err
    code, out, _ = cli(capsys, "--dsn", db_dsn, "settings", "lock_mode")
    assert code == 0 and out.strip() == "view"  # the bad values changed nothing


def test_a_killed_holder_leaves_no_lock(chains: Conn, db_dsn: str) -> None:
    settings(chains, "lock_mode", "global")
    settings(chains, "lock_timeout", "60s")
    settings(chains, "global_lock_timeout", "60s")
    keep = chains.info.server_version >= 140000  # the client check ends the dead one's wait
    with table_locked(db_dsn, "ta") as locker:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mvgraph", "refresh", "a1", "--cascade", "forward",
             "--force", "--dsn", db_dsn], cwd=ROOT, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            job = wait_for(lambda: running_step(chains, "public.a1"), "the holder's a1 step")
            holder = chains.execute(GLOBAL_HOLDER, {"key": GLOBAL_LOCK_KEY}).fetchone()
            assert holder is not None and holder[1] == f"mvgraph job {job}"
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
        if not keep:
            locker.rollback()  # PostgreSQL 13: the backend notices at its statement's end
        report = mvgraph.refresh(db_dsn, "b1", "cascade forward", force=True)
        assert report.status == "ok" and len(report.refreshed) == 2
        assert chains.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                              [holder[0]]).fetchone() == (0,)
    row = chains.execute("SELECT status, error FROM mvgraph.job WHERE id = %s",
                         [job]).fetchone()
    assert row is not None and row[0] == "failed" and "process lost" in str(row[1])


def job_state(conn: Conn, job: int) -> str:
    row = conn.execute("SELECT status FROM mvgraph.job WHERE id = %s", [job]).fetchone()
    return str(row[0]) if row else ""


def test_a_worker_running_two_jobs_holds_the_global_lock_for_one_at_a_time(
        chains: Conn, db_dsn: str) -> None:
    settings(chains, "lock_mode", "global")
    settings(chains, "lock_timeout", "60s")
    settings(chains, "global_lock_timeout", "60s")
    jobs = [mvgraph.submit_refresh(db_dsn, name, "cascade forward", force=True)
            for name in ("a1", "b1")]
    with table_locked(db_dsn, "ta"):
        proc = subprocess.Popen(
            [sys.executable, "-m", "mvgraph", "worker", "--concurrency", "2", "--lease", "5",
             "--heartbeat", "0.5", "--poll", "0.5"], cwd=ROOT, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, env={**os.environ, "MVGRAPH_DSN": db_dsn})
        try:
            wait_for(lambda: running_step(chains, "public.a1") == jobs[0], "a1's step")
            # b1's job finished before a1's began, or waits for the lock a1's job holds
            wait_for(lambda: job_state(chains, jobs[1]) == "done" or chains.execute(
                GLOBAL_WAITERS, {"key": GLOBAL_LOCK_KEY}).fetchone() == (1,), "b1's job")
            assert running_step(chains, "public.b1") is None
            locked = chains.execute(GLOBAL_HOLDER, {"key": GLOBAL_LOCK_KEY}).fetchone()
            # the session of a1's job (named for its running step: mvgraph job N step S)
            assert locked is not None and job_of(str(locked[1])) == jobs[0]
        except BaseException:
            proc.kill()
            proc.wait(30)
            raise
    try:
        wait_for(lambda: all(job_state(chains, j) == "done" for j in jobs), "both jobs")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
    one, two = step_times(chains, jobs[0]), step_times(chains, jobs[1])
    assert (max(e for _, e in one) <= min(s for s, _ in two)
            or max(e for _, e in two) <= min(s for s, _ in one))
