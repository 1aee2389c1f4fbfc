"""The alert webhook against a local HTTP server: retries with backoff, gives up on a refusal,
follows no redirect, never blocks the caller (a full queue drops), names no token in logs."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mvgraph.errors import UsageError
from mvgraph.scheduler.webhook import Webhook, check_url, where


@contextmanager
def endpoint(*answers: int) -> Iterator[tuple[str, list[dict[str, object]], list[int]]]:
    """A server answering ``answers`` in turn (then 200); yields its URL, the bodies it
    accepted and every status it answered."""
    accepted: list[dict[str, object]] = []
    statuses: list[int] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                status = answers[len(statuses)] if len(statuses) < len(answers) else 200
                statuses.append(status)
                if status == 200:
                    accepted.append(body)
            self.send_response(status)
            if status == 302:
                self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/x?token=s3cret", accepted, statuses
    finally:
        server.shutdown()
        server.server_close()


def wait(what: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(what) and what():
            return
        time.sleep(0.01)
    raise AssertionError("timed out")


def hook(url: str, results: list[str], **kw: float) -> Webhook:
    return Webhook(url, backoff_s=0.01, timeout_s=5, on_result=results.append, **kw)  # type: ignore[arg-type]


def test_failures_are_retried_until_it_takes_the_payload(caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    caplog.set_level(logging.INFO, "mvgraph.alerts")
    results: list[str] = []
    with endpoint(500, 503, 429) as (url, accepted, statuses):
        w = hook(url, results).start()
        assert w.send({"kind": "job_failed", "n": 1}) and w.send({"kind": "job_failed", "n": 2})
        wait(lambda: len(accepted) == 2)
        w.stop()
    assert accepted == [{"kind": "job_failed", "n": 1}, {"kind": "job_failed", "n": 2}]
    assert statuses == [500, 503, 429, 200, 200]
    assert results == ["retried"] * 3 + ["sent"] * 2
    assert "s3cret" not in caplog.text and "/x" not in caplog.text and "127.0.0.1" in caplog.text


@pytest.mark.parametrize("status", [400, 302])
def test_a_refusal_or_a_redirect_is_given_up_at_once(status: int) -> None:
    results: list[str] = []
    with endpoint(status) as (url, accepted, statuses):
        w = hook(url, results).start()
        w.send({"kind": "job_failed"})
        wait(lambda: results == ["gave_up"])
        w.stop()
    assert statuses == [status] and accepted == []


def test_attempts_are_bounded() -> None:
    results: list[str] = []
    with endpoint(*[500] * 10) as (url, _accepted, statuses):
        w = hook(url, results, attempts=3).start()
        w.send({"kind": "job_failed"})
        wait(lambda: "gave_up" in results)
        w.stop()
    assert statuses == [500] * 3 and results == ["retried", "retried", "gave_up"]


def test_a_full_queue_drops_instead_of_blocking() -> None:
    results: list[str] = []
    w = hook("http://127.0.0.1:9/", results, queue_size=2)  # not started: nothing is taken
    assert [w.send({"n": i}) for i in range(4)] == [True, True, False, False]
    w.stop(grace_s=0)
    assert results == ["dropped"] * 4  # two when full, two left at the stop


def test_urls() -> None:
    assert check_url("https://alerts.example.com/h?t=1") == "https://alerts.example.com/h?t=1"
    for bad in ("ftp://example.com/x", "not a url", "http:///path", ""):
        with pytest.raises(UsageError, match="--alert-webhook"):
            check_url(bad)
    assert where("https://user:pw@alerts.example.com:8443/p/secret?token=1") == \
        "https://alerts.example.com:8443"
