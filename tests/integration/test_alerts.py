"""Alert detection and claims against a real database, in-process: each event is sent once
however many daemons look, only within its window, silences only after the looker was in
contact that long; the rights each level has."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

import mvgraph
from mvgraph.db.connect import connect
from mvgraph.db.scripts import run_script
from mvgraph.errors import MvgraphError
from mvgraph.model.names import RelationName
from mvgraph.scheduler import service
from mvgraph.scheduler.alerts import Alerter
from mvgraph.scheduler.lag import Decision, LagTarget, Verdict
from mvgraph.scheduler.metrics import Metrics
from mvgraph.scheduler.service import Clock

Conn = psycopg.Connection[tuple[object, ...]]
BAD = ("CREATE TABLE knob (d int); INSERT INTO knob VALUES (0); "
       "CREATE MATERIALIZED VIEW bad AS SELECT 1 / (d + 1) AS v FROM knob; "
       "UPDATE knob SET d = -1;")


def failed_job(conn: Conn, background: bool = True) -> int:
    """A failed job (a foreground refresh's, marked background as a worker's would be)."""
    if conn.execute("SELECT to_regclass('bad')").fetchone() == (None,):
        run_script(conn, BAD)
    job = mvgraph.refresh(conn, "bad").job_id
    assert job is not None
    conn.execute("UPDATE mvgraph.job_data SET background = %s WHERE id = %s", [background, job])
    return job


@pytest.fixture
def heard(db_dsn: str) -> Iterator[Conn]:
    with connect(db_dsn) as c:
        c.execute("LISTEN mvgraph_events")
        yield c


def notes(c: Conn) -> list[dict[str, Any]]:
    return [json.loads(n.payload) for n in c.notifies(timeout=0.3)]


def test_of_two_daemons_one_sends_each_event(conn: Conn, heard: Conn) -> None:
    job = failed_job(conn)
    got: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
    a = Alerter("a", deliver=got["a"].append)
    b = Alerter("b", deliver=got["b"].append)
    for alerter in (a, b, a, b):
        alerter.check(conn)
    assert [p["ids"] for p in got["a"] + got["b"]] == [{"job": job}]
    (payload,) = got["a"] + got["b"]
    assert payload["kind"] == "job_failed" and payload["object"] == f"job {job}"
    assert f"`mvgraph job {job}` shows why" in payload["message"]
    assert notes(heard) == [payload], "NOTIFYed once, the payload the webhook gets"
    row = conn.execute("SELECT sent_by, payload FROM mvgraph.alert_sent").fetchone()
    assert row is not None and row[0] in ("a", "b") and row[1] == payload


def test_only_events_of_background_jobs_since_the_schema_had_alerts(conn: Conn) -> None:
    old = failed_job(conn)
    conn.execute("UPDATE mvgraph.job_data SET finished_at = (SELECT applied_at FROM "
                 "mvgraph.schema_version WHERE name = 'alerts') - interval '1 second' "
                 "WHERE id = %s", [old])
    failed_job(conn, background=False)  # its caller saw the failure
    assert Alerter("a").check(conn).sent == ()


def test_silences_once_the_looker_was_in_contact_that_long(conn: Conn, db_dsn: str) -> None:
    now = [0.0]
    alerter = Alerter("a", heartbeat_s=10, clock=lambda: now[0])
    conn.execute("UPDATE mvgraph.schema_version SET applied_at = now() - interval '1 hour' "
                 "WHERE name = 'alerts'")  # the heartbeats below are after it

    def stale(table: str, name: str) -> None:
        if table == "daemon":
            conn.execute("INSERT INTO mvgraph.daemon (name, host, pid, heartbeat_at, workers, "
                         "version) VALUES (%s, 'h', 1, now() - interval '1 minute', 0, 'x')",
                         [name])
        else:
            conn.execute("INSERT INTO mvgraph.worker (name, host, pid, heartbeat_at, "
                         "concurrency, heartbeat_s, version) "
                         "VALUES (%s, 'h', 1, now() - interval '1 minute', 1, 1, 'x')", [name])

    stale("daemon", "gone")
    stale("worker", "gone")  # the daemon's own worker: the daemon's alert covers it
    stale("worker", "w")
    assert alerter.check(conn).sent == ()  # in contact for 0 s: the others may reconnect
    now[0] = 10
    seen = alerter.check(conn)
    assert sorted((a.kind, a.object) for a in seen.sent) == [("daemon_silent", "gone"),
                                                             ("worker_silent", "w")]
    assert (seen.live_daemons, seen.live_workers) == (0, 0)
    assert alerter.check(conn).sent == ()
    with connect(db_dsn) as closed:
        pass
    with pytest.raises(MvgraphError):
        alerter.check(closed)  # contact lost: the watch starts over
    stale("daemon", "gone2")
    now[0] = 20
    assert alerter.check(conn).sent == ()
    now[0] = 30
    assert [a.object for a in alerter.check(conn).sent] == ["gone2"]


def test_a_schedule_broken_again_is_a_new_event(conn: Conn) -> None:
    run_script(conn, BAD)
    sid = service.add(conn, "bad", Clock(every="1 hour")).id
    metrics = Metrics()
    alerter = Alerter("a", on_sent=metrics.alerted)

    def breaks(job: int) -> None:  # as schedule_run_ended does
        conn.execute("UPDATE mvgraph.schedule_data SET is_broken = true, failure_count = 2, "
                     "last_job = %s, last_end = now() WHERE id = %s", [job, sid])

    breaks(5)
    seen = alerter.check(conn)
    assert [(a.kind, a.object, a.ids) for a in seen.sent] == [
        ("schedule_broken", "public.bad", {"schedule": sid, "job": 5})]
    assert "mvgraph schedule resume public.bad" in seen.sent[0].message
    metrics.observe_alerts(seen)
    assert seen.broken == ("public.bad",)
    assert alerter.check(conn).sent == () and alerter.check(conn).broken == ("public.bad",)
    conn.execute("UPDATE mvgraph.schedule_data SET failure_count = 3, last_job = 7 "
                 "WHERE id = %s", [sid])  # a run still going when it broke failed too
    assert alerter.check(conn).sent == ()
    conn.execute("UPDATE mvgraph.schedule_data SET is_broken = false WHERE id = %s", [sid])
    metrics.observe_alerts(alerter.check(conn))
    assert b'mvgraph_schedule_broken{' not in metrics.render()
    breaks(6)
    assert [a.ids for a in alerter.check(conn).sent] == [{"schedule": sid, "job": 6}]
    assert b'mvgraph_alerts_total{kind="schedule_broken"} 2.0' in metrics.render()


def target(sid: int, lag_s: float, since: datetime, goal_s: float = 1.0) -> Decision:
    view = RelationName("public", "late")
    return Decision(LagTarget(sid, view, timedelta(seconds=goal_s), frozenset({view})),
                    Verdict.BUSY, "", timedelta(seconds=lag_s), since)


def test_a_target_missed_by_more_than_its_lag(conn: Conn, heard: Conn) -> None:
    alerter = Alerter("a")
    since = datetime.now(UTC) - timedelta(seconds=5)
    assert alerter.targets(conn, [target(1, 2.0, since)]) == []  # missed by its lag, not more
    sent = alerter.targets(conn, [target(1, 2.5, since)])
    assert [(a.kind, a.object, a.ids) for a in sent] == [
        ("target_missed", "public.late", {"schedule": 1})]
    assert sent[0].time == since + timedelta(seconds=2)
    assert alerter.targets(conn, [target(1, 3.5, since)]) == []  # the same episode
    assert Alerter("b").targets(conn, [target(1, 3.5, since)]) == []  # another daemon
    later = since + timedelta(seconds=4)
    assert Alerter("b").targets(conn, [target(1, 9.0, later)]) == []  # within the hour
    assert alerter.targets(conn, [target(2, 9.0, later)]) != []  # another target
    assert [n["ids"] for n in notes(heard)] == [{"schedule": 1}, {"schedule": 2}]


def test_a_worker_login_raises_alerts_and_a_viewer_cannot_read_them(conn: Conn,
                                                                    db_dsn: str) -> None:
    suffix = conn.info.dbname
    wrk, viewer = f"wrk_{suffix}", f"viewer_{suffix}"
    run_script(conn, f"CREATE ROLE {wrk} LOGIN; CREATE ROLE {viewer} LOGIN; "
                     f"SELECT mvgraph.grant_privileges('{wrk}', 'worker'); "
                     f"SELECT mvgraph.grant_privileges('{viewer}', 'viewer');")
    try:
        job = failed_job(conn)
        with connect(psycopg.conninfo.make_conninfo(db_dsn, user=wrk)) as c:
            assert [a.ids for a in Alerter("w").check(c).sent] == [{"job": job}]
            assert c.execute("SELECT count(*) FROM mvgraph.alert_sent").fetchone() == (1,)
        with connect(psycopg.conninfo.make_conninfo(db_dsn, user=viewer)) as c:
            assert c.execute("SELECT count(*) FROM mvgraph.worker").fetchone() == (0,)
            for sql in ("SELECT * FROM mvgraph.alert_sent",
                        "SELECT mvgraph.raise_alert('job_failed', 'x', "
                        "'{\"kind\": \"job_failed\"}', 'me')"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    c.execute(sql)
    finally:
        run_script(conn, f"DROP OWNED BY {wrk}; DROP OWNED BY {viewer}; "
                         f"DROP ROLE {wrk}; DROP ROLE {viewer};")
