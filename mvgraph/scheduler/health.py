"""The daemon's health, from its own state: what ``/healthz`` answers (no connection per request).

The daemon calls :meth:`Health.beat` after each heartbeat it wrote to the database (every 2 s)
and :meth:`Health.lost` when a database call failed. It is healthy while the last heartbeat
succeeded within ``max_age_s`` seconds and no failure came after it: a dead server shows at
once (the failed call), a hung one within ``max_age_s``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

DEFAULT_MAX_AGE_S = 10.0  # five missed heartbeats (the same window as `daemon status --within`)


class Health:
    """Thread-safe: the daemon's threads write it, the metrics server's threads read it."""

    def __init__(self, max_age_s: float = DEFAULT_MAX_AGE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last_ok: float | None = None
        self._failed_since: float | None = None  # a failure after the last success

    def beat(self) -> None:
        """The database answered (a heartbeat was written)."""
        with self._lock:
            self._last_ok = self._clock()
            self._failed_since = None

    def lost(self) -> None:
        """A database call failed (the connection is gone or the server refused)."""
        with self._lock:
            if self._failed_since is None:
                self._failed_since = self._clock()

    def status(self) -> tuple[bool, str]:
        """(healthy, one line for the body of /healthz). Never names the server or the error:
        the endpoint has no authentication."""
        with self._lock:
            now = self._clock()
            last_ok, failed = self._last_ok, self._failed_since
        if last_ok is None:
            return False, "database unreachable: no contact yet"
        age = now - last_ok
        if failed is not None:
            return False, (f"database unreachable: a call failed {now - failed:.1f}s ago, "
                           f"last contact {age:.1f}s ago")
        if age > self.max_age_s:
            return False, (f"database unreachable: last contact {age:.1f}s ago (more than "
                           f"{self.max_age_s:g}s)")
        return True, f"ok: last database contact {age:.1f}s ago"

    def age(self) -> float:
        """Seconds since the last heartbeat reached the database (infinite before the first)."""
        with self._lock:
            last_ok = self._last_ok
        return float("inf") if last_ok is None else self._clock() - last_ok

    def __call__(self) -> bool:
        return self.status()[0]
