"""A daemon with everything plugged in: clock schedules, freshness targets (a tick of
:class:`mvgraph.scheduler.lagwatch.TargetWatch` every second: one probe while nothing changed),
the wal-mode slot read every second, alerts (:mod:`mvgraph.scheduler.alerts`: a tick every
``alert_check_s``, the target tick's misses, the webhook when configured) and, when asked,
Prometheus metrics and another HTTP server (the status page, started by the caller's ``http``
hook: :mod:`mvgraph.web` sits above this module)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import psycopg

from mvgraph.db.queries import query
from mvgraph.errors import translated
from mvgraph.scheduler.alerts import Alerter
from mvgraph.scheduler.daemon import Daemon, DaemonConfig, DaemonEvent, Fired, RunEnded, Skipped
from mvgraph.scheduler.health import Health
from mvgraph.scheduler.lag import tick_period
from mvgraph.scheduler.lagwatch import TargetWatch
from mvgraph.scheduler.metrics import Metrics, serve
from mvgraph.scheduler.webhook import Webhook
from mvgraph.tracking import wal

TARGET_TICK_S = 1.0  # how often due freshness targets are looked for (2 s when lags allow)
WAL_TICK_S = 1.0  # how often the wal-mode replication slot is read into the change log
WAL_IDLE_S = 10.0  # how often a database without wal-mode tracking is looked at again
ALERT_IDLE_S = 10.0  # the alert tick's period while no job is queued or ends


def build(config: DaemonConfig) -> tuple[Daemon, Metrics]:
    """The daemon with its freshness-target and alert ticks, and the metrics its events
    feed; the webhook (when configured) sends from a thread of its own until the daemon
    stops."""
    daemon = Daemon(config)
    metrics = Metrics()
    metrics.watch_health(daemon.health)
    webhook = None
    if config.alert_webhook:
        webhook = Webhook(config.alert_webhook, on_result=metrics.delivered).start()
        daemon.add_stop_hook(webhook.stop)
    alerter = Alerter(config.name, config.alert_heartbeat_s,
                      daemon_heartbeat_s=config.heartbeat_s,
                      deliver=webhook.send if webhook is not None else None,
                      on_sent=metrics.alerted)

    watch = TargetWatch(daemon.graphs)  # one probe a tick while nothing changed

    def targets(conn: psycopg.Connection[tuple[object, ...]]) -> float | None:
        result = watch.tick(conn, claimed_by=config.name)
        metrics.observe_tick(result)
        alerter.targets(conn, result.decisions)
        # every 2 s while each target's margin covers that, and nothing was just submitted
        return None if result.firings else tick_period(d.target for d in result.decisions)

    def alerts(conn: psycopg.Connection[tuple[object, ...]]) -> None:
        metrics.observe_alerts(alerter.check(conn))

    daemon.add_tick(targets, TARGET_TICK_S, name="freshness targets")
    daemon.add_tick(WalTick(), WAL_TICK_S, name="wal slot")
    # broken schedules and failed jobs follow a job's end (NOTIFY: the tick is due again at
    # once); silences are minutes long
    daemon.add_tick(alerts, config.alert_check_s, name="alerts", idle_s=max(
        config.alert_check_s, min(ALERT_IDLE_S, config.alert_heartbeat_s / 6)))
    daemon.add_listener(lambda event: record(metrics, event))
    return daemon, metrics


class WalTick:
    """The wal tick: the slot is read every second while the database has wal-mode tracking
    (a wal-mode table or the slot), looked for every :data:`WAL_IDLE_S` (a plan reads the slot
    itself before it reads the change log: no change is missed meanwhile)."""

    def __init__(self) -> None:
        self._next_look = 0.0  # time.monotonic() of the next look
        self._in_use = False

    def __call__(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        if time.monotonic() >= self._next_look:
            with translated():
                row = conn.execute(query("wal_in_use")).fetchone()
            self._in_use = bool(row and row[0])
            self._next_look = time.monotonic() + WAL_IDLE_S
        if self._in_use:
            wal.tick(conn)


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
