"""Server outages: telling a lost session from a failed statement, and waiting for the server
to answer again.

A restart (``pg_ctl stop -m fast``, a failover, a crash) ends every session: a statement in
flight fails with SQLSTATE 57P01 ``admin_shutdown`` ("terminating connection due to
administrator command"), 57P02 ``crash_shutdown`` or 57P03 ``cannot_connect_now``, or with no
SQLSTATE at all when the socket simply closed; an idle session finds out at its next
statement. None of these is the job's fault: the job goes back to the queue. A statement
timeout or any other error the server raised in a session that is still open is the job's
outcome.
"""

from __future__ import annotations

import threading
import time

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from mvgraph.errors import ConnectionFailed

Conn = psycopg.Connection[tuple[object, ...]]
SHUTDOWN_STATES = frozenset({"57P01", "57P02", "57P03"})  # admin, crash, cannot connect now
PING_EVERY_S = 0.25  # while the server is away, how often a wait asks whether it is back
PING_TIMEOUT_S = 2  # connect_timeout of a ping that names none (an unreachable host)


def session_lost(exc: BaseException, conn: Conn | None = None) -> bool:
    """Whether ``exc`` means the session (or the server) went away rather than the statement
    failing: a shutdown SQLSTATE (57P01-57P03), a connection exception (class 08), an
    OperationalError without SQLSTATE (the socket closed), a connection that could not be
    opened, or ``conn`` closed or broken since."""
    if isinstance(exc, ConnectionFailed):
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate in SHUTDOWN_STATES or (sqlstate or "").startswith("08"):
        return True
    if isinstance(exc, psycopg.OperationalError) and sqlstate is None:
        return True
    return conn is not None and (conn.closed or conn.broken)


def _ping_target(dsn: str | None) -> bytes:
    from mvgraph.db.connect import resolve_dsn

    target = resolve_dsn(dsn)
    try:
        params = conninfo_to_dict(target)
    except psycopg.ProgrammingError:
        return target.encode()
    params.setdefault("connect_timeout", PING_TIMEOUT_S)
    return make_conninfo(**{k: str(v) for k, v in params.items()}).encode()


def server_answers(dsn: str | None) -> bool:
    """Whether the server accepts connections now (libpq's ``PQping``: no login, no query)."""
    try:
        return bool(pq.PGconn.ping(_ping_target(dsn)) == pq.Ping.OK)
    except (psycopg.Error, ConnectionFailed):
        return False


def wait_to_retry(dsn: str | None, backoff_s: float, stopping: threading.Event) -> bool:
    """Sleep before retrying a connection: ``backoff_s`` at most, but only until the server
    answers again when it did not answer at the start (a refused connection costs the server
    nothing, so an outage ends for the caller as soon as it ends for the server; a server
    that answers and still refuses the caller gets the whole backoff). Returns True when the
    wait ended because the server came back."""
    deadline = time.monotonic() + backoff_s
    away = not server_answers(dsn)
    while not stopping.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if stopping.wait(min(PING_EVERY_S, left)):
            return False
        if away and server_answers(dsn):
            return True
    return False
