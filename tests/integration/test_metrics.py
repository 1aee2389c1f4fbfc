"""The metrics server: real HTTP requests against it on an ephemeral port."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest

import mvgraph
from mvgraph.scheduler.lag import submit_due
from mvgraph.scheduler.metrics import Metrics, MetricsServer, database_check

Conn = psycopg.Connection[tuple[object, ...]]


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


@pytest.fixture
def served(db_dsn: str) -> Iterator[tuple[Metrics, str]]:
    metrics = Metrics()
    server = MetricsServer(metrics, database_check(db_dsn), 0, "127.0.0.1").start()
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


def test_healthz_is_200_while_the_database_answers_and_503_when_not(
        served: tuple[Metrics, str], db_dsn: str) -> None:
    metrics, base = served
    assert get(base + "/healthz")[0] == 200
    server = MetricsServer(metrics, database_check(db_dsn + "_gone", 1.0), 0,
                           "127.0.0.1").start()
    try:
        code, _, body = get(f"http://127.0.0.1:{server.port}/healthz")
        assert (code, body) == (503, "database unreachable\n")
    finally:
        server.stop()
    assert get(base + "/nope")[0] == 404


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
