"""The status page on the daemon's HTTP port (``mvgraph daemon --http-port``).

When ``--http-port`` equals ``--metrics-port`` one server answers both: the page's app serves
``/metrics`` and ``/healthz`` too (open without the token, as on the metrics port).
"""

from __future__ import annotations

import socket

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from mvgraph.scheduler.health import Health
from mvgraph.scheduler.metrics import Metrics, health_answer, is_loopback, warn_exposed
from mvgraph.web.data import Reader
from mvgraph.web.server import ServerThread, WebConfig, page_app

OPEN_PATHS = ("/metrics", "/healthz")


def metrics_routes(metrics: Metrics, health: Health) -> list[BaseRoute]:
    """``/metrics`` and ``/healthz`` as the metrics server answers them."""
    def metrics_page(request: Request) -> Response:
        return Response(metrics.render(), headers={"content-type": CONTENT_TYPE_LATEST})

    def healthz(request: Request) -> Response:
        ok, line = health_answer(health)
        return PlainTextResponse(f"{line}\n", status_code=200 if ok else 503)

    return [Route("/metrics", metrics_page, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"])]


class DaemonPage:
    """The page served from a thread beside the daemon; stopped with it."""

    def __init__(self, thread: ServerThread, reader: Reader) -> None:
        self.thread = thread
        self.reader = reader

    @property
    def port(self) -> int:
        """The port it listens on."""
        return self.thread.port

    def stop(self) -> None:
        """Stop serving, close the page's session."""
        self.thread.stop()
        self.reader.close()


def start(dsn: str, config: WebConfig, sock: socket.socket, metrics: Metrics | None,
          health: Health) -> DaemonPage:
    """Serve the page (reading ``dsn``) on ``sock``; with ``metrics``, /metrics and /healthz
    as well (the port shared with the metrics server)."""
    routes = metrics_routes(metrics, health) if metrics is not None else []
    if metrics is not None and not is_loopback(config.host):
        warn_exposed(config.host, int(sock.getsockname()[1]))
    app, reader = page_app(dsn, config, extra_routes=routes,
                           open_paths=OPEN_PATHS if metrics is not None else ())
    return DaemonPage(ServerThread(app, sock).start(), reader)
