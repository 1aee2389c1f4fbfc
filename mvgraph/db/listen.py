"""Waiting for notifications (LISTEN) without waking up while none arrives.

psycopg's ``Connection.notifies(timeout=...)`` wakes every 0.1 s while it waits (so that Ctrl-C
is seen); a daemon that waits all day spends most of its idle CPU there. :func:`wait_notifies`
sleeps in ``select`` on the connection's socket instead and reads what arrived.
"""

from __future__ import annotations

import select

import psycopg
from psycopg import Notify


def wait_notifies(conn: psycopg.Connection[tuple[object, ...]], timeout: float) -> list[Notify]:
    """The notifications received so far (also those that arrived during another statement on
    this connection), else those arriving within ``timeout`` seconds (possibly none)."""
    got = list(conn.notifies(timeout=0))
    if got:
        return got
    ready, _, _ = select.select([conn.fileno()], [], [], max(timeout, 0.0))
    return list(conn.notifies(timeout=0)) if ready else []
