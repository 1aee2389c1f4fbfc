"""Steering a running rebuild, and how its steps end early (shared by the runner and the
steps, which see the runner only through :class:`Steps`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Protocol

import psycopg

from mvgraph.errors import MvgraphError

if TYPE_CHECKING:
    from mvgraph.rebuild.book import Book
    from mvgraph.rebuild.spec import RebuildStatement

Conn = psycopg.Connection[tuple[object, ...]]


class NothingToRebuild(Exception):
    """IF EXISTS, and the relation is not there: the job ends done, every step skipped."""


class Stopped(Exception):
    """The rebuild stops between steps or batches: ``how`` is cancel, suspend or lost."""

    def __init__(self, how: str) -> None:
        super().__init__(how)
        self.how = how


class RebuildFailed(MvgraphError):
    """A rebuild step failed; the message names the object and PostgreSQL's error."""


class Control:
    """What others asked of a running rebuild (the worker's heartbeat, a signal)."""

    def __init__(self) -> None:
        self.asked = ""
        self.cancel_query: Callable[[], None] | None = None
        self._lock = threading.Lock()

    def ask(self, how: str, *, interrupt: bool = False) -> None:
        with self._lock:
            if not self.asked or how == "cancel":
                self.asked = how
        if interrupt and self.cancel_query is not None:
            with suppress(Exception):
                self.cancel_query()

    # The worker's executor interface.
    def cancel(self) -> None:
        self.ask("cancel", interrupt=True)

    def suspend(self) -> None:
        self.ask("suspend")

    def stop(self, mode: Any, cancel_running: bool = False) -> None:
        self.ask("lost", interrupt=cancel_running)


class Steps(Protocol):
    """What the steps of a rebuild see of the run driving them."""

    conn: Conn
    job: int
    book: Book
    stmt: RebuildStatement
    control: Control

    def check(self) -> None:
        """Stop here when asked to (raises :class:`Stopped`)."""
