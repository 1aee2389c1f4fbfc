"""One warning per outage: a loop that retries a lost database logs its first failure as a
warning, the retries after it at debug level, and one line when the database is back."""

from __future__ import annotations

import logging
import time
from typing import Any

__all__ = ["Outage"]


class Outage:
    """The state of one retry loop's connection (not thread-safe: one loop owns it)."""

    def __init__(self, logger: logging.Logger) -> None:
        self.log = logger
        self.retries = 0
        self.since: float | None = None

    def failed(self, message: str, *args: Any, **kwargs: Any) -> None:
        """A failed attempt: a warning the first time, debug after that."""
        if self.since is None:
            self.since = time.monotonic()
            self.log.warning(message + "; retrying with backoff (further retries are logged "
                             "at debug level)", *args, **kwargs)
        else:
            self.log.debug(message, *args, **kwargs)
        self.retries += 1

    def ok(self) -> None:
        """Connected: one line when it follows failures."""
        if self.since is not None:
            self.log.info("database available again after %.1fs (%d failed attempt%s)",
                             time.monotonic() - self.since, self.retries,
                             "" if self.retries == 1 else "s")
        self.since, self.retries = None, 0
