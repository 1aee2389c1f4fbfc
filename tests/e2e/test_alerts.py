"""Alerts from real daemons: each event kind is NOTIFYed on ``mvgraph_events`` exactly once
(two daemons look for it) and POSTed once to a webhook that fails its first attempts; a webhook
that never answers delays no firing."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg

import mvgraph
from mvgraph.db.connect import connect
from mvgraph.db.scripts import run_script
from mvgraph.scheduler import service
from mvgraph.scheduler.service import Clock
from tests.e2e.test_daemon import START, daemon, fired, slots, stop
from tests.integration.test_jobs import start_worker, wait_for

Conn = psycopg.Connection[tuple[object, ...]]

SCHEMA = """
CREATE TABLE knob (d int); INSERT INTO knob VALUES (1);
CREATE MATERIALIZED VIEW bad AS SELECT 1 / d AS v FROM knob;
UPDATE knob SET d = 0;
CREATE TABLE src (x int); INSERT INTO src VALUES (1);
CREATE MATERIALIZED VIEW late AS SELECT x FROM src;
CREATE TABLE base (x int); INSERT INTO base VALUES (1);
CREATE MATERIALIZED VIEW fast AS SELECT x FROM base;
INSERT INTO mvgraph.setting (key, value) VALUES ('max_concurrent_jobs', '8'),
    ('schedule_max_failures', '2') ON CONFLICT (key) DO UPDATE SET value = excluded.value;
"""
KINDS = {"schedule_broken", "target_missed", "job_failed", "daemon_silent", "worker_silent"}


class Hook:
    """A local webhook: records what it was posted; fails the first ``fail`` requests (500),
    or (``hang``) answers none until closed."""

    def __init__(self, fail: int = 0, hang: bool = False) -> None:
        self.fail = fail
        self.hang = hang
        self.attempts = 0
        self.accepted: list[dict[str, object]] = []
        self.lock = threading.Lock()
        self.released = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with hook.lock:
                    hook.attempts += 1
                    failing = hook.attempts <= hook.fail
                if hook.hang:
                    hook.released.wait(60)
                    return
                if not failing:
                    assert self.headers["Content-Type"] == "application/json"
                    with hook.lock:
                        hook.accepted.append(json.loads(body))
                self.send_response(500 if failing else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook?token=secret"

    def got(self) -> list[dict[str, object]]:
        with self.lock:
            return list(self.accepted)

    def __enter__(self) -> Hook:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


class Listener:
    """LISTEN mvgraph_events on a connection of its own; every payload heard, in order."""

    def __init__(self, dsn: str) -> None:
        self.conn = connect(dsn)
        self.conn.execute("LISTEN mvgraph_events")
        self.heard: list[dict[str, object]] = []

    def poll(self) -> list[dict[str, object]]:
        if self.conn.closed:  # after the test: what was heard
            return self.heard
        for note in self.conn.notifies(timeout=0.05):
            assert note.channel == "mvgraph_events"
            self.heard.append(json.loads(note.payload))
        return self.heard

    def of(self, kind: str) -> list[dict[str, object]]:
        return [p for p in self.poll() if p["kind"] == kind]


@contextmanager
def listening(dsn: str) -> Iterator[Listener]:
    listener = Listener(dsn)
    try:
        yield listener
        time.sleep(0.2)
        listener.poll()
    finally:
        listener.conn.close()


def one(conn: Conn, sql: str, *args: object) -> object:
    row = conn.execute(sql, list(args)).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return row[0]


def failed_jobs(conn: Conn) -> set[int]:
    return {int(r[0]) for r in conn.execute(  # type: ignore[call-overload]
        "SELECT id FROM mvgraph.job WHERE status = 'failed'").fetchall()}


def settled(conn: Conn) -> bool:
    return one(conn, "SELECT count(*) FROM mvgraph.job WHERE status IN ('queued', 'running')"
               ) == 0


def ids(payload: dict[str, object]) -> dict[str, int]:
    found = payload["ids"]
    assert isinstance(found, dict)
    return found


def test_each_event_is_notified_once_and_posted_once_with_retries(db_dsn: str,
                                                                    conn: Conn) -> None:
    run_script(conn, SCHEMA)
    mvgraph.track(conn, ["src"])
    mvgraph.refresh(conn, "late")
    bad = service.add(conn, "bad", Clock(every="1 second", start=START), behavior="restrict").id
    late = service.add(conn, "late", Clock(target_lag="1 second")).id
    args = ["--alert-heartbeat-s", "2"]
    with Hook(fail=2) as hook, listening(db_dsn) as heard, \
            daemon(db_dsn, "--workers", "2", "--alert-webhook", hook.url, *args) as first, \
            daemon(db_dsn, "--workers", "0", "--alert-webhook", hook.url, *args) as second:
        worker = start_worker(db_dsn, "--name", "w1")
        try:
            wait_for(lambda: one(conn, "SELECT count(*) FROM mvgraph.daemon") == 2
                     and one(conn, "SELECT count(*) FROM mvgraph.worker WHERE name = 'w1'"))
            # a freshness target missed by more than its lag: its refresh waits for a lock on
            # the view (taken before the write that makes it due)
            locker = connect(db_dsn)
            try:
                locker.execute("BEGIN")
                locker.execute("SELECT count(*) FROM late")  # ACCESS SHARE to the end
                conn.execute("INSERT INTO src VALUES (2)")
                wait_for(lambda: heard.of("target_missed"), timeout=30)
            finally:
                locker.close()
            # a schedule broken by its second failure in a row, and the failed jobs
            wait_for(lambda: heard.of("schedule_broken"), timeout=30)
            wait_for(lambda: settled(conn) and {ids(p)["job"] for p in heard.of("job_failed")}
                     == failed_jobs(conn) and len(hook.got()) == len(heard.poll()),
                     timeout=30)
            # a daemon and a worker killed: silent
            daemon_id = one(conn, "SELECT id FROM mvgraph.daemon WHERE pid = %s", second.pid)
            worker_id = one(conn, "SELECT id FROM mvgraph.worker WHERE name = 'w1'")
            second.send_signal(signal.SIGKILL)
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
            wait_for(lambda: heard.of("daemon_silent") and heard.of("worker_silent"),
                     timeout=30)
            wait_for(lambda: len(hook.got()) == len(heard.poll()), timeout=30)
            time.sleep(2.5)  # more looks of the alert tick: nothing is sent twice
            log = stop(first)
        finally:
            if worker.poll() is None:
                worker.kill()
            worker.communicate(timeout=30)

    notes = heard.poll()
    assert {p["kind"] for p in notes} == KINDS
    texts = [json.dumps(p, sort_keys=True) for p in notes]
    assert len(set(texts)) == len(texts), "each event NOTIFYed once"
    posted = [json.dumps(p, sort_keys=True) for p in hook.got()]
    assert sorted(posted) == sorted(texts), "each event POSTed once, as NOTIFYed"
    assert hook.attempts == len(posted) + 2, "the failed attempts were retried"
    for p in notes:
        assert set(p) == {"kind", "object", "message", "time", "ids"}
        assert datetime.fromisoformat(str(p["time"])).tzinfo is not None
        assert "division" not in str(p["message"]), "no error text (it may hold data)"
    broken = heard.of("schedule_broken")
    assert len(broken) == 1 and ids(broken[0])["schedule"] == bad
    assert broken[0]["object"] == "public.bad" and "resume" in str(broken[0]["message"])
    missed = heard.of("target_missed")
    assert len(missed) == 1 and ids(missed[0]) == {"schedule": late}
    assert missed[0]["object"] == "public.late"
    assert len(heard.of("job_failed")) == len(failed_jobs(conn)) >= 2
    assert [ids(p) for p in heard.of("daemon_silent")] == [{"daemon": daemon_id}]
    assert [ids(p) for p in heard.of("worker_silent")] == [{"worker": worker_id}]
    assert heard.of("worker_silent")[0]["object"] == "w1"
    sent_by = conn.execute("SELECT kind, count(*) FROM mvgraph.alert_sent GROUP BY 1").fetchall()
    assert {k: n for k, n in sent_by} == {  # type: ignore[misc]
        k: len(heard.of(k)) for k in KINDS}
    assert "secret" not in log, "the webhook's token is not logged"
    assert one(conn, "SELECT count(*) FROM mvgraph.worker WHERE name <> 'w1'") == 0, \
        "a stopped daemon's worker removes its row"


def test_a_dead_webhook_never_delays_firing(db_dsn: str, conn: Conn) -> None:
    run_script(conn, SCHEMA)
    fast = service.add(conn, "fast", Clock(every="1 second", start=START),
                       behavior="restrict").id
    with Hook(hang=True) as hook, listening(db_dsn) as heard, \
            daemon(db_dsn, "--workers", "2", "--alert-webhook", hook.url) as proc:
        wait_for(lambda: len(fired(conn, fast)) >= 1, timeout=30)
        jobs = [mvgraph.submit("REFRESH MATERIALIZED VIEW bad RESTRICT", dsn=db_dsn)
                for _ in range(3)]
        wait_for(lambda: {ids(p)["job"] for p in heard.of("job_failed")} >= set(jobs),
                 timeout=30)
        wait_for(lambda: hook.attempts >= 1, timeout=30)  # the webhook holds the first one
        alerted = datetime.now(UTC)
        # the schedule fires every slot meanwhile: none skipped or missed
        wait_for(lambda: len([s for s, _j in fired(conn, fast) if s > alerted]) >= 4,
                 timeout=30)
        assert hook.got() == [], "the webhook never answered"
        later = [r for r in slots(conn, fast) if r[0] > alerted]
        assert all(st == "fired" and j is not None for _s, st, j, _r in later), later
        stop(proc)


def test_a_bad_webhook_url_is_a_usage_error(db_dsn: str) -> None:
    import subprocess
    import sys

    from tests.conftest import ROOT

    out = subprocess.run([sys.executable, "-m", "mvgraph", "daemon", "--dsn", db_dsn,
                          "--alert-webhook", "ftp://example.com/x"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "--alert-webhook must be an http:// or https:// URL" in out.stderr
