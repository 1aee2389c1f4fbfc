"""Lock modes: how refreshes keep out of each other's way (the ``lock_mode`` setting).

``view`` (the default; BDR's ``dml``): each step takes its view's advisory lock, so no two
processes refresh one view at once; runs on disjoint views proceed side by side. ``global``
(BDR's ``on``): a run also holds one advisory lock for the whole database from its first step
to its end, so one refresh runs at a time, across processes and machines. ``off``: no advisory
lock at all (safe only when a single process refreshes).

All of them are PostgreSQL advisory locks: they belong to the session that took them and go
with it, however its process ended (unlike BDR's global locks, which outlive a node that went
down).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from enum import StrEnum

import psycopg

from mvgraph.db.queries import query
from mvgraph.errors import LockTimeout, UsageError, translate

Conn = psycopg.Connection[tuple[object, ...]]

LOCK_NAMESPACE = 0x6D76  # "mv": high 32 bits of every refresh lock key (bigint form)
GLOBAL_LOCK_KEY = LOCK_NAMESPACE << 32  # oid 0 (InvalidOid): no view's key is this one
CONNECTION_CHECK = "1s"  # client_connection_check_interval while holding the global lock

# The settings named after BDR's, and the PostgreSQL parameter each becomes (which also judges
# the value).
TIMEOUT_SETTINGS = {
    "global_lock_timeout": "lock_timeout",
    "global_lock_statement_timeout": "statement_timeout",
    "global_lock_idle_timeout": "idle_in_transaction_session_timeout",
}


class LockMode(StrEnum):
    """What a refresh locks (the ``lock_mode`` setting)."""

    VIEW = "view"
    GLOBAL = "global"
    OFF = "off"


# BDR's ddl_locking words (dml, on, off) next to ours.
_WORDS = {"view": LockMode.VIEW, "dml": LockMode.VIEW, "global": LockMode.GLOBAL,
          "on": LockMode.GLOBAL, "off": LockMode.OFF}
_JOB_NAME = re.compile(r"^mvgraph job (\d+)(?: step \d+)?$")


def parse_lock_mode(text: str | None) -> LockMode:
    """A lock mode from ours or BDR's words, any case; empty or None is the default.

    >>> parse_lock_mode("DML"), parse_lock_mode(" on "), parse_lock_mode(None)
    (<LockMode.VIEW: 'view'>, <LockMode.GLOBAL: 'global'>, <LockMode.VIEW: 'view'>)

    Raises:
        UsageError: any other word.
    """
    word = (text or "view").strip().lower() or "view"
    try:
        return _WORDS[word]
    except KeyError:
        raise UsageError(f"{text!r} is not a valid lock_mode; use view (or dml), global (or on) "
                         "or off") from None


def job_of(application_name: str) -> int | None:
    """The job a session runs, from the application name a run sets (``mvgraph job N``, and
    ``mvgraph job N step S`` in a step's transaction).

    >>> job_of("mvgraph job 17"), job_of("mvgraph job 17 step 2"), job_of("psql")
    (17, 17, None)
    """
    match = _JOB_NAME.match(application_name.strip())
    return int(match.group(1)) if match else None


def describe_holder(conn: Conn, row: tuple[object, ...] | None) -> str:
    """Who holds a lock, in words: ``pid N (mvgraph job J, user U) refreshing X``, from a row of
    (pid, application name, user); the job is read from the session's application name or
    found by its pid, what it refreshes from its running steps (else its statement)."""
    if row is None:
        return "another session (gone by now)"
    pid, app, user = int(str(row[0])), str(row[1]), str(row[2])
    job, doing = job_of(app), None
    try:
        found = conn.execute(query("job_activity"), {"job": job, "pid": pid}).fetchone()
    except psycopg.Error:  # the job tables may be out of this role's sight: say what is known
        found = None
    if found is not None:
        job, doing = int(str(found[0])), str(found[1])
    who = f"mvgraph job {job}" if job is not None else app
    return f"pid {pid} ({who}, user {user})" + (f" refreshing {doing}" if doing else "")


def global_holder(conn: Conn) -> str:
    """Who holds the global refresh lock, in words (see ``describe_holder``)."""
    try:
        row = conn.execute(query("global_lock_holder"), {"key": GLOBAL_LOCK_KEY}).fetchone()
    except psycopg.Error:
        row = None
    return describe_holder(conn, row)


@contextmanager
def global_lock(conn: Conn, timeout: str, restore_timeout: str) -> Iterator[None]:
    """Hold the global refresh lock (session level) on ``conn``: waited for at most
    ``timeout`` (0: without end), then the session's lock timeout is ``restore_timeout`` again;
    released on exit (or when the session ends).

    Raises:
        LockTimeout: the wait timed out; the message names the holder.
    """
    try:
        conn.execute(query("set_lock_timeout"), {"value": timeout})
        try:
            conn.execute(query("lock_global"), {"key": GLOBAL_LOCK_KEY})
        finally:
            conn.execute(query("set_lock_timeout"), {"value": restore_timeout})
    except psycopg.errors.LockNotAvailable as exc:
        raise LockTimeout(
            f"the global refresh lock (lock_mode global) is held by {global_holder(conn)}; "
            f"waited {timeout}. Retry later or raise global_lock_timeout", exc.sqlstate) from None
    except psycopg.Error as exc:
        raise translate(exc) from exc
    try:
        yield
    finally:
        if not conn.closed:
            with suppress(psycopg.Error):
                conn.execute(query("unlock_global"), {"key": GLOBAL_LOCK_KEY})
