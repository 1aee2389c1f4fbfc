"""Housekeeping after runs: jobs whose owner died, retention of finished jobs, and compaction
of the change log. Failures here never fail a run: they are one warning, and a later run
tries again."""

from __future__ import annotations

import logging

import psycopg

from mvgraph.db.queries import query
from mvgraph.errors import MvgraphError
from mvgraph.jobs import store

log = logging.getLogger("mvgraph")
Conn = psycopg.Connection[tuple[object, ...]]


def compact(conn: Conn) -> bool:
    """Drop change rows every reader has seen, when no refresh or compaction is running
    (the ``compact`` query explains the lock); False when it was left to a later run."""
    from mvgraph.refresh.executor import repeatable_read

    with repeatable_read(conn):
        row = conn.execute(query("compact")).fetchone()
    return bool(row and row[0])  # False: refreshes or another compaction are running


def housekeeping(conn: Conn, job_id: int | None = None) -> None:
    """Reap jobs without a live owner, purge old finished jobs, compact the change log."""
    try:
        store.reap(conn)
        store.purge(conn)
        compact(conn)
    except (psycopg.Error, MvgraphError) as exc:
        log.warning("housekeeping after job %s failed (a later run retries it): %s",
                    job_id, exc)
