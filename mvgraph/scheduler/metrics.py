"""Prometheus metrics of the scheduler (``mvgraph daemon --metrics-port PORT``).

A registry private to mvgraph (nothing of the host process's default registry leaks in):

- ``mvgraph_schedule_firings_total{schedule}``: slots fired (a job submitted);
- ``mvgraph_schedule_skips_total{schedule}``: slots skipped (the previous run still going);
- ``mvgraph_schedule_failures_total{schedule}``: runs that failed (or could not be submitted);
- ``mvgraph_schedule_lateness_seconds``: histogram of job submission time minus slot time;
- ``mvgraph_target_lag_seconds{view}`` and ``mvgraph_target_lag_goal_seconds{view}``: each
  freshness target's current lag and its goal;
- ``mvgraph_schedule_broken{schedule}``: 1 for each broken schedule;
- ``mvgraph_live_daemons`` and ``mvgraph_live_workers``: daemons and workers whose heartbeat
  is recent (within ``--alert-heartbeat-s``);
- ``mvgraph_heartbeat_age_seconds``: how long ago this daemon's heartbeat last reached the
  database;
- ``mvgraph_alerts_total{kind}``: alerts this daemon sent (each event is sent by one daemon
  only: sum over daemons), see :mod:`mvgraph.scheduler.alerts`;
- ``mvgraph_alert_deliveries_total{result}``: webhook outcomes: ``sent``, ``retried`` (an
  attempt failed, another follows), ``gave_up``, ``dropped``.

:class:`MetricsServer` serves ``/metrics`` and ``/healthz`` from a thread, on 127.0.0.1 unless
told otherwise (there is no authentication). ``/healthz`` answers from the daemon's own state
(:class:`mvgraph.scheduler.health.Health`: 200 while its last heartbeat reached the database
within a few seconds, else 503); a request never opens a database connection.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from collections.abc import Callable
from contextlib import suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from mvgraph.errors import UsageError
from mvgraph.scheduler.alerts import KINDS, Alert, AlertPass
from mvgraph.scheduler.health import Health

if TYPE_CHECKING:
    from mvgraph.scheduler.lag import TickResult

log = logging.getLogger("mvgraph")

DELIVERY_RESULTS = ("sent", "retried", "gave_up", "dropped")
LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """The scheduler's metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.firings = Counter("mvgraph_schedule_firings", "Slots fired (a job submitted)",
                               ["schedule"], registry=r)
        self.skips = Counter("mvgraph_schedule_skips",
                             "Slots skipped: the previous run of the schedule was still going",
                             ["schedule"], registry=r)
        self.failures = Counter("mvgraph_schedule_failures",
                                "Runs that failed or could not be submitted", ["schedule"],
                                registry=r)
        self.lateness = Histogram("mvgraph_schedule_lateness_seconds",
                                  "Job submission time minus slot time (freshness targets: "
                                  "minus the time the job was due)", buckets=LATENESS_BUCKETS,
                                  registry=r)
        self.lag = Gauge("mvgraph_target_lag_seconds", "Current lag of each freshness target "
                         "(now minus the oldest change its data lacks)", ["view"], registry=r)
        self.lag_goal = Gauge("mvgraph_target_lag_goal_seconds",
                              "Lag goal of each freshness target", ["view"], registry=r)
        self.broken = Gauge("mvgraph_schedule_broken", "1 for each broken schedule",
                            ["schedule"], registry=r)
        self.live_daemons = Gauge("mvgraph_live_daemons",
                                  "Daemons whose heartbeat is recent (--alert-heartbeat-s)",
                                  registry=r)
        self.live_workers = Gauge("mvgraph_live_workers",
                                  "Workers (a daemon's own included) whose heartbeat is recent",
                                  registry=r)
        self.heartbeat_age = Gauge("mvgraph_heartbeat_age_seconds",
                                   "Seconds since this daemon's heartbeat last reached the "
                                   "database", registry=r)
        self.alerts = Counter("mvgraph_alerts", "Alerts this daemon sent (each event is sent "
                              "by one daemon: sum over daemons)", ["kind"], registry=r)
        self.deliveries = Counter("mvgraph_alert_deliveries",
                                  "Alert webhook outcomes: sent, retried (an attempt failed, "
                                  "another follows), gave_up, dropped", ["result"], registry=r)
        for kind in KINDS:  # from 0, so that increase() sees the first one
            self.alerts.labels(kind)
        for result in DELIVERY_RESULTS:
            self.deliveries.labels(result)
        self._broken: set[str] = set()
        self._lag_views: set[str] = set()
        self._skipped: dict[str, object] = {}  # schedule -> episode already counted as skipped
        self._lock = threading.Lock()

    # ---- what the daemon reports ----------------------------------------------------------
    def fired(self, schedule: str, lateness_s: float) -> None:
        """A slot fired: a job was submitted ``lateness_s`` after its slot."""
        self.firings.labels(schedule).inc()
        self.lateness.observe(max(lateness_s, 0.0))

    def skipped(self, schedule: str) -> None:
        """A slot was skipped."""
        self.skips.labels(schedule).inc()

    def failed(self, schedule: str) -> None:
        """A run failed (or its submission did)."""
        self.failures.labels(schedule).inc()

    def set_lag(self, lags: dict[str, tuple[float | None, float]]) -> None:
        """Every freshness target's (lag, goal) in seconds; views no longer targets are
        dropped. A view with no data yet has no lag sample."""
        with self._lock:
            for gone in self._lag_views - set(lags):
                for gauge in (self.lag, self.lag_goal):
                    with suppress(KeyError):
                        gauge.remove(gone)
            for view, (lag, goal) in lags.items():
                self.lag_goal.labels(view).set(goal)
                if lag is not None:
                    self.lag.labels(view).set(lag)
                else:
                    with suppress(KeyError):
                        self.lag.remove(view)
            self._lag_views = set(lags)

    def observe_tick(self, result: TickResult) -> None:
        """Record one :func:`mvgraph.scheduler.lag.submit_due` call: firings with their
        lateness, skips (once per episode, not once per tick), failed submissions, lags."""
        for firing in result.firings:
            for d in firing.decisions:
                self.fired(str(d.target.view), firing.lateness_s(d))
        for d in result.skipped:
            name = str(d.target.view)
            if self._skipped.get(name) != d.slot:
                self._skipped[name] = d.slot
                self.skipped(name)
        for d, _error in result.failed:
            self.failed(str(d.target.view))
        self.set_lag({str(d.target.view): (d.lag_s, d.target.target_lag.total_seconds())
                      for d in result.decisions})

    def alerted(self, alert: Alert) -> None:
        """This daemon sent an alert."""
        self.alerts.labels(alert.kind).inc()

    def delivered(self, result: str) -> None:
        """A webhook outcome (one of :data:`DELIVERY_RESULTS`)."""
        self.deliveries.labels(result).inc()

    def observe_alerts(self, seen: AlertPass) -> None:
        """Record one look of the alerts: broken schedules, live daemons and workers."""
        with self._lock:
            for gone in self._broken - set(seen.broken):
                with suppress(KeyError):
                    self.broken.remove(gone)
            for name in seen.broken:
                self.broken.labels(name).set(1)
            self._broken = set(seen.broken)
        self.live_daemons.set(seen.live_daemons)
        self.live_workers.set(seen.live_workers)

    def watch_health(self, health: Health) -> None:
        """Report the age of the daemon's last heartbeat from ``health`` at each scrape."""
        self.heartbeat_age.set_function(health.age)

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)


class MetricsServer:
    """``/metrics`` and ``/healthz`` over HTTP, from a daemon thread; port 0 picks a free one
    (see :attr:`port`)."""

    def __init__(self, metrics: Metrics, healthy: Health | Callable[[], bool], port: int,
                 host: str = "127.0.0.1") -> None:
        self.metrics = metrics
        self.healthy = healthy
        handler = _handler(self)
        server_class = _Server6 if ":" in host else ThreadingHTTPServer
        try:
            self._server = server_class((host, port), handler)
        except OSError as exc:
            raise UsageError(f"cannot serve metrics on {host} port {port} "
                             f"({exc.strerror or exc}); give --metrics-host a local address "
                             "(default 127.0.0.1) and --metrics-port a free port") from None
        self._server.daemon_threads = True
        if not is_loopback(host):
            warn_exposed(host, self.port)
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics",
                                        daemon=True)

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._server.server_address[1])

    def start(self) -> MetricsServer:
        """Serve from a thread; returns itself."""
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics", self._server.server_address[0], self.port)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def check(self) -> tuple[bool, str]:
        """The health check and the line to answer; an exception counts as unhealthy."""
        return health_answer(self.healthy)


def health_answer(healthy: Health | Callable[[], bool]) -> tuple[bool, str]:
    """What ``/healthz`` answers: healthy or not, and the line; an exception of the check
    counts as unhealthy."""
    try:
        if isinstance(healthy, Health):
            return healthy.status()
        ok = bool(healthy())
    except Exception as exc:  # the check's own failure is an answer: unhealthy
        log.debug("health check failed: %s", exc)
        ok = False
    return ok, "ok" if ok else "database unreachable"


def warn_exposed(host: str, port: int) -> None:
    """Log that /metrics and /healthz listen beyond localhost, without authentication."""
    log.warning("metrics on %s port %d: not localhost, so /metrics and /healthz are "
                "open without authentication to whoever reaches it", host, port,
                extra={"event": "metrics_exposed"})


class _Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only (127.0.0.0/8, ::1, localhost).

    >>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("0.0.0.0")
    (True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _handler(server: MetricsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._answer(200, server.metrics.render(), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                ok, line = server.check()
                self._answer(200 if ok else 503, f"{line}\n".encode(),
                             "text/plain; charset=utf-8")
            else:
                self._answer(404, b"not found: try /metrics or /healthz\n",
                             "text/plain; charset=utf-8")

        def _answer(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return  # scrapes every few seconds are not events

    return Handler


def serve(metrics: Metrics, health: Health, port: int, host: str = "127.0.0.1"
          ) -> MetricsServer:
    """Start the server for ``--metrics-port PORT [--metrics-host HOST]``, its /healthz
    answering from ``health`` (the daemon's heartbeat)."""
    return MetricsServer(metrics, health, port, host).start()
