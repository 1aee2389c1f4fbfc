"""``mvgraph web`` and ``mvgraph daemon --http-port`` as processes: the token, a port in use,
the page beside the daemon's metrics on one port."""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.conftest import ROOT, cli
from tests.e2e.test_daemon import daemon
from tests.integration.test_jobs import wait_for

URL_LINE = re.compile(r"status page on (http://\S+/)")


@contextmanager
def web(dsn: str, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """``mvgraph web --port 0`` in a subprocess; yields its address (from its first line)."""
    proc = subprocess.Popen([sys.executable, "-m", "mvgraph", "web", "--port", "0", "--dsn", dsn,
                             *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **(env or {})})
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else ""
        found = URL_LINE.search(line)
        assert found, f"mvgraph web did not start: {line!r} {proc.poll()}"
        yield found.group(1)
    except BaseException:
        if proc.poll() is None:
            proc.kill()
        print(proc.communicate(timeout=30)[1][-4000:])  # its stderr, on failure
        raise
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate(timeout=15)


def get(url: str, token: str | None = None) -> tuple[int, str, str]:
    """Status, content type and body (errors too)."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"}
                                     if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_web_serves_with_its_token_and_refuses_a_port_in_use(
        gauss_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    with web(gauss_dsn, env={"MVGRAPH_WEB_TOKEN": "s3cret"}) as url:
        assert get(url)[0] == 401
        status, kind, body = get(f"{url}api/state", token="s3cret")
        assert status == 200 and kind == "application/json"
        state = json.loads(body)
        assert state["error"] is None
        assert {"public.mv1", "public.mv5", "public.mv6"} <= set(state["views"])
        status, kind, body = get(url, token="s3cret")
        assert status == 200 and kind.startswith("text/html") and "mvgraph" in body
        port = int(url.rsplit(":", 1)[1].strip("/"))
        code, _, err = cli(capsys, "web", "--port", str(port), "--dsn", gauss_dsn)
        assert code == 2
        assert err.strip().startswith(f"error: cannot serve the status page on 127.0.0.1 port "
                                      f"{port} (")
        assert len(err.strip().splitlines()) == 1


def test_web_needs_mvgraph_installed(empty_db_dsn: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "web", "--port", "0", "--dsn", empty_db_dsn)
    assert code == 1 and "mvgraph init" in err and len(err.strip().splitlines()) == 1


def test_the_daemon_serves_the_page_and_its_metrics_on_one_port(gauss_dsn: str) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with daemon(gauss_dsn, "--workers", "0", "--metrics-port", str(port),
                "--http-port", str(port)):
        wait_for(lambda: get_or_none(f"{base}/healthz") == 200, timeout=30, every=0.1)
        status, kind, body = get(f"{base}/metrics")
        assert status == 200 and kind.startswith("text/plain") and "mvgraph_schedule" in body
        state = json.loads(get(f"{base}/api/state")[2])
        assert state["error"] is None and "public.mv5" in state["views"]
        assert len(state["daemons"]) == 1 and state["daemons"][0]["silent"] is False
        assert get(f"{base}/")[0] == 200


def test_the_daemon_serves_the_page_on_its_own_port_with_a_token(gauss_dsn: str) -> None:
    metrics, page = free_port(), free_port()
    with daemon(gauss_dsn, "--workers", "0", "--metrics-port", str(metrics),
                "--http-port", str(page), "--http-token", "s3cret"):
        wait_for(lambda: get_or_none(f"http://127.0.0.1:{metrics}/healthz") == 200,
                 timeout=30, every=0.1)
        assert get(f"http://127.0.0.1:{page}/api/state")[0] == 401
        assert get(f"http://127.0.0.1:{page}/metrics")[0] in (401, 404)
        state = json.loads(get(f"http://127.0.0.1:{page}/api/state", token="s3cret")[2])
        assert state["error"] is None


def get_or_none(url: str) -> int | None:
    try:
        return get(url)[0]
    except OSError:
        return None
