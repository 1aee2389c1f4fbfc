"""The error hierarchy. Every error a user can cause is an MvgraphError with a one-line message.

psycopg is imported only where its errors are translated (importing this module stays cheap).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from mvgraph.redaction import scrub

if TYPE_CHECKING:
    import psycopg


class MvgraphError(Exception):
    """Root of every error mvgraph raises on purpose. ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class UsageError(MvgraphError):
    """The command line or a call was wrong (bad option, unknown selector syntax)."""

    exit_code = 2


class TrackingError(MvgraphError):
    """Change tracking cannot be trusted (e.g. a wal-mode publication mvgraph did not make, or
    that was altered): the message names the object and the fix."""


class ConnectionFailed(MvgraphError):
    """The database could not be reached."""


class DatabaseError(MvgraphError):
    """PostgreSQL refused a statement."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class LockTimeout(DatabaseError):
    """A lock could not be taken within the lock timeout."""


class StatementTimeout(DatabaseError):
    """A statement ran longer than the statement timeout, or was cancelled."""


class PermissionDenied(DatabaseError):
    """The role lacks a privilege."""


class SchemaError(MvgraphError):
    """mvgraph's schema in the database is missing, older or newer than this mvgraph needs.

    Only ``mvgraph init`` installs or upgrades it; every other command and library call raises
    this instead of creating anything. ``installed`` is the version found (0: not installed),
    ``needed`` the one this mvgraph was written for.
    """

    def __init__(self, installed: int, needed: int, database: str | None = None) -> None:
        where = f" in database {database}" if database else ""
        init = "run `mvgraph init` as a role that may create schemas"
        if installed == 0:
            text = f"the mvgraph schema is not installed{where}; {init}"
        elif installed < needed:
            text = (f"the mvgraph schema{where} is at version {installed} while this mvgraph "
                    f"needs {needed}; {init}")
        else:
            text = (f"the mvgraph schema{where} is at version {installed}, newer than this "
                    f"mvgraph knows ({needed}); upgrade mvgraph")
        super().__init__(text)
        self.installed = installed
        self.needed = needed
        self.database = database

    def __reduce__(self) -> tuple[object, ...]:  # survive worker processes (pickle)
        return type(self), (self.installed, self.needed, self.database)


class SqlParseError(MvgraphError):
    """A SQL file could not be parsed; names the file, line and statement.

    ``line`` is the line where the statement starts; ``at``, when known, the (line, column)
    of the error itself, which the message then names as ``file:line:column``."""

    def __init__(self, message: str, path: str = "<sql>", line: int = 0,
                 statement: str = "", at: tuple[int, int] | None = None) -> None:
        where = f"{path}:{line}" if at is None else f"{path}:{at[0]}:{at[1]}"
        shown = ""
        if statement:
            shown = (f" in: {statement}" if at is None or at[0] == line
                     else f" in the statement of line {line}: {statement}")
        super().__init__(f"{where}: {message}{shown}")
        self.message = message
        self.path = path
        self.line = line
        self.statement = statement
        self.at = at

    def __reduce__(self) -> tuple[object, ...]:  # survive worker processes (pickle)
        return (type(self), (self.message, self.path, self.line, self.statement, self.at),
                self.__dict__)


class SqlEncodingError(SqlParseError):
    """A SQL file is not text in the expected encoding; ``offset`` is the bad byte's offset.

    ``binary`` is True when the file holds NUL bytes (not SQL at all)."""

    offset: int = 0
    binary: bool = False


class SqlLoadErrors(MvgraphError):
    """Some SQL files or statements failed to load; ``errors`` holds each failure, and ``str()``
    is one ``file:line: message`` line per failure."""

    def __init__(self, errors: list[SqlParseError], files: int = 0,
                 warnings: list[str] | None = None) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors
        self.files = files  # how many files were read
        self.warnings = warnings or []  # binary files skipped in folders


class CycleError(MvgraphError):
    """The definitions contain a dependency cycle; ``cycle`` lists it in order. ``needed_by``
    names a relation outside the cycle that reads ``via``, a member (directly or not)."""

    def __init__(self, cycle: list[str], needed_by: str | None = None,
                 via: str | None = None) -> None:
        path = " -> ".join([*cycle, cycle[0]]) if cycle else "?"
        head = f"{needed_by} depends on {via}, which is in a " if needed_by and via else ""
        super().__init__(f"{head}dependency cycle: {path}; break it by changing one of these "
                         "definitions")
        self.cycle = cycle
        self.needed_by = needed_by


class SqlCycleError(SqlParseError):
    """Definitions in SQL files read each other in a cycle; named at the first definition's
    file and line, ``cycle`` lists the names in order."""

    cycle: list[str]


class NotFound(MvgraphError):
    """No such object: an unknown name, a selector matching nothing, or a relation of the wrong
    kind (a table where a materialized view is needed). Exit code 4 everywhere."""

    exit_code = 4


class UnknownRelation(NotFound):
    """A name that is neither in the graph nor in the catalog, or not of the kind needed."""


class JobTimeout(MvgraphError, TimeoutError):
    """A job did not end within the time a caller waited (``mvgraph wait --timeout``: exit
    124, as timeout(1)); the job goes on. ``job_id`` and ``status`` say which and where."""

    exit_code = 124

    def __init__(self, job_id: int, status: object, waited_s: float) -> None:
        super().__init__(f"job {job_id} is still {status} after {waited_s:g}s; wait longer "
                         f"(--timeout) or cancel it with `mvgraph cancel {job_id}`")
        self.job_id = job_id
        self.status = status
        self.waited_s = waited_s

    def __reduce__(self) -> tuple[object, ...]:
        return type(self), (self.job_id, self.status, self.waited_s)


class NoJobRunner(MvgraphError):
    """A caller waits for a job that nothing alive would run: it is queued (or its worker's
    lease ran out) and no worker or daemon with workers is running (``mvgraph wait``: exit
    69, sysexits' EX_UNAVAILABLE); the job stays queued."""

    exit_code = 69

    def __init__(self, job_id: int, status: object) -> None:
        super().__init__(f"job {job_id} is {status} and no worker is running: start `mvgraph "
                         "worker` or `mvgraph daemon` (the job stays queued)")
        self.job_id = job_id
        self.status = status

    def __reduce__(self) -> tuple[object, ...]:
        return type(self), (self.job_id, self.status)


class UndefinedReference(MvgraphError):
    """A definition reads a relation defined nowhere (raised in strict mode)."""


class SelectorError(UsageError):
    """A graph selector expression is malformed."""


def connection_cause(text: str) -> str:
    """The cause of a libpq connection failure on one line: the reason each attempt gave (after
    its ``failed:``), and libpq's hint, without tabs, newlines or a FATAL prefix.

    >>> connection_cause('connection failed: connection to server at "h", port 5 failed: '
    ...                  'Connection refused\\n\\tIs the server running on that host?')
    'Connection refused (is the server running on that host?)'
    >>> connection_cause('connection to server at "h" failed: FATAL:  password authentication '
    ...                  'failed for user "bob"')
    'password authentication failed for user "bob"'
    """
    causes: list[str] = []
    hints: list[str] = []
    for raw in text.splitlines():
        line = re.sub(r"\s+", " ", raw).strip()
        if not line:
            continue
        if line.startswith("Is the server") or line.startswith("HINT:"):
            hints.append(line.removeprefix("HINT:").strip())
            continue
        cause = line.rsplit("failed: ", 1)[-1] if "failed: " in line else line
        cause = re.sub(r"^(FATAL|ERROR): *", "", cause)
        if cause not in causes:
            causes.append(cause)
    out = "; ".join(causes) or "unknown error"
    if hints:
        first = hints[0]
        out += f" ({first[0].lower()}{first[1:]})"
    return out


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def translate(exc: psycopg.Error) -> MvgraphError:
    """Turn a psycopg error into the matching MvgraphError with a one-line message (without
    passwords: libpq's texts may quote a DSN)."""
    import psycopg
    from psycopg import errors as pgerrors

    diag = getattr(exc, "diag", None)
    sqlstate = getattr(exc, "sqlstate", None)
    primary = scrub((diag.message_primary if diag is not None else None)
                    or _first_line(str(exc)))
    if isinstance(exc, pgerrors.LockNotAvailable):
        return LockTimeout(f"{primary}; another session holds the lock, retry or raise the "
                           "lock timeout", sqlstate)
    if isinstance(exc, pgerrors.QueryCanceled):
        return StatementTimeout(f"{primary}; raise the statement timeout or retry", sqlstate)
    if isinstance(exc, pgerrors.InsufficientPrivilege):
        hint = diag.message_hint if diag is not None else None
        if hint and "mvgraph grant" in hint:  # mvgraph's own level check names the grant
            return PermissionDenied(f"{primary}; {hint}", sqlstate)
        level = _level_needed(primary)
        if level:
            return PermissionDenied(f"{primary}; this needs mvgraph's {level} level: an mvgraph "
                                    f"administrator runs `mvgraph grant ROLE --{level}`", sqlstate)
        return PermissionDenied(f"{primary}; ask the owner for the privilege", sqlstate)
    if isinstance(exc, psycopg.OperationalError) and sqlstate is None:
        return ConnectionFailed(scrub(f"cannot connect: {connection_cause(str(exc))}; check "
                                      "--dsn or MVGRAPH_DSN"))
    return DatabaseError(primary, sqlstate)


_ADMIN_OBJECTS = {"grant_privileges", "revoke_privileges", "put_setting", "pause_all_schedules",
                  "privilege"}
_WORKER_OBJECTS = {"claim_job", "claim_jobs", "claim_jobs_start", "job_heartbeat",
                   "submit_for_schedules", "schedule_ends", "schedule_run_ended",
                   "waiting_slots", "drop_waiting_slot", "daemon_register", "daemon_heartbeat",
                   "daemon_remove", "fire_slots", "close_schedule_ends", "record_slots",
                   "last_clock_slots"}
_VIEWER_OBJECTS = {"schema mvgraph", "schema scheduler", "job", "job_step", "jobs", "schedule",
                   "schedule_slot", "setting", "mv_state", "daemon", "schema_version", "changes",
                   "change_log", "write_log", "table_mode", "pg_task", "job_result"}
_DENIED = re.compile(r"^permission denied for (schema|table|view|function|procedure) (\w+)$")


def _level_needed(message: str) -> str | None:
    """The mvgraph level a "permission denied" on one of mvgraph's objects asks for."""
    m = _DENIED.match(message)
    if not m:
        return None
    kind, name = m[1], m[2]
    if name in _ADMIN_OBJECTS:
        return "admin"
    if name in _WORKER_OBJECTS:
        return "worker"
    if f"{kind} {name}" in _VIEWER_OBJECTS or (kind != "schema" and name in _VIEWER_OBJECTS):
        return "viewer"
    if kind in ("function", "procedure"):
        return "operator"
    return None


@contextmanager
def translated() -> Iterator[None]:
    """Context manager that re-raises psycopg errors as MvgraphError (the one place it happens)."""
    import psycopg

    try:
        yield
    except psycopg.Error as exc:
        raise translate(exc) from exc
