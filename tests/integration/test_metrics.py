"""The metrics server: real HTTP requests against it on an ephemeral port."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest

import mvgraph
from mvgraph.errors import UsageError
from mvgraph.scheduler.health import Health
from mvgraph.scheduler.lag import submit_due
from mvgraph.scheduler.metrics import Metrics, MetricsServer

Conn = psycopg.Connection[tuple[object, ...]]


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


@pytest.fixture
def served() -> Iterator[tuple[Metrics, str]]:
    metrics = Metrics()
    health = Health()
    health.beat()
    server = MetricsServer(metrics, health, 0, "127.0.0.1").start()
    try:
        yield metrics, f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


def sample(text: str, name: str) -> float:
    for line in text.splitlines():
        key, _, value = line.rpartition(" ")
        if key == name:
            return float(value)
    raise AssertionError(f"no sample {name} in:\n{text}")


def test_metrics_report_firings_skips_failures_lateness_and_lag(
        served: tuple[Metrics, str]) -> None:
    metrics, base = served
    metrics.fired("public.mv5", 0.03)
    metrics.fired("public.mv5", 0.2)
    metrics.skipped("public.mv5")
    metrics.failed("public.mv6")
    metrics.set_lag({"public.t": (12.5, 600.0), "public.new": (None, 60.0)})
    code, ctype, text = get(base + "/metrics")
    assert code == 200 and ctype.startswith("text/plain")
    assert sample(text, 'mvgraph_schedule_firings_total{schedule="public.mv5"}') == 2
    assert sample(text, 'mvgraph_schedule_skips_total{schedule="public.mv5"}') == 1
    assert sample(text, 'mvgraph_schedule_failures_total{schedule="public.mv6"}') == 1
    assert sample(text, 'mvgraph_schedule_lateness_seconds_bucket{le="0.05"}') == 1
    assert sample(text, 'mvgraph_schedule_lateness_seconds_count') == 2
    assert sample(text, 'mvgraph_target_lag_seconds{view="public.t"}') == 12.5
    assert sample(text, 'mvgraph_target_lag_goal_seconds{view="public.new"}') == 60
    assert 'mvgraph_target_lag_seconds{view="public.new"}' not in text  # no data, no lag
    assert "python_gc" not in text and "process_" not in text  # a registry of its own
    metrics.set_lag({"public.t": (0.0, 600.0)})
    assert 'view="public.new"' not in get(base + "/metrics")[2]


def test_healthz_answers_from_the_daemons_heartbeat(served: tuple[Metrics, str]) -> None:
    metrics, base = served
    code, _, body = get(base + "/healthz")
    assert code == 200 and body.startswith("ok: last database contact ")
    health = Health()
    server = MetricsServer(metrics, health, 0, "127.0.0.1").start()
    try:
        url = f"http://127.0.0.1:{server.port}/healthz"
        assert get(url)[0:3:2] == (503, "database unreachable: no contact yet\n")
        health.beat()
        assert get(url)[0] == 200
        health.lost()
        code, _, body = get(url)
        assert code == 503 and body.startswith("database unreachable: a call failed")
    finally:
        server.stop()
    assert get(base + "/nope")[0] == 404


def test_healthz_opens_no_database_connection(db_dsn: str, conn: Conn) -> None:
    """100 requests: the server's session count (pg_stat_database.sessions) does not move."""
    if conn.info.server_version < 140000:
        pytest.skip("pg_stat_database.sessions needs PostgreSQL 14")

    def sessions() -> int:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute("SELECT sessions FROM pg_stat_database "
                           "WHERE datname = current_database()").fetchone()
        assert row is not None
        return int(str(row[0]))

    health = Health()
    health.beat()
    server = MetricsServer(Metrics(), health, 0).start()
    try:
        before = sessions()
        psycopg.connect(db_dsn).close()  # the count does see a connection
        assert sessions() == before + 1
        for _ in range(100):
            assert get(f"http://127.0.0.1:{server.port}/healthz")[0] == 200
        assert sessions() == before + 1
    finally:
        server.stop()


def test_the_metrics_host_is_localhost_unless_told_otherwise() -> None:
    server = MetricsServer(Metrics(), Health(), 0).start()
    try:
        assert server._server.server_address[0] == "127.0.0.1"
    finally:
        server.stop()
    try:
        server = MetricsServer(Metrics(), Health(), 0, "::1").start()
    except UsageError:  # a machine without IPv6
        pass
    else:
        try:
            assert get(f"http://[::1]:{server.port}/healthz")[0] == 503
        finally:
            server.stop()
    with pytest.raises(UsageError, match=r"cannot serve metrics on 192\.0\.2\.1 port 0"):
        MetricsServer(Metrics(), Health(), 0, "192.0.2.1")


def test_a_tick_of_freshness_targets_is_counted_once_per_episode(
        served: tuple[Metrics, str], conn: Conn, db_dsn: str) -> None:
    metrics, base = served
    conn.execute("CREATE TABLE raw (x int); CREATE MATERIALIZED VIEW t AS SELECT x FROM raw")
    mvgraph.track(conn, ["raw"])
    mvgraph.refresh(conn, "t")
    mvgraph.add_schedule("t", target_lag="1 minute", dsn=db_dsn)
    conn.execute("INSERT INTO raw VALUES (1)")
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    later = row[0] + timedelta(minutes=2)  # type: ignore[operator]
    for i in range(3):  # fired once, then skipped (its job waits for a worker) on two ticks
        metrics.observe_tick(submit_due(conn, later + timedelta(seconds=i)))
    text = get(base + "/metrics")[2]
    assert sample(text, 'mvgraph_schedule_firings_total{schedule="public.t"}') == 1
    assert sample(text, 'mvgraph_schedule_skips_total{schedule="public.t"}') == 1
    assert sample(text, 'mvgraph_target_lag_goal_seconds{view="public.t"}') == 60
    assert sample(text, 'mvgraph_target_lag_seconds{view="public.t"}') > 60
    assert sample(text, 'mvgraph_schedule_lateness_seconds_bucket{le="+Inf"}') == 1
