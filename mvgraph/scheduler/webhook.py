"""The alert webhook (``mvgraph daemon --alert-webhook URL``): each alert's JSON payload is
POSTed to the URL from a thread of its own.

:meth:`Webhook.send` only puts the payload on a bounded queue and returns at once (a full queue
drops the payload, with a warning), so nothing the daemon does ever waits for the webhook: a
dead or slow endpoint delays nothing but other alerts. Each payload is tried up to ``attempts``
times, ``backoff_s`` after the first failure, doubling up to ``max_backoff_s``: a connection
error, a timeout, a 5xx, 408 or 429 is tried again; any other answer outside 2xx gives up at
once (the endpoint refuses the request itself). Redirects are not followed.

The URL may hold a token (a path or a query string): log lines name its scheme and host only.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from mvgraph.errors import UsageError
from mvgraph.version import __version__

log = logging.getLogger("mvgraph.alerts")

RETRIED_STATUSES = frozenset({408, 429})  # and every 5xx


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx is an answer outside 2xx: given up on


def check_url(url: str) -> str:
    """The URL when it can be posted to: http or https, with a host.

    Raises:
        UsageError: anything else (exit 2).
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError("--alert-webhook must be an http:// or https:// URL with a host, e.g. "
                         "https://alerts.example.com/mvgraph")
    return url


def where(url: str) -> str:
    """What log lines say of the URL: scheme, host and port (no path, query or credentials)."""
    parts = urllib.parse.urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


class Webhook:
    """POSTs payloads in the order they were sent, each retried with exponential backoff.

    ``on_result`` is called (on the webhook's thread) with ``"sent"``, ``"retried"`` (an
    attempt failed, another follows), ``"gave_up"`` or ``"dropped"`` (the queue was full, or the
    daemon stopped first) for the metrics.
    """

    def __init__(self, url: str, *, timeout_s: float = 5.0, attempts: int = 8,
                 backoff_s: float = 1.0, max_backoff_s: float = 60.0, queue_size: int = 1000,
                 on_result: Callable[[str], None] | None = None) -> None:
        self.url = check_url(url)
        self.timeout_s = timeout_s
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._on_result = on_result
        self._queue: queue.Queue[bytes] = queue.Queue(queue_size)
        self._closing = threading.Event()  # send what is queued, then end
        self._abort = threading.Event()  # end now
        self._opener = urllib.request.build_opener(_NoRedirect)
        self._thread = threading.Thread(target=self._run, name="alert webhook", daemon=True)

    def start(self) -> Webhook:
        """Start the sending thread; returns itself."""
        self._thread.start()
        log.info("alerts are posted to %s", where(self.url))
        return self

    def send(self, payload: dict[str, Any]) -> bool:
        """Queue a payload; never blocks. False when the queue is full (dropped)."""
        try:
            self._queue.put_nowait(json.dumps(payload).encode())
            return True
        except queue.Full:
            log.warning("alert webhook %s: %d alerts wait already; one dropped",
                        where(self.url), self._queue.qsize(), extra={"event": "alert_dropped"})
            self._result("dropped")
            return False

    def stop(self, grace_s: float = 3.0) -> None:
        """Send what is queued for up to ``grace_s`` seconds (no retry after that), then end
        without waiting for a request still in flight (the thread ends with it); what is left
        is dropped."""
        self._closing.set()
        if self._thread.is_alive():
            self._thread.join(grace_s)
        self._abort.set()
        left = 0
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
            left += 1
            self._result("dropped")
        if left:
            log.warning("alert webhook %s: %d alerts not posted (stopping)", where(self.url),
                        left, extra={"event": "alert_dropped"})

    # ---- the thread -------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._abort.is_set():
            try:
                body = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self._closing.is_set():
                    return
                continue
            self._deliver(body)

    def _deliver(self, body: bytes) -> None:
        delay = self.backoff_s
        for attempt in range(1, self.attempts + 1):
            error, again = self._post(body)
            if error is None:
                self._result("sent")
                return
            if not again or attempt == self.attempts:
                log.warning("alert webhook %s: gave up after %d attempt%s (%s)",
                            where(self.url), attempt, "" if attempt == 1 else "s", error,
                            extra={"event": "alert_gave_up"})
                self._result("gave_up")
                return
            self._result("retried")
            log.info("alert webhook %s: %s; trying again in %.1fs", where(self.url), error,
                     delay, extra={"event": "alert_retry"})
            if self._abort.wait(delay):
                self._result("dropped")
                return
            delay = min(delay * 2, self.max_backoff_s)

    def _post(self, body: bytes) -> tuple[str | None, bool]:
        """(None, _) when the endpoint took it, else (why, whether to try again)."""
        request = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": f"mvgraph/{__version__}"})
        try:
            with self._opener.open(request, timeout=self.timeout_s) as answer:
                answer.read()
                status = int(answer.status)
        except urllib.error.HTTPError as exc:
            status = exc.code
            exc.close()
        except (OSError, ValueError) as exc:  # refused, unreachable, timed out, TLS, ...
            reason = getattr(exc, "reason", None) or exc
            return f"{type(reason).__name__}: {reason}" if str(reason) else \
                type(reason).__name__, True
        if 200 <= status < 300:
            return None, False
        return f"HTTP {status}", status >= 500 or status in RETRIED_STATUSES

    def _result(self, what: str) -> None:
        if self._on_result is not None:
            try:
                self._on_result(what)
            except Exception as exc:  # a metrics bug must not stop the alerts
                log.debug("webhook result callback failed: %s", exc)
