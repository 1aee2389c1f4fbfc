"""The status page's routes (Starlette): the page, its JSON, its static files.

- ``GET /``: the page (Jinja2); it draws itself from ``/api/state`` and polls it;
- ``GET /api/state``: everything shown (graph, views, jobs, schedules, daemons, workers), or
  ``{"error": ...}`` when the database failed (the page shows a banner and keeps the last data);
- ``GET /api/view?name=SCHEMA.NAME``: one relation (definition, inputs, schedule, last runs);
- ``GET /api/job/ID``: one job with its steps;
- ``GET /static/...``: the page's script and style, shipped in the package (no CDN).

Only GET (and HEAD): the page changes nothing. With a token every request must carry it
(``Authorization: Bearer TOKEN``, or ``?token=TOKEN`` once, which sets a cookie and redirects to
the same address without it); ``open_paths`` (the daemon's ``/metrics`` and ``/healthz``)
answer without it, as on the metrics port. Without a token (on localhost) ``local_only``
answers only requests addressed to localhost (``Host: localhost``, 127.0.0.1, [::1]): a web
page elsewhere that rebinds its DNS name to 127.0.0.1 cannot read it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from http.cookies import SimpleCookie
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mvgraph.errors import NotFound
from mvgraph.scheduler.metrics import is_loopback
from mvgraph.version import __version__
from mvgraph.web.data import Reader, error_line

COOKIE = "mvgraph_web"
TOKEN_PARAM = "token"

#: Sent with every answer: nothing but the page's own files runs or loads; no framing.
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     b"object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


def create_app(reader: Reader, *, token: str | None = None, poll_s: float = 1.0,
               extra_routes: Sequence[BaseRoute] = (),
               open_paths: Sequence[str] = (), local_only: bool = False) -> ASGIApp:
    """The page's ASGI app reading through ``reader``; ``token``: required on every request
    but ``open_paths``; ``extra_routes``: more routes served beside the page (the daemon's
    /metrics and /healthz); ``local_only``: refuse requests addressed to another host."""
    env = Environment(loader=PackageLoader("mvgraph.web", "templates"),
                      autoescape=select_autoescape(default=True))
    page = env.get_template("index.html")
    static = StaticFiles(directory=str(resources.files("mvgraph.web").joinpath("static")))

    def index(request: Request) -> Response:
        state = reader.state()
        return HTMLResponse(page.render(state=state, poll_ms=int(poll_s * 1000),
                                        version=__version__),
                            headers={"cache-control": "no-store"})

    def api_state(request: Request) -> Response:
        return _json(reader.state())

    def api_view(request: Request) -> Response:
        name = request.query_params.get("name", "")
        return _answer(lambda: reader.view(name))

    def api_job(request: Request) -> Response:
        job_id = int(request.path_params["id"])
        return _answer(lambda: reader.job(job_id))

    routes: list[BaseRoute] = [
        Route("/", index, methods=["GET"]),
        Route("/api/state", api_state, methods=["GET"]),
        Route("/api/view", api_view, methods=["GET"]),
        Route("/api/job/{id:int}", api_job, methods=["GET"]),
        Mount("/static", app=static, name="static"),
        *extra_routes,
    ]
    app = Starlette(routes=routes)
    return Guard(app, token, open_paths, local_only)


def _json(body: dict[str, Any], status_code: int = 200) -> Response:
    return JSONResponse(body, status_code=status_code, headers={"cache-control": "no-store"})


def _answer(read: Any) -> Response:
    """A detail's JSON, or ``{"error": ...}``: 404 for an unknown name or job, 503 when the
    database failed (one line, never a traceback)."""
    try:
        return _json(read())
    except NotFound as exc:
        return _json({"error": error_line(exc)}, 404)
    except Exception as exc:
        return _json({"error": error_line(exc)}, 503)


def token_digest(token: str) -> str:
    """What the cookie holds: a digest of the token, not the token."""
    return hashlib.sha256(f"mvgraph web\0{token}".encode()).hexdigest()


class Guard:
    """ASGI wrapper: the token check (when there is a token), the Host check (``local_only``)
    and the security headers."""

    def __init__(self, app: ASGIApp, token: str | None, open_paths: Sequence[str] = (),
                 local_only: bool = False) -> None:
        self.app = app
        self.token = token
        self.digest = token_digest(token) if token else ""
        self.open_paths = frozenset(open_paths)
        self.local_only = local_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [h for h in SECURITY_HEADERS
                            if h[0] not in {k.lower() for k, _ in headers}]
                message = {**message, "headers": headers}
            await send(message)

        if scope["path"] not in self.open_paths:
            denied = self._check(scope) if self.token else (
                self._check_host(scope) if self.local_only else None)
            if denied is not None:
                await denied(scope, receive, with_headers)
                return
        await self.app(scope, receive, with_headers)

    @staticmethod
    def _check_host(scope: Scope) -> Response | None:
        """None when the request is addressed to localhost; else 403."""
        host = Request(scope).headers.get("host", "")
        name = host[1:host.find("]")] if host.startswith("[") else host.rsplit(":", 1)[0]
        if is_loopback(name):
            return None
        return PlainTextResponse("403: this page answers to localhost only (127.0.0.1, "
                                 "localhost, [::1]); serve it with --token to reach it by "
                                 "another name\n", status_code=403)

    def _check(self, scope: Scope) -> Response | None:
        """None when the request carries the token; else the answer: a redirect setting the
        cookie (``?token=`` right), or 401."""
        assert self.token is not None
        request = Request(scope)
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer " and _same(auth[7:].strip(), self.token):
            return None
        cookie = SimpleCookie()
        try:
            cookie.load(request.headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header counts as none
            cookie = SimpleCookie()
        if COOKIE in cookie and _same(cookie[COOKIE].value, self.digest):
            return None
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"),
                          keep_blank_values=True)
        given = [v for k, v in query if k == TOKEN_PARAM]
        if given and _same(given[-1], self.token):
            rest = urlencode([(k, v) for k, v in query if k != TOKEN_PARAM])
            response = Response(status_code=303, headers={
                "location": scope["path"] + (f"?{rest}" if rest else ""),
                "cache-control": "no-store"})
            response.set_cookie(COOKIE, self.digest, httponly=True, samesite="strict", path="/")
            return response
        if scope["path"].startswith("/api/"):
            return JSONResponse({"error": "this page needs its token: send Authorization: "
                                          "Bearer TOKEN, or open it once with ?token=TOKEN"},
                                status_code=401, headers={"www-authenticate": "Bearer"})
        return PlainTextResponse("401: this page needs its token: open it once as "
                                 "/?token=TOKEN (a cookie keeps it), or send "
                                 "Authorization: Bearer TOKEN\n", status_code=401,
                                 headers={"www-authenticate": "Bearer"})


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())
