"""The connections of a parallel run: opened as steps need them, within a limit."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg

from mvgraph.refresh.stops import Conn, _message, log


class _Connections:
    """Connections for parallel steps: the run's own first; another is opened only when every
    open one is busy (so never more than the steps running at once), up to ``limit``. When the
    server refuses one, the run goes on with those it has, after one warning."""

    def __init__(self, first: Conn, dsn: str, limit: int,
                 setup: Callable[[Conn], None]) -> None:
        self._idle = [first]
        self._opened: list[Conn] = []
        self._count, self._limit = 1, limit
        self._dsn, self._setup = dsn, setup
        self._refusal: psycopg.Error | None = None
        self._cond = threading.Condition()

    def __enter__(self) -> _Connections:
        return self

    def __exit__(self, *exc: object) -> None:
        for conn in self._opened:
            conn.close()

    @contextmanager
    def connection(self) -> Iterator[Conn]:
        """A connection of its own for one step."""
        conn = self._take()
        try:
            yield conn
        finally:
            with self._cond:
                self._idle.append(conn)
                self._cond.notify()

    def _take(self) -> Conn:
        with self._cond:
            while not self._idle and self._count >= self._limit:
                self._cond.wait()  # a busy connection comes back when its step ends
            if self._idle:
                return self._idle.pop()
            self._count += 1
        try:
            conn = psycopg.connect(self._dsn, autocommit=True, application_name="mvgraph")
        except psycopg.Error as exc:
            self._refused(exc)
            return self._take()
        try:
            self._setup(conn)
        except psycopg.Error as exc:
            conn.close()
            self._refused(exc)
            return self._take()
        with self._cond:
            self._opened.append(conn)
        return conn

    def _refused(self, exc: psycopg.Error) -> None:
        with self._cond:
            self._count -= 1
            first, self._refusal = self._refusal is None, exc
            self._limit = self._count  # stop growing: go on with the connections open
            count = self._count
        if first:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else _message(exc)
            log.warning("cannot open another connection (%s); refreshing at most %d view(s) at "
                        "once", reason, count)
