"""Finding the DSN and opening connections; passwords never leave this module in output."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from mvgraph.db import embedded
from mvgraph.errors import ConnectionFailed, connection_cause
from mvgraph.redaction import remember, scrub

if TYPE_CHECKING:
    import psycopg


def resolve_dsn(dsn: str | None = None) -> str:
    """The DSN to use: the argument, then MVGRAPH_DSN, DATABASE_URL, then libpq defaults ("").

    The value ``embedded`` starts (or reuses) the embedded server and returns its URI. Its
    password is remembered: :func:`mvgraph.redaction.scrub` removes it from any text later.
    """
    chosen = dsn or os.environ.get("MVGRAPH_DSN") or os.environ.get("DATABASE_URL") or ""
    if chosen.strip() == embedded.EMBEDDED:
        chosen = embedded.start()
    remember(chosen)
    return chosen


def redact(dsn: str) -> str:
    """The DSN without its password, for messages and logs.

    >>> redact("postgresql://bob:secret@db/app")
    'user=bob dbname=app host=db'
    """
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable dsn>"
    params.pop("password", None)
    params.pop("sslpassword", None)
    return make_conninfo(**{k: str(v) for k, v in params.items()})


def connect(dsn: str | None = None, *, autocommit: bool = True,
            application_name: str = "mvgraph") -> psycopg.Connection[tuple[object, ...]]:
    """Open a connection to the resolved DSN.

    Raises:
        ConnectionFailed: the server cannot be reached; the message names the DSN without password.
    """
    import psycopg

    target = resolve_dsn(dsn)
    try:
        return psycopg.connect(target, autocommit=autocommit, application_name=application_name)
    except psycopg.OperationalError as exc:
        reason = connection_cause(str(exc))
        raise ConnectionFailed(scrub(
            f"cannot connect to {redact(target) or 'the default server'}: {reason}; "
            "check --dsn, MVGRAPH_DSN or use --embedded", target)) from None
    except psycopg.ProgrammingError as exc:  # libpq's text may quote the DSN, password and all
        raise ConnectionFailed(scrub(
            f"invalid DSN: {str(exc).splitlines()[0]}; give a URI such as "
            "postgresql://user@host/db or key=value pairs", target)) from None


@contextmanager
def session(target: str | psycopg.Connection[tuple[object, ...]] | None,
            setup: Callable[[psycopg.Connection[tuple[object, ...]]], object], *,
            application_name: str = "mvgraph") -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A ready autocommit connection: the given one (made autocommit), or a new one from a DSN
    (closed after); ``setup`` runs on it first (schema checks).

    Raises:
        UsageError: the given connection is inside a transaction.
    """
    import psycopg

    from mvgraph.errors import UsageError

    if isinstance(target, psycopg.Connection):
        if not target.autocommit:
            if target.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                raise UsageError("the connection is inside a transaction; commit first or pass "
                                 "an autocommit connection")
            target.autocommit = True
        setup(target)
        yield target
        return
    with connect(target, application_name=application_name) as conn:
        setup(conn)
        yield conn


def check_before_start(dsn: str | None) -> None:
    """For long-running processes (worker, daemon): fail at once, in one line, when the schema
    needs ``mvgraph init`` or the role cannot read it; a server not reachable yet is left to
    their retry loops.

    Raises:
        SchemaError, PermissionDenied: as :func:`mvgraph.db.install.require_schema`.
    """
    from mvgraph.db.install import require_schema

    try:
        conn = connect(dsn, application_name="mvgraph schema check")
    except ConnectionFailed:
        return
    with conn:
        require_schema(conn)
