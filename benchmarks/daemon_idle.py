"""Idle daemon: what ``mvgraph daemon`` costs when there is nothing to do.

Setup, per size (200 and 2,000 views; ``--quick``: the same sizes, shorter windows): tables of
a few hundred rows, ``mvgraph track --all`` (triggers), materialized views in families of ten
(five reading a table, three merging them, two merging those and one of the next family), all
refreshed once by mvgraph; 20 freshness targets (``schedule add V --target-lag '10 minutes'``)
on the families' top views and 20 hourly schedules (``--every '1 hour'``) on middle views. No
writes.

Per round: ``python -m mvgraph daemon`` (the tree's PYTHONPATH, one worker, defaults) starts,
is left to settle (its heartbeat row is there, no job is queued or running, then 10 s; quick:
5 s), then for a window of 60 s (quick: 15 s):

* the daemon process's CPU: utime + stime from ``/proc/PID/stat``, as a share of one core, and
  its RSS at the end;
* the CPU of its backends (every client backend of its database, ``pg_stat_activity`` pids ->
  ``/proc``), as a share of one core;
* the statements it sends per minute (``pg_stat_statements`` calls in its database; the
  server runs with it preloaded), with the top ones in the notes.

``--baseline DIR``: the old tree is measured too, in its own databases (initialised by its own
tree), rounds alternating. Goal (issue 22): the daemon process <= 0.3 % of a core at both
sizes (median of rounds).
Run: ``python benchmarks/daemon_idle.py [--quick] [--rounds N] [--baseline DIR]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from _common import (
    Result,
    Server,
    add_baseline,
    database,
    load_script,
    median,
    print_table,
    progress,
    server,
    server_note,
    tree_cli,
    tree_env,
    trees,
)

GOAL = 0.003  # share of one core
SIZES = (200, 2000)
LAG_SCHEDULES = 20
HOURLY_SCHEDULES = 20
ROWS = 200
CLK = os.sysconf("SC_CLK_TCK")

STATEMENTS = """
SELECT queryid, calls, left(regexp_replace(query, '\\s+', ' ', 'g'), 90)
  FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = %(db)s)
"""

BACKENDS = """
SELECT pid FROM pg_stat_activity WHERE datname = %(db)s AND backend_type = 'client backend'
"""

SETTLED = """
SELECT (SELECT count(*) FROM mvgraph.daemon) > 0
   AND NOT EXISTS (SELECT FROM mvgraph.job WHERE status IN ('queued', 'running'))
"""


@dataclass
class Round:
    """One idle window of one daemon."""

    variant: str
    size: int
    cpu: float  # share of one core, the daemon process
    server_cpu: float  # share of one core, its backends
    rss_mb: float
    per_min: float  # statements per minute
    top: list[tuple[float, str]] = field(default_factory=list)  # (per minute, statement)


def schema_sql(views: int) -> str:
    """Families of ten views over one small table each."""
    families = views // 10
    out: list[str] = ["CREATE SCHEMA bench;"]
    for f in range(families):
        out.append(f"CREATE TABLE bench.t{f} (id int PRIMARY KEY, g int NOT NULL, x int);")
        out.append(f"INSERT INTO bench.t{f} SELECT i, i % 17, i * 7 FROM "
                   f"generate_series(1, {ROWS}) i;")
    for f in range(families):
        for k in range(5):
            out.append(f"CREATE MATERIALIZED VIEW bench.a{f}_{k} AS SELECT g % {k + 2} AS k, "
                       f"count(*) AS n, sum(x)::bigint AS s FROM bench.t{f} GROUP BY 1;")
    for f in range(families):
        for j in range(3):
            parts = " UNION ALL ".join(f"SELECT k, n, s FROM bench.a{f}_{j + i}"
                                       for i in range(3))
            out.append(f"CREATE MATERIALIZED VIEW bench.c{f}_{j} AS SELECT k, sum(n)::bigint "
                       f"AS n, sum(s)::bigint AS s FROM ({parts}) u GROUP BY k;")
    for f in range(families):
        nxt = (f + 1) % families
        for m in range(2):
            parts = " UNION ALL ".join(f"SELECT k, n, s FROM bench.{r}" for r in
                                       (f"c{f}_{m}", f"c{f}_{m + 1}", f"c{nxt}_0"))
            out.append(f"CREATE MATERIALIZED VIEW bench.d{f}_{m} AS SELECT k, sum(n)::bigint "
                       f"AS n, sum(s)::bigint AS s FROM ({parts}) u GROUP BY k;")
    return "\n".join(out) + "\n"


def setup(dsn: str, tree: Path, views: int, work: Path) -> None:
    """Tables, views, tracking, one refresh of everything, the schedules."""
    load_script(dsn, schema_sql(views), work, f"idle_{views}.sql")
    tree_cli(tree, "track", "--all", "--dsn", dsn)
    tree_cli(tree, "refresh", "bench.*", "--dsn", dsn)
    families = views // 10
    lag = [f"bench.d{i % families}_{i // families}" for i in range(LAG_SCHEDULES)]
    hourly = [f"bench.c{i % families}_{i // families}" for i in range(HOURLY_SCHEDULES)]
    # the tree's own library, in one process (40 CLI processes took minutes on a loaded box)
    code = ("import sys, mvgraph\n"
            "dsn, lag, hourly = sys.argv[1], sys.argv[2].split(','), sys.argv[3].split(',')\n"
            "for v in lag: mvgraph.add_schedule(v, target_lag='10 minutes', dsn=dsn)\n"
            "for v in hourly: mvgraph.add_schedule(v, every='1 hour', dsn=dsn)\n")
    subprocess.run([sys.executable, "-c", code, dsn, ",".join(lag), ",".join(hourly)],
                   check=True, env=tree_env(tree), cwd=str(tree), capture_output=True)


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def rss_mb(pid: int) -> float:
    """Resident set size of a process, in MB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


Admin = psycopg.Connection[tuple[object, ...]]


def statements(admin: Admin, db: str) -> dict[int, tuple[int, str]]:
    """Calls and text of each statement recorded in a database."""
    return {int(str(q)): (int(str(c)), str(t)) for q, c, t in
            admin.execute(STATEMENTS, {"db": db}).fetchall()}


def backends(admin: Admin, db: str) -> dict[int, int]:
    """CPU ticks of each client backend of a database."""
    return {int(str(r[0])): cpu_ticks(int(str(r[0])))
            for r in admin.execute(BACKENDS, {"db": db}).fetchall()}


def one_round(variant: str, size: int, srv: Server, dsn: str, tree: Path, window_s: float,
              settle_s: float, log: Path) -> Round:
    """Start a daemon, let it settle, measure one idle window, stop it."""
    db = str(psycopg.conninfo.conninfo_to_dict(dsn)["dbname"])
    with ExitStack() as stack:
        out = stack.enter_context(open(log, "a", encoding="utf-8"))
        # cwd: ``python -m`` imports from the working directory before PYTHONPATH
        proc = subprocess.Popen([sys.executable, "-m", "mvgraph", "daemon", "--dsn", dsn],
                                stdout=out, stderr=out, env=tree_env(tree), cwd=str(tree))
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                deadline = time.monotonic() + 120
                while True:
                    if proc.poll() is not None:
                        raise RuntimeError(f"{variant}: the daemon exited ({log})")
                    row = conn.execute(SETTLED).fetchone()
                    if row is not None and row[0]:
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{variant}: the daemon did not settle in 120 s")
                    time.sleep(0.5)
            time.sleep(settle_s)
            with psycopg.connect(srv.uri, autocommit=True) as admin:
                s0, b0, t0 = statements(admin, db), backends(admin, db), cpu_ticks(proc.pid)
                w0 = time.monotonic()
                time.sleep(window_s)
                t1, elapsed = cpu_ticks(proc.pid), time.monotonic() - w0
                b1, s1 = backends(admin, db), statements(admin, db)
            rss = rss_mb(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    server_ticks = sum(b1[p] - b0.get(p, 0) for p in b1)  # new backends count from 0
    per_min = 60 / elapsed
    diffs = [((c - s0.get(q, (0, ""))[0]) * per_min, text) for q, (c, text) in s1.items()]
    diffs = sorted((d for d in diffs if d[0] > 0), reverse=True)
    return Round(variant, size, (t1 - t0) / CLK / elapsed, server_ticks / CLK / elapsed, rss,
                 sum(d[0] for d in diffs), diffs[:8])


def pct(v: float) -> str:
    return f"{v * 100:.2f} %"


def spread_pct(values: Sequence[float]) -> str:
    return f"{pct(median(values))} ({pct(min(values))}-{pct(max(values))})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="15 s windows, 1 round")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per variant and size")
    parser.add_argument("--sizes", default=None, help="comma-separated view counts")
    add_baseline(parser)
    args = parser.parse_args()
    window_s, settle_s = (15.0, 5.0) if args.quick else (60.0, 10.0)
    rounds_n = args.rounds or (1 if args.quick else 3)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else list(SIZES)
    variants = trees(args)
    rounds: list[Round] = []
    with tempfile.TemporaryDirectory(prefix="mvgraph-idle-") as tmp, \
            server({"shared_preload_libraries": "pg_stat_statements"}) as srv, ExitStack() as dbs:
        work = Path(tmp)
        srv.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        dsns: dict[tuple[str, int], str] = {}
        for size in sizes:
            for name, tree in variants.items():
                progress(f"{name}: {size} views, {LAG_SCHEDULES} target-lag and "
                         f"{HOURLY_SCHEDULES} hourly schedules ({tree})")
                dsn = dbs.enter_context(database(srv, f"idle_{name}_{size}", tree=tree))
                setup(dsn, tree, size, work)
                dsns[(name, size)] = dsn
        order = list(variants)
        for size in sizes:
            for i in range(rounds_n):
                for name in (order if i % 2 == 0 else order[::-1]):
                    progress(f"{size} views, round {i + 1}: {name}, {window_s:g} s idle")
                    r = one_round(name, size, srv, dsns[(name, size)], variants[name],
                                  window_s, settle_s, work / f"daemon_{name}_{size}.log")
                    progress(f"  daemon {pct(r.cpu)} of a core, backends {pct(r.server_cpu)}, "
                             f"RSS {r.rss_mb:.0f} MB, {r.per_min:.0f} statements/min")
                    rounds.append(r)
        load = os.getloadavg()
        rows: list[Result] = []
        notes = [f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
                 f"{rounds_n} round(s) of {window_s:g} s per variant and size after "
                 f"{settle_s:g} s settling", server_note(srv)]
        for size in sizes:
            for name in variants:
                rs = [r for r in rounds if r.variant == name and r.size == size]
                cpu = [r.cpu for r in rs]
                tag = f"[{name}] {size} views: "
                rows += [
                    Result(f"{tag}daemon CPU, share of a core", spread_pct(cpu),
                           f"<= {pct(GOAL)}", None if args.quick else median(cpu) <= GOAL),
                    Result(f"{tag}daemon CPU s per minute", f"{median(cpu) * 60:.2f} s"),
                    Result(f"{tag}its backends' CPU, share of a core",
                           spread_pct([r.server_cpu for r in rs])),
                    Result(f"{tag}statements per minute",
                           f"{median([r.per_min for r in rs]):.0f}"),
                    Result(f"{tag}daemon RSS", f"{median([r.rss_mb for r in rs]):.0f} MB"),
                ]
                notes.append(f"{tag}top statements per minute (last round): " + "; ".join(
                    f"{n:.0f}x {text}" for n, text in rs[-1].top[:6]))
        print_table("idle daemon: 200 / 2,000 tracked views, 20 target-lag + 20 hourly "
                    "schedules, no writes", rows, notes, args.quick)


if __name__ == "__main__":
    main()
