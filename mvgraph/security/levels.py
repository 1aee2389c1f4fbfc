"""Privilege levels, after pg_background's grant and revoke functions.

``viewer`` sees job and schedule status and progress (its own jobs); ``operator`` also
submits, cancels, suspends and resumes its own jobs and manages its own schedules (on views it
may refresh); ``worker`` has what a worker or daemon login needs; ``admin`` sees and steers
everything, changes settings and grants levels. A level is a set of GRANTs made by
``mvgraph.grant_privileges`` (a new level replaces the old one); ``mvgraph.revoke_privileges``
takes them all back, at once for sessions already open. Without a grant a role sees nothing
of mvgraph.
"""

from __future__ import annotations

from enum import StrEnum

import psycopg

from mvgraph.db.queries import query
from mvgraph.errors import UsageError, translated

Conn = psycopg.Connection[tuple[object, ...]]


class Level(StrEnum):
    """The privilege levels, as ``mvgraph.privilege.level`` spells them."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    WORKER = "worker"
    ADMIN = "admin"


def _commands(conn: Conn, run: str, params: dict[str, object]) -> list[str]:
    """Run a grant or revoke function; the commands it ran, from its INFO messages."""
    ran: list[str] = []

    def keep(diag: psycopg.errors.Diagnostic) -> None:
        text = diag.message_primary or ""
        if text.startswith("Executed command: "):
            ran.append(text.removeprefix("Executed command: "))

    conn.add_notice_handler(keep)
    try:
        with translated():
            conn.execute(query(run), params)
    finally:
        conn.remove_notice_handler(keep)
    return ran


def grant(conn: Conn, role: str, level: Level | str) -> list[str]:
    """Give ``role`` a level (replacing any other); returns the GRANT and REVOKE commands run.

    Raises:
        UsageError: no such level.
        PermissionDenied: the caller is not an mvgraph administrator.
    """
    try:
        chosen = Level(str(level).lower())
    except ValueError:
        raise UsageError(f"no level {level!r}; use viewer, operator, worker or admin") from None
    return _commands(conn, "grant_privileges", {"role": role, "level": chosen.value})


def revoke(conn: Conn, role: str) -> list[str]:
    """Take every mvgraph privilege from ``role``; returns the REVOKE commands run."""
    return _commands(conn, "revoke_privileges", {"role": role})


def levels(conn: Conn) -> dict[str, str]:
    """Each role granted a level, and its level."""
    with translated():
        return {str(r[0]): str(r[1]) for r in conn.execute(query("privilege_levels"))}
