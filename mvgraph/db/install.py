"""Installing mvgraph in a database, and checking that it is installed.

:func:`init` (``mvgraph init``) is the only code that creates or upgrades mvgraph's schema and
event triggers; the demo and the embedded server run it for the user. Every other command and
library call runs :func:`require_schema` first, which only reads: a database without mvgraph,
or with another version of it, gets one line saying what to do, and nothing is created.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import errors as pgerrors

from mvgraph.db.migrate import Migration, current_version, latest_version, migrate
from mvgraph.db.queries import query
from mvgraph.errors import PermissionDenied, SchemaError, translated

Conn = psycopg.Connection[tuple[object, ...]]

#: mvgraph's event triggers: DDL end and start (definition changes, outside refreshes) and
#: sql_drop (jobs and schedules of dropped views).
EVENT_TRIGGERS = ("mvgraph_ddl_end", "mvgraph_ddl_start", "mvgraph_sql_drop")
_CREATOR = "run `mvgraph init` as a role that may create schemas"


@dataclass(frozen=True, slots=True)
class InitReport:
    """What :func:`init` did: the migrations it applied, the schema version now, the event
    triggers it installed, those still missing and why (None when none is)."""

    applied: tuple[Migration, ...]
    version: int
    triggers_installed: tuple[str, ...]
    triggers_missing: tuple[str, ...]
    triggers_reason: str | None = None

    def trigger_warning(self) -> str | None:
        """One line for the event triggers that are missing, or None."""
        if not self.triggers_missing:
            return None
        return (f"event triggers {', '.join(self.triggers_missing)} not installed "
                f"({self.triggers_reason}): refreshes done outside mvgraph and definition "
                "changes will not be noticed")


def require_schema(conn: Conn) -> int:
    """The installed schema version, when it is the one this mvgraph needs; reads only.

    Raises:
        SchemaError: not installed, older (run ``mvgraph init``) or newer (upgrade mvgraph).
        PermissionDenied: the role cannot read ``mvgraph.schema_version``.
    """
    have = _installed(conn)
    need = latest_version()
    if have != need:
        raise SchemaError(have, need, conn.info.dbname)
    return have


def init(conn: Conn) -> InitReport:
    """Install or upgrade mvgraph's schema (idempotent: nothing to do is cheap), then install
    its missing event triggers where the role may (a superuser).

    Raises:
        SchemaError: the schema is newer than this mvgraph.
        PermissionDenied: the role may not create or alter the schema.
    """
    have = _installed(conn)
    need = latest_version()
    if have > need:
        raise SchemaError(have, need, conn.info.dbname)
    try:
        applied = tuple(migrate(conn))
    except PermissionDenied as exc:
        verb = "install" if have == 0 else f"upgrade (version {have} to {need})"
        cause = str(exc).split("; ", 1)[0]
        raise PermissionDenied(f"role {conn.info.user} cannot {verb} the mvgraph schema "
                               f"({cause}); {_CREATOR}", exc.sqlstate) from None
    installed, missing, reason = _install_event_triggers(conn)
    return InitReport(applied, need, installed, missing, reason)


def present_event_triggers(conn: Conn) -> set[str]:
    """mvgraph's event triggers that are installed and enabled."""
    with translated():
        return {str(r[0]) for r in conn.execute(query("event_triggers")).fetchall()}


def _installed(conn: Conn) -> int:
    user = conn.info.user
    try:
        return current_version(conn)
    except PermissionDenied:
        raise PermissionDenied(f"role {user} cannot read mvgraph.schema_version; ask for GRANT "
                               f"USAGE ON SCHEMA mvgraph, SELECT ON mvgraph.schema_version TO "
                               f"{user}") from None


def _install_event_triggers(conn: Conn) -> tuple[tuple[str, ...], tuple[str, ...], str | None]:
    """Create the missing event triggers, each in its own transaction (a concurrent ``init``
    creating one too counts as success); returns (installed, still missing, why)."""
    missing = [t for t in EVENT_TRIGGERS if t not in present_event_triggers(conn)]
    reason: str | None = None
    with translated():
        for name in missing:
            try:
                with conn.transaction():
                    conn.execute(query(f"create_event_trigger_{name}"))
            except pgerrors.InsufficientPrivilege:
                reason = (f"creating event triggers needs a superuser; role {conn.info.user} "
                          "is not one")
                break
            except pgerrors.DuplicateObject:
                pass  # created meanwhile, or present but disabled (told below)
    now = present_event_triggers(conn)
    installed = tuple(t for t in missing if t in now)
    still = tuple(t for t in missing if t not in now)
    if still and reason is None:
        reason = "disabled: ALTER EVENT TRIGGER ... ENABLE as a superuser"
    return installed, still, reason
