"""A daemon with everything plugged in: clock schedules, freshness targets (a tick calling
:func:`mvgraph.scheduler.lag.submit_due` every second), the wal-mode slot read
every second and, when asked, Prometheus metrics and another HTTP server (the status page,
started by the caller's ``http`` hook: :mod:`mvgraph.web` sits above this module)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import psycopg

from mvgraph.scheduler.daemon import Daemon, DaemonConfig, DaemonEvent, Fired, RunEnded, Skipped
from mvgraph.scheduler.health import Health
from mvgraph.scheduler.lag import submit_due
from mvgraph.scheduler.metrics import Metrics, serve
from mvgraph.tracking import wal

TARGET_TICK_S = 1.0  # how often due freshness targets are looked for
WAL_TICK_S = 1.0  # how often the wal-mode replication slot is read into the change log


def build(config: DaemonConfig) -> tuple[Daemon, Metrics]:
    """The daemon with its freshness-target tick, and the metrics its events feed."""
    daemon = Daemon(config)
    metrics = Metrics()

    def targets(conn: psycopg.Connection[tuple[object, ...]]) -> None:
        metrics.observe_tick(submit_due(conn, claimed_by=config.name))

    daemon.add_tick(targets, TARGET_TICK_S, name="freshness targets")
    daemon.add_tick(wal.tick, WAL_TICK_S, name="wal slot")
    daemon.add_listener(lambda event: record(metrics, event))
    return daemon, metrics


def record(metrics: Metrics, event: DaemonEvent) -> None:
    """Count one daemon event: a firing with its lateness, a skip, a failed run."""
    if isinstance(event, Fired):
        metrics.fired(event.name, event.lateness_s)
    elif isinstance(event, Skipped):
        metrics.skipped(event.name)
    elif isinstance(event, RunEnded) and event.status == "failed":
        metrics.failed(event.name)


class Served(Protocol):
    """A server started beside the daemon, stopped when it ends."""

    def stop(self) -> None: ...


def run(config: DaemonConfig, metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
        http: Callable[[Metrics, Health], Served] | None = None) -> None:
    """Run a daemon until stopped; with ``metrics_port``, serve /metrics and /healthz on
    ``metrics_host`` (health from the daemon's heartbeat, no connection per request); with
    ``http``, start that server too (given the daemon's metrics and health)."""
    daemon, metrics = build(config)
    servers: list[Served] = []
    try:
        if metrics_port is not None:
            servers.append(serve(metrics, daemon.health, metrics_port, metrics_host))
        if http is not None:
            servers.append(http(metrics, daemon.health))
        daemon.run()
    finally:
        for server in reversed(servers):
            server.stop()
