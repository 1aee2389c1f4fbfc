"""The tools side by side: the mvgraph CLI, dbt (its own virtual environment), a hand-kept psql
script, and what every run must show: the views whose ``relfilenode`` changed."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import _common
import psycopg

DBT_PINS = ("dbt-core==1.10.*", "dbt-postgres==1.9.*")

#: No network: no usage statistics, no version check (the proxy catches anything else).
DBT_ENV = {
    "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    "DBT_VERSION_CHECK": "false",
    "DO_NOT_TRACK": "1",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "",
}


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/mvgraph-bench/peers`` (``~/.cache`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mvgraph-bench" / "peers"


# ---- views of a workload ---------------------------------------------------------------------


@dataclass(frozen=True)
class View:
    """A materialized view: bare name (schema ``public``), a query whose ``{0}``, ``{1}``...
    stand for the relations it reads, and those relations (bare names)."""

    name: str
    query: str
    reads: tuple[str, ...]


@dataclass
class Workload:
    """Base tables (their setup SQL) and views in dependency order, all in schema ``public``."""

    tables: list[str]
    tables_sql: str
    views: list[View] = field(default_factory=list)

    def sql(self) -> str:
        """Tables, then every view (populated), in dependency order."""
        out = [self.tables_sql]
        for v in self.views:
            query = v.query.format(*(f"public.{r}" for r in v.reads))
            out.append(f"CREATE MATERIALIZED VIEW public.{v.name} AS {query};")
        return "\n".join(out) + "\n"

    def downstream(self, table: str) -> set[str]:
        """Every view reading ``table``, directly or not."""
        found: set[str] = set()
        for v in self.views:
            if table in v.reads or found.intersection(v.reads):
                found.add(v.name)
        return found


# ---- relfilenodes: did the tool do the work? ------------------------------------------------


def relfilenodes(dsn: str) -> dict[str, tuple[int, int]]:
    """``name -> (oid, relfilenode)`` of every materialized view in schema public."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT c.relname, c.oid::bigint, c.relfilenode::bigint "
                            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                            "WHERE c.relkind = 'm' AND n.nspname = 'public'").fetchall()
    return {str(r[0]): (int(r[1]), int(r[2])) for r in rows}


def changed(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> int:
    """Views refreshed in place between two snapshots: same oid, new relfilenode."""
    return sum(1 for k, (oid, node) in after.items()
               if k in before and before[k][0] == oid and before[k][1] != node)


def recreated(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> int:
    """Views whose oid changed or that appeared (dropped and created again)."""
    return sum(1 for k, (oid, _) in after.items() if k not in before or before[k][0] != oid)


# ---- hand-kept psql script -------------------------------------------------------------------

#: The PostgreSQL wiki's "Refresh All Materialized Views" idea, written anew: every view's
#: longest path from the bottom over pg_depend (through pg_rewrite), then REFRESH by depth.
REFRESH_ORDER = """
WITH RECURSIVE dep AS (
    SELECT DISTINCT rw.ev_class AS reader, d.refobjid AS read
      FROM pg_depend d
      JOIN pg_rewrite rw ON d.classid = 'pg_rewrite'::regclass AND rw.oid = d.objid
     WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid <> rw.ev_class
), walk (oid, depth) AS (
    SELECT c.oid, 0 FROM pg_class c WHERE c.relkind = 'm'
    UNION ALL
    SELECT dep.reader, walk.depth + 1 FROM walk JOIN dep ON dep.read = walk.oid
)
SELECT format('REFRESH MATERIALIZED VIEW %I.%I;', n.nspname, c.relname)
  FROM (SELECT oid, max(depth) AS depth FROM walk GROUP BY oid) w
  JOIN pg_class c ON c.oid = w.oid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'm' AND n.nspname = 'public'
 ORDER BY w.depth, c.relname
"""


def write_refresh_script(dsn: str, path: Path) -> int:
    """Write the hand-kept script (REFRESH of every view, dependency order); its length."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        lines = [str(r[0]) for r in conn.execute(REFRESH_ORDER).fetchall()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


def commit_mode(dsn: str) -> str:
    """The synchronous_commit mvgraph refreshes with (its setting); the script gets the same."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT coalesce((SELECT value FROM mvgraph.setting "
                           "WHERE key = 'synchronous_commit'), "
                           "current_setting('synchronous_commit'))").fetchone()
    return str(row[0]) if row else "on"


# ---- dbt -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dbt:
    """dbt in its own virtual environment: the executable, its versions, or why it is missing."""

    exe: Path | None
    versions: dict[str, str]
    error: str | None = None


def install_dbt(progress: bool = True) -> Dbt:
    """Create ``<cache>/venv`` with dbt pinned (once); report what could not be installed."""
    venv = cache_dir() / "venv"
    exe = venv / "bin" / "dbt"
    if not exe.exists():
        if progress:
            _common.progress(f"installing {' '.join(DBT_PINS)} into {venv} (once)")
        venv.parent.mkdir(parents=True, exist_ok=True)
        steps = [["python3", "-m", "venv", str(venv)],
                 [str(venv / "bin" / "pip"), "install", "-q", *DBT_PINS]]
        for step in steps:
            proc = subprocess.run(step, capture_output=True, text=True)
            if proc.returncode != 0:
                return Dbt(None, {}, f"`{' '.join(step)}` failed: "
                           f"{proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
    proc = subprocess.run([str(exe), "--version"], capture_output=True, text=True,
                          env={**os.environ, **DBT_ENV})
    if proc.returncode != 0:
        return Dbt(None, {}, f"dbt --version exited {proc.returncode}: {proc.stderr[-300:]}")
    versions = dict(re.findall(r"-\s*(core|postgres):\s*([0-9][^\s]*)", proc.stdout))
    versions.setdefault("core", (re.findall(r"installed:\s*([0-9][^\s]*)", proc.stdout)
                                 or ["?"])[0])
    return Dbt(exe, versions)


def _ref(name: str, tables: Sequence[str]) -> str:
    if name in tables:
        return "{{ source('bench', '" + name + "') }}"
    return "{{ ref('" + name + "') }}"


def write_dbt_project(directory: Path, work: Workload, *, host: str, dbname: str,
                      threads: int = 2) -> Path:
    """A dbt project: one model per view (``materialized_view``, ``ref()``/``source()``)."""
    models = directory / "models"
    models.mkdir(parents=True, exist_ok=True)
    (directory / "dbt_project.yml").write_text(
        "name: bench\nversion: '1.0'\nconfig-version: 2\nprofile: bench\n"
        "model-paths: [models]\n"
        "flags:\n  send_anonymous_usage_stats: false\n  version_check: false\n",
        encoding="utf-8")
    (directory / "profiles.yml").write_text(
        "bench:\n  target: dev\n  outputs:\n    dev:\n      type: postgres\n"
        f"      host: '{host}'\n      port: 5432\n      user: postgres\n      password: ''\n"
        f"      dbname: {dbname}\n      schema: public\n      threads: {threads}\n",
        encoding="utf-8")
    sources = "".join(f"      - name: {t}\n" for t in work.tables)
    (models / "sources.yml").write_text(
        f"version: 2\nsources:\n  - name: bench\n    schema: public\n    tables:\n{sources}",
        encoding="utf-8")
    for v in work.views:
        body = v.query.format(*(_ref(r, work.tables) for r in v.reads))
        (models / f"{v.name}.sql").write_text(
            "{{ config(materialized='materialized_view') }}\n" + body + "\n", encoding="utf-8")
    return directory


def dbt(exe: Path, project: Path, *args: str) -> float:
    """Run ``dbt ARGS`` in ``project`` (a new process); wall-clock seconds. Raises on failure."""
    env = {**os.environ, **DBT_ENV, "DBT_PROFILES_DIR": str(project)}
    start = time.perf_counter()
    proc = subprocess.run([str(exe), *args, "--project-dir", str(project)], cwd=project,
                          capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"dbt {' '.join(args)} exited {proc.returncode}:\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-1000:]}")
    return seconds


def dbt_log_has_refresh(project: Path) -> bool:
    """Whether dbt's last log shows it issued ``refresh materialized view`` statements."""
    log = project / "logs" / "dbt.log"
    return log.exists() and "refresh materialized view" in log.read_text(
        encoding="utf-8", errors="replace").lower()
