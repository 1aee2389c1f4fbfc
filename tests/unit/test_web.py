"""The status page without a database: layout, view states, the token gate, the config check,
the one-line errors (the database side: tests/integration/test_web.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from starlette.testclient import TestClient

from mvgraph.errors import ConnectionFailed, NotFound, UsageError
from mvgraph.graph import MVGraph
from mvgraph.model.definitions import Definition, Kind
from mvgraph.model.names import RelationName
from mvgraph.scheduler.status import ViewStatus
from mvgraph.web import app as web_app
from mvgraph.web.data import arrange, drawn, error_line, view_entry
from mvgraph.web.server import WebConfig

N = RelationName.parse


def test_arrange_keeps_layers_and_uncrosses_edges() -> None:
    layers = [["t1", "t2", "t3"], ["c", "a", "b"]]
    edges = [("t1", "a"), ("t2", "b"), ("t3", "c")]
    assert arrange(layers, edges) == [["t1", "t2", "t3"], ["a", "b", "c"]]
    crossed = [("t3", "a"), ("t1", "c"), ("t2", "b")]
    out = arrange(layers, crossed)
    assert sorted(out[0]) == ["t1", "t2", "t3"] and sorted(out[1]) == ["a", "b", "c"]
    pos = [{n: i for i, n in enumerate(layer)} for layer in out]
    inversions = sum(1 for a, b in crossed for c, d in crossed
                     if pos[0][a] < pos[0][c] and pos[1][b] > pos[1][d])
    assert inversions == 0


def test_drawn_takes_views_and_what_they_read_in_mvgraph_layers() -> None:
    g = MVGraph.from_definitions([
        Definition(N("t"), Kind.TABLE),
        Definition(N("lonely"), Kind.TABLE),  # read by no view: not drawn
        Definition(N("v"), Kind.VIEW, reads=frozenset({N("t")})),
        Definition(N("s.mv1"), Kind.MATVIEW, reads=frozenset({N("v")})),
        Definition(N("mv2"), Kind.MATVIEW, reads=frozenset({N("s.mv1"), N("t")})),
    ])
    pic = drawn(g)
    at = {n["name"]: (n["layer"], n["kind"]) for n in pic["nodes"]}
    assert at == {"public.t": (0, "table"), "public.v": (1, "view"),
                  "s.mv1": (2, "matview"), "public.mv2": (3, "matview")}
    assert sorted(map(tuple, pic["edges"])) == [
        ("public.t", "public.mv2"), ("public.t", "public.v"), ("public.v", "s.mv1"),
        ("s.mv1", "public.mv2")]
    assert pic["layers"] == 4 and pic["rows"] == 1
    labels = {n["name"]: (n["schema"], n["label"]) for n in pic["nodes"]}
    assert labels["s.mv1"] == ("s", "mv1")


def _status(fresh: bool, lag: float | None = None, goal: float | None = None) -> ViewStatus:
    return ViewStatus(N("mv"), fresh, "fresh" if fresh else "input t changed",
                      datetime(2025, 1, 1, tzinfo=UTC), 0.5, lag, goal)


def _step(status: str, error: str | None = None) -> tuple[object, ...]:
    return ("public.mv", status, 7, error, "why", datetime(2025, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize(("fresh", "step", "state"), [
    (True, None, "fresh"),
    (False, None, "stale"),
    (False, _step("running"), "refreshing"),
    (True, _step("running"), "refreshing"),
    (False, _step("failed", "division by zero"), "failed"),
    (True, _step("failed", "division by zero"), "fresh"),  # refreshed since, some other way
    (False, _step("done"), "stale"),
])
def test_view_states(fresh: bool, step: tuple[object, ...] | None, state: str) -> None:
    entry = view_entry(_status(fresh), step)
    assert entry["state"] == state
    assert entry["reason"] == ("fresh" if fresh else "input t changed")
    if step is not None:
        assert entry["step"]["job"] == 7


def test_lag_against_the_target() -> None:
    assert view_entry(_status(True, 12.0, 10.0), None)["late"] is True
    assert view_entry(_status(True, 3.0, 10.0), None)["late"] is False
    assert view_entry(_status(True, None, 10.0), None)["late"] is False
    assert view_entry(_status(True), None)["late"] is False


def test_errors_are_one_line_without_password() -> None:
    line = error_line(ConnectionFailed("cannot connect to host=db password=hunter2\nmore"))
    assert "\n" not in line and "hunter2" not in line
    assert error_line(ValueError("boom")) == "internal error: ValueError: boom"


def test_beyond_localhost_needs_a_token() -> None:
    WebConfig().check()
    WebConfig(host="::1").check()
    WebConfig(host="0.0.0.0", token="s3cret").check()
    with pytest.raises(UsageError, match=r"--host 0\.0\.0\.0 is not localhost: give --token"):
        WebConfig(host="0.0.0.0").check()
    with pytest.raises(UsageError, match=r"--http-host 10\.0\.0\.1 .* give --http-token"):
        WebConfig(host="10.0.0.1").check("--http-host", "--http-token")
    with pytest.raises(UsageError, match="empty"):
        WebConfig(token=" ").check()


class FakeReader:
    """Answers like the Reader, without a database."""

    def __init__(self, error: str | None = None) -> None:
        self.error = error

    def state(self) -> dict[str, Any]:
        if self.error:
            return {"error": self.error, "time": None}
        return {"error": None, "time": "2025-01-01T00:00:00+00:00", "database": "db",
                "role": "viewer", "graph_key": "k", "views": {}, "warnings": [], "jobs": [],
                "history": [], "schedules": [], "daemons": [], "workers": [],
                "graph": {"nodes": [{"name": "public.</script><b>x", "schema": "public",
                                     "label": "</script><b>x", "kind": "matview", "layer": 0,
                                     "row": 0}], "edges": [], "layers": 1, "rows": 1}}

    def view(self, name: str) -> dict[str, Any]:
        raise NotFound(f"no relation {name} in the graph; reload the page")

    def job(self, job_id: int) -> dict[str, Any]:
        raise ConnectionFailed("cannot connect: Connection refused")


def client(reader: object, token: str | None = None) -> TestClient:
    return TestClient(web_app.create_app(reader, token=token),  # type: ignore[arg-type]
                      follow_redirects=False)


def test_the_page_and_its_answers() -> None:
    c = client(FakeReader())
    page = c.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "</script><b>" not in page.text  # a name is data: escaped in the page's JSON
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert 'src="static/page.js"' in page.text and "initial-state" in page.text
    assert c.get("/api/state").json()["role"] == "viewer"
    assert c.get("/static/page.js").status_code == 200
    assert c.get("/static/page.css").status_code == 200
    missing = c.get("/api/view", params={"name": "nope"})
    assert missing.status_code == 404 and missing.json()["error"].startswith("no relation nope")
    down = c.get("/api/job/3")
    assert down.status_code == 503 and down.json() == {
        "error": "cannot connect: Connection refused"}
    for method in ("post", "put", "delete"):
        assert getattr(c, method)("/api/state").status_code == 405


def test_a_database_error_is_a_banner_not_a_traceback() -> None:
    page = client(FakeReader("cannot connect: Connection refused; check --dsn")).get("/")
    assert page.status_code == 200
    assert "cannot connect: Connection refused; check --dsn" in page.text
    assert 'class="banner" role="alert">' in page.text  # shown, not hidden
    assert "Traceback" not in page.text


def test_the_token_is_checked_on_every_request() -> None:
    c = client(FakeReader(), token="s3cret")
    assert c.get("/").status_code == 401
    assert c.get("/api/state").status_code == 401
    assert c.get("/static/page.js").status_code == 401
    assert c.get("/", params={"token": "wrong"}).status_code == 401
    assert c.get("/api/state", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/api/state",
                 headers={"Authorization": "Bearer s3cret"}).json()["role"] == "viewer"
    assert c.get("/api/state", headers={"Cookie": "mvgraph_web=s3cret"}).status_code == 401
    first = c.get("/", params={"token": "s3cret", "x": "1"})
    assert first.status_code == 303 and first.headers["location"] == "/?x=1"
    cookie = first.headers["set-cookie"]
    assert "s3cret" not in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert c.get("/").status_code == 200  # the client keeps the cookie
    assert c.get("/api/state").json()["role"] == "viewer"
    other = client(FakeReader(), token="s3cret")
    assert other.get("/api/state").status_code == 401  # a new client has no cookie


def test_without_a_token_only_localhost_is_answered() -> None:
    """A page elsewhere whose DNS name now points at 127.0.0.1 sends its own name as Host."""
    app = web_app.create_app(FakeReader(), local_only=True)  # type: ignore[arg-type]
    for base in ("http://127.0.0.1:8765", "http://localhost:8765", "http://[::1]:8765",
                 "http://localhost"):
        assert TestClient(app, base_url=base).get("/api/state").status_code == 200, base
    for base in ("http://evil.example:8765", "http://127.0.0.1.evil.example",
                 "http://testserver"):
        answer = TestClient(app, base_url=base).get("/api/state")
        assert answer.status_code == 403 and "localhost only" in answer.text, base


def test_open_paths_need_no_token() -> None:
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    app = web_app.create_app(
        FakeReader(), token="s3cret",  # type: ignore[arg-type]
        extra_routes=[Route("/healthz", lambda r: PlainTextResponse("ok\n"))],
        open_paths=["/healthz"])
    c = TestClient(app)
    assert c.get("/healthz").text == "ok\n"
    assert c.get("/").status_code == 401


def test_a_missing_extra_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    import mvgraph.web
    from tests.conftest import cli

    monkeypatch.setattr(mvgraph.web, "missing_modules", lambda: ["starlette", "uvicorn"])
    code, _, err = cli(capsys, "web")
    assert code == 2
    assert err.strip() == ("error: mvgraph web needs the web extra (starlette, uvicorn "
                           "missing): pip install 'mvgraph[web]'")
    code, _, err = cli(capsys, "daemon", "--http-port", "0", "--dsn", "postgresql://x@nohost/")
    assert code == 2 and "mvgraph daemon --http-port needs the web extra" in err


def test_no_token_beyond_localhost_refuses_to_start(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import cli

    code, _, err = cli(capsys, "web", "--host", "0.0.0.0", "--dsn", "postgresql://x@nohost/")
    assert code == 2
    assert err.strip() == ("error: --host 0.0.0.0 is not localhost: give --token (or "
                           "MVGRAPH_WEB_TOKEN), which every request must then carry")
    code, _, err = cli(capsys, "daemon", "--http-port", "0", "--http-host", "0.0.0.0",
                       "--dsn", "postgresql://x@nohost/")
    assert code == 2 and err.strip() == (
        "error: --http-host 0.0.0.0 is not localhost: give --http-token (or "
        "MVGRAPH_DAEMON_HTTP_TOKEN), which every request must then carry")
    code, _, err = cli(capsys, "daemon", "--metrics-port", "9", "--http-port", "9",
                       "--http-host", "0.0.0.0", "--dsn", "postgresql://x@nohost/")
    assert code == 2 and "--http-host must be the --metrics-host" in err
