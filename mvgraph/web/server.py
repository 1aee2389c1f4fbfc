"""Serving the status page with uvicorn: in the foreground (``mvgraph web``) or from a thread
(``mvgraph daemon --http-port``, tests).

:class:`WebConfig` holds what a page server is given (address, token, poll interval): the
options of ``mvgraph web`` today; a configuration file can fill the same fields.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import uvicorn
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from mvgraph.errors import UsageError
from mvgraph.scheduler.metrics import is_loopback
from mvgraph.web.app import create_app
from mvgraph.web.data import Reader

log = logging.getLogger("mvgraph")

DEFAULT_PORT = 8765
DEFAULT_HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class WebConfig:
    """Where and how the page is served. ``token``: required on every request (and required
    when ``host`` is not localhost); ``poll_s``: how often the page asks for the state."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: str | None = None
    poll_s: float = 1.0

    def check(self, host_option: str = "--host", token_option: str = "--token",
              token_env: str = "MVGRAPH_WEB_TOKEN") -> None:
        """Refuse to serve beyond localhost without a token (the options' and variable's names
        for the message).

        Raises:
            UsageError: ``host`` is not a loopback address and there is no token.
        """
        if not is_loopback(self.host) and not self.token:
            raise UsageError(f"{host_option} {self.host} is not localhost: give {token_option} "
                             f"(or {token_env}), which every request must then carry")
        if self.token is not None and not self.token.strip():
            raise UsageError(f"{token_option} is empty; give a secret, or leave it out on "
                             "localhost")


def bind(host: str, port: int, what: str = "the status page",
         options: str = "--host and --port") -> socket.socket:
    """A listening socket (port 0: a free one).

    Raises:
        UsageError: the address cannot be used (in use, not local); one line with the fix.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot serve {what} on {host} port {port} "
                         f"({exc.strerror or exc}); give {options} a local address and a free "
                         "port") from None
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def page_app(dsn: str, config: WebConfig, *, extra_routes: Sequence[BaseRoute] = (),
             open_paths: Sequence[str] = ()) -> tuple[ASGIApp, Reader]:
    """The page's app over a new :class:`Reader` of ``dsn`` (close the reader when done)."""
    reader = Reader(dsn, cache_s=min(0.5, config.poll_s / 2))
    return create_app(reader, token=config.token, poll_s=config.poll_s,
                      extra_routes=extra_routes, open_paths=open_paths,
                      local_only=not config.token), reader


def _uvicorn(app: ASGIApp) -> uvicorn.Server:
    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                         lifespan="off", timeout_graceful_shutdown=5,
                                         server_header=False))


def serve_forever(app: ASGIApp, sock: socket.socket) -> None:
    """Serve in this (main) thread until SIGINT / SIGTERM."""
    _uvicorn(app).run(sockets=[sock])


class ServerThread:
    """uvicorn serving ``app`` from a daemon thread on a socket of :func:`bind`."""

    def __init__(self, app: ASGIApp, sock: socket.socket) -> None:
        self.sock = sock
        self.server = _uvicorn(app)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                        name="web", daemon=True)

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self.sock.getsockname()[1])

    def start(self, timeout_s: float = 10.0) -> ServerThread:
        """Start serving; returns once it accepts requests (or the thread ended)."""
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started and self._thread.is_alive() \
                and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.should_exit = True
        self._thread.join(10)
        self.sock.close()
