"""The workloads of issue 10, each measured side by side in rounds of alternating order.

Every function returns a plain dict (raw samples, per-round ratios, checks) for the JSON file;
``report.py`` turns them into verdicts, a table and a chart.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import _common
import psycopg

from fixtures import synthetic

from . import tools
from .pg import Cluster
from .tools import View, Workload

# ---- building workloads ----------------------------------------------------------------------


def dag(n_views: int, n_tables: int, depth: int = 8, seed: int = 0) -> Workload:
    """The fixture generator's DAG (``fixtures/synthetic.py``): trivial views, tables of 3 rows."""
    s = synthetic.generate(n_views, depth=depth, n_tables=n_tables, seed=seed)
    script = s.sql()
    tables_sql = "\n".join(line for line in script.splitlines()
                           if not line.startswith("CREATE MATERIALIZED VIEW"))
    bare = [t.removeprefix("public.") for t in s.tables]
    views = []
    for i, (name, reads) in enumerate(s.views):
        holes = [f"{{{k}}}" for k in range(len(reads))]
        views.append(View(name.removeprefix("public."),
                          synthetic._view_query(i, holes),
                          tuple(r.removeprefix("public.") for r in reads)))
    return Workload(bare, tables_sql, views)


def heavy(n_tables: int, rows: int) -> Workload:
    """``benchmarks/refresh_skip.py``'s schema: per table five aggregates of it, three merges
    of those, two merges crossing into the next family (10 views per table)."""
    tables = [f"b{f}" for f in range(n_tables)]
    setup = []
    for t in tables:
        setup += [f"CREATE TABLE {t} (id int PRIMARY KEY, g int NOT NULL, x int NOT NULL);",
                  f"INSERT INTO {t} SELECT i, i % 997, (i * 7919 + {t[1:]}) % 10007 "
                  f"FROM generate_series(1, {rows}) AS i;"]
    views: list[View] = []
    for f in range(n_tables):
        for k in range(5):
            views.append(View(f"a{f}_{k}", f"SELECT g % {50 * (k + 1)} AS k, count(*) AS n, "
                              f"sum(x)::bigint AS s FROM {{0}} WHERE x % {k + 2} <> 0 GROUP BY 1",
                              (f"b{f}",)))
    for f in range(n_tables):
        for j in range(3):
            parts = " UNION ALL ".join(f"SELECT k, n, s FROM {{{i}}}" for i in range(3))
            views.append(View(f"c{f}_{j}", f"SELECT k, sum(n)::bigint AS n, sum(s)::bigint AS s "
                              f"FROM ({parts}) AS u GROUP BY k",
                              tuple(f"a{f}_{j + i}" for i in range(3))))
    for f in range(n_tables):
        nxt = (f + 1) % n_tables
        for m in range(2):
            parts = " UNION ALL ".join(f"SELECT k, n, s FROM {{{i}}}" for i in range(3))
            views.append(View(f"d{f}_{m}", f"SELECT k % 10 AS k, sum(n)::bigint AS n, "
                              f"sum(s)::bigint AS s FROM ({parts}) AS u GROUP BY 1",
                              (f"c{f}_{m}", f"c{f}_{m + 1}", f"c{nxt}_0")))
    return Workload(tables, "\n".join(setup), views)


# ---- helpers ---------------------------------------------------------------------------------


def create_db(cl: Cluster, name: str) -> str:
    """CREATE DATABASE (the cluster is throwaway: never dropped); its DSN."""
    with psycopg.connect(cl.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return cl.dsn(name)


def load(dsn: str, work: Workload, scratch: Path, name: str) -> None:
    """Load the workload (one transaction), VACUUM ANALYZE, CHECKPOINT; mvgraph tracks it."""
    _common.load_script(dsn, work.sql(), scratch, f"{name}.sql")
    _common.psql(dsn, command="VACUUM ANALYZE")
    _common.psql(dsn, command="CHECKPOINT")
    _common.mvgraph_cli("init", "--dsn", dsn)
    _common.mvgraph_cli("track", "--all", "--dsn", dsn)


def mvgraph_run(dsn: str, *args: str) -> tuple[float, dict[str, Any]]:
    """``mvgraph refresh ARGS --json`` (a new process): seconds and its report."""
    seconds, proc = _common.timed(lambda: _common.mvgraph_cli("refresh", *args, "--json",
                                                              "--dsn", dsn))
    report: dict[str, Any] = json.loads(proc.stdout)
    if report.get("status") != "ok":
        raise RuntimeError(f"mvgraph refresh {args}: {report.get('status')}")
    return seconds, report


def checked(dsn: str, run: Callable[[], float]) -> tuple[float, int]:
    """Run a timed tool; seconds and how many views it refreshed in place (relfilenode)."""
    before = tools.relfilenodes(dsn)
    seconds = run()
    return seconds, tools.changed(before, tools.relfilenodes(dsn))


def rotate(names: Sequence[str], rnd: int) -> list[str]:
    """Round ``rnd``'s order: rotate by one each round, so everyone goes first in turn."""
    k = rnd % len(names)
    return [*names[k:], *names[:k]]


def write_row(dsn: str, table: str, row_id: int, column: str = "v") -> None:
    """Change one row of one base table (setup of a cascade, never timed)."""
    _common.psql(dsn, command=f"UPDATE {table} SET {column} = {column} + 1 WHERE id = {row_id}")


def ratios(top: Sequence[float], bottom: Sequence[float]) -> list[float]:
    """Per-round ratios."""
    return [a / b for a, b in zip(top, bottom, strict=True)]


# ---- workload 1-3: 300 trivial views (forced, cascade) ---------------------------------------


def dag_refresh(cl: Cluster, dbt: tools.Dbt, scratch: Path, *,
                n_views: int, n_tables: int, rounds: int, target_downstream: int) -> dict[str, Any]:
    """Forced refresh of every view (mvgraph -j 2, dbt --threads 2, psql -f) and the cascade
    after a one-row change of one base table (mvgraph 'tK+' vs dbt --select source:bench.tK+)."""
    work = dag(n_views, n_tables)
    # The base table whose downstream is closest to the 102 views.
    table = min(work.tables, key=lambda t: (abs(len(work.downstream(t)) - target_downstream), t))
    downstream = len(work.downstream(table))
    dsn = create_db(cl, "dag")
    _common.progress(f"dag: loading {n_views} views over {n_tables} tables (depth 8)")
    load(dsn, work, scratch, "dag")
    first = checked(dsn, lambda: mvgraph_run(dsn, "public.*", "-j", "2")[0])
    script = scratch / "refresh_all.sql"
    n_script = tools.write_refresh_script(dsn, script)
    like = f"-c synchronous_commit={tools.commit_mode(dsn)}"
    out: dict[str, Any] = {
        "views": n_views, "tables": n_tables, "depth": 8, "cascade_table": table,
        "cascade_downstream": downstream, "script_statements": n_script,
        "script_options": like, "mvgraph_first_run_changed": first[1],
    }
    project = None
    if dbt.exe:
        project = tools.write_dbt_project(scratch / "dbt_dag", work, host=cl.host,
                                          dbname="dag")
        before = tools.relfilenodes(dsn)
        seconds = tools.dbt(dbt.exe, project, "run", "--threads", "2")
        after = tools.relfilenodes(dsn)
        out["dbt_first_run"] = {"seconds": seconds, "changed": tools.changed(before, after),
                                "recreated": tools.recreated(before, after),
                                "log_shows_refresh": tools.dbt_log_has_refresh(project)}
        _common.progress(f"dag: dbt's first run over existing views: {out['dbt_first_run']}")
    force: dict[str, list[float]] = {"mvgraph": [], "dbt": [], "psql": []}
    force_changed: dict[str, list[int]] = {k: [] for k in force}
    cascade: dict[str, list[float]] = {"mvgraph": [], "dbt": []}
    cascade_changed: dict[str, list[int]] = {k: [] for k in cascade}
    row_id = 0
    runners: dict[str, Callable[[], float]] = {
        "mvgraph": lambda: mvgraph_run(dsn, "public.*", "--force", "-j", "2")[0],
        "psql": lambda: _common.timed(lambda: _common.psql(dsn, file=script, options=like))[0],
    }
    cascaders: dict[str, Callable[[], float]] = {
        "mvgraph": lambda: mvgraph_run(dsn, f"public.{table}+", "-j", "2")[0],
    }
    if dbt.exe and project is not None:
        exe, proj = dbt.exe, project
        runners["dbt"] = lambda: tools.dbt(exe, proj, "run", "--threads", "2")
        cascaders["dbt"] = lambda: tools.dbt(exe, proj, "run", "--threads", "2", "--select",
                                             f"source:bench.{table}+")
    for rnd in range(rounds):
        for name in rotate(list(runners), rnd):
            seconds, n = checked(dsn, runners[name])
            force[name].append(seconds)
            force_changed[name].append(n)
        for name in rotate(list(cascaders), rnd):
            row_id += 1
            write_row(dsn, table, row_id % 3 + 1)
            seconds, n = checked(dsn, cascaders[name])
            cascade[name].append(seconds)
            cascade_changed[name].append(n)
        _common.progress(f"dag round {rnd + 1}/{rounds}: force " + ", ".join(
            f"{k} {v[-1]:.2f} s ({force_changed[k][-1]})" for k, v in force.items() if v)
            + "; cascade " + ", ".join(f"{k} {v[-1]:.2f} s ({cascade_changed[k][-1]})"
                                       for k, v in cascade.items() if v))
    out.update(force_s={k: v for k, v in force.items() if v},
               force_changed={k: v for k, v in force_changed.items() if v},
               cascade_s={k: v for k, v in cascade.items() if v},
               cascade_changed={k: v for k, v in cascade_changed.items() if v})
    out["ratios"] = {"force_mvgraph_psql": ratios(force["mvgraph"], force["psql"])}
    if force["dbt"]:
        out["ratios"]["force_mvgraph_dbt"] = ratios(force["mvgraph"], force["dbt"])
        out["ratios"]["cascade_mvgraph_dbt"] = ratios(cascade["mvgraph"], cascade["dbt"])
    return out


# ---- workload 4-5: parsing 1,600 models ------------------------------------------------------


def parse(cl: Cluster, dbt: tools.Dbt, scratch: Path, *, n_views: int,
          rounds: int) -> dict[str, Any]:
    """Graph from files, one view per file: mvgraph cold (empty parse cache) and warm vs
    ``dbt parse --no-partial-parse`` of one model per file."""
    s = synthetic.generate(n_views)
    sql_dir = scratch / "parse_sql"
    files = s.sql_files(sql_dir, per_file=1, with_data=False)
    cache = scratch / "parse_cache"
    env = {"MVGRAPH_CACHE_DIR": str(cache)}
    work = dag(n_views, len(s.tables))
    project = None
    if dbt.exe:
        project = tools.write_dbt_project(scratch / "dbt_parse", work, host=cl.host,
                                          dbname="postgres")
    t: dict[str, list[float]] = {"mvgraph_cold": [], "mvgraph_warm": [], "dbt": []}
    nodes = 0

    def cold() -> None:
        nonlocal nodes
        shutil.rmtree(cache, ignore_errors=True)
        seconds, proc = _common.timed(lambda: _common.mvgraph_cli(
            "graph", "--from-sql", str(sql_dir), "-f", "json", env=env))
        t["mvgraph_cold"].append(seconds)
        nodes = len(json.loads(proc.stdout).get("nodes", []))
        t["mvgraph_warm"].append(_common.timed(lambda: _common.mvgraph_cli(
            "graph", "--from-sql", str(sql_dir), "-f", "json", env=env))[0])

    steps: dict[str, Callable[[], None]] = {"mvgraph": cold}
    if dbt.exe and project is not None:
        exe, proj = dbt.exe, project
        steps["dbt"] = lambda: t["dbt"].append(tools.dbt(exe, proj, "parse",
                                                         "--no-partial-parse"))
    for rnd in range(rounds):
        for name in rotate(list(steps), rnd):
            steps[name]()
        _common.progress(f"parse round {rnd + 1}/{rounds}: " + ", ".join(
            f"{k} {v[-1]:.2f} s" for k, v in t.items() if v))
    out: dict[str, Any] = {"views": n_views, "files": len(files), "graph_nodes": nodes,
                           "seconds": {k: v for k, v in t.items() if v}, "ratios": {}}
    if t["dbt"]:
        out["ratios"] = {"cold_mvgraph_dbt": ratios(t["mvgraph_cold"], t["dbt"]),
                         "warm_mvgraph_dbt": ratios(t["mvgraph_warm"], t["dbt"])}
    return out


# ---- workload 6: start-up --------------------------------------------------------------------


def startup(dbt: tools.Dbt, rounds: int) -> dict[str, Any]:
    """``mvgraph --version`` vs ``dbt --version`` (new processes), alternating."""
    env = {**os.environ, **tools.DBT_ENV}
    cmds = {"mvgraph": [_common.MVGRAPH_CLI, "--version"]}
    if dbt.exe:
        cmds["dbt"] = [str(dbt.exe), "--version"]
    t: dict[str, list[float]] = {k: [] for k in cmds}
    for rnd in range(rounds):
        for name in rotate(list(cmds), rnd):
            start = time.perf_counter()
            proc = subprocess.run(cmds[name], capture_output=True, text=True, env=env)
            seconds = time.perf_counter() - start
            if proc.returncode != 0:
                raise RuntimeError(f"{cmds[name]} exited {proc.returncode}: {proc.stderr}")
            t[name].append(seconds)
    out: dict[str, Any] = {"seconds": t, "ratios": {}}
    if dbt.exe:
        out["ratios"] = {"mvgraph_dbt": ratios(t["mvgraph"], t["dbt"])}
    _common.progress("startup: " + ", ".join(f"{k} {_common.median(v):.3f} s"
                                             for k, v in t.items()))
    return out


# ---- workload 7: schedules -------------------------------------------------------------------

SCHED_TABLE = "CREATE TABLE s (id int PRIMARY KEY, v int NOT NULL); INSERT INTO s VALUES (1, 1);"


def _views_sql(prefix: str, n: int) -> str:
    return "\n".join(f"CREATE MATERIALIZED VIEW public.{prefix}{i} AS "
                     f"SELECT id, v + {i} AS v FROM s;" for i in range(n))


SCHEDULE = """
INSERT INTO mvgraph.schedule (name, what, view_oid, view_name, behavior, kind, start_at, every,
                              every_text, cron, tz, source)
SELECT format('public.%%I', c.relname), '', c.oid, '', 'RESTRICT', %(kind)s,
       CASE WHEN %(kind)s = 'interval' THEN date_trunc('day', now()) END,
       CASE WHEN %(kind)s = 'interval' THEN interval '1 second' END,
       CASE WHEN %(kind)s = 'interval' THEN '1 second' END,
       CASE WHEN %(kind)s = 'cron' THEN '* * * * *' END, 'UTC', 'benchmark'
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND c.relkind = 'm' AND c.relname = ANY(%(names)s)
"""


def add_schedules(dsn: str, kind: str, names: Sequence[str]) -> None:
    """One ``INSERT ... SELECT`` into ``mvgraph.schedule`` (as ``mvgraph schedule add VIEW
    --every '1 second' --restrict`` or ``--cron '* * * * *' --restrict`` would, per view)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        n = conn.execute(SCHEDULE, {"kind": kind, "names": list(names)}).rowcount
    if n != len(names):
        raise RuntimeError(f"{n} schedules added for {len(names)} views")


def percentile(samples: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (None without samples)."""
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


class Daemon:
    """``mvgraph daemon --workers N`` on a database, stopped by SIGTERM (pid-targeted)."""

    def __init__(self, dsn: str, workers: int, log: Path) -> None:
        # the cap of jobs running at once over all workers (default 4) is raised to the workers,
        # as pg_cron runs up to cron.max_running_jobs (32) at once
        subprocess.run([_common.MVGRAPH_CLI, "settings", "max_concurrent_jobs", str(workers),
                        "--dsn", dsn], check=True, capture_output=True)
        self._log = log.open("w", encoding="utf-8")
        self.proc = subprocess.Popen([_common.MVGRAPH_CLI, "daemon", "--workers", str(workers),
                                      "--dsn", dsn], stdout=self._log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()


MVGRAPH_RUNS = """
SELECT s.view_name, ss.slot, ss.status, js.started_at, js.status,
       j.submitted_at, j.started_at
  FROM mvgraph.schedule s
  JOIN mvgraph.schedule_slot ss ON ss.schedule_id = s.id AND NOT ss.manual
  LEFT JOIN mvgraph.job j ON j.id = ss.job_id
  LEFT JOIN mvgraph.job_step js ON js.job_id = ss.job_id AND js.mv = s.view_oid
 WHERE ss.slot >= %(lo)s AND ss.slot < %(hi)s
"""

CRON_RUNS = """
SELECT r.command, r.start_time, r.status
  FROM cron.job_run_details r
 WHERE r.start_time >= %(lo)s AND r.start_time < %(hi)s + interval '59 seconds'
"""


def _slots(lo: datetime, hi: datetime, every: timedelta) -> list[datetime]:
    out, t = [], lo
    while t < hi:
        out.append(t)
        t += every
    return out


def _mvgraph_side(dsn: str, lo: datetime, hi: datetime, every: timedelta,
                  names: Sequence[str]) -> dict[str, Any]:
    """Lateness (refresh start - slot), missed and duplicate runs from mvgraph's tables."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(MVGRAPH_RUNS, {"lo": lo, "hi": hi}).fetchall()
    runs: dict[tuple[str, datetime], list[datetime]] = {}
    skipped = 0
    parts: dict[str, list[float]] = {"fire": [], "claim": [], "plan": []}
    for view, slot, status, started, step_status, submitted, job_started in rows:
        if status != "fired":
            skipped += 1
            continue
        if started is not None and step_status == "done":
            runs.setdefault((str(view).removeprefix("public."), slot), []).append(started)
            if submitted is not None and job_started is not None:
                parts["fire"].append((submitted - slot).total_seconds())
                parts["claim"].append((job_started - submitted).total_seconds())
                parts["plan"].append((started - job_started).total_seconds())
    expected = [(v, s) for v in names for s in _slots(lo, hi, every)]
    late = [(min(runs[k]) - k[1]).total_seconds() for k in expected if k in runs]
    return {"where_p50_p99_s": {k: [percentile(v, 50), percentile(v, 99)]
                                for k, v in parts.items()},
            "expected": len(expected), "ran": sum(1 for k in expected if k in runs),
            "missed": sum(1 for k in expected if k not in runs), "skipped_slots": skipped,
            "duplicates": sum(len(v) - 1 for v in runs.values()),
            "lateness_p50_s": percentile(late, 50), "lateness_p99_s": percentile(late, 99),
            "lateness_max_s": max(late, default=None), "lateness_s": late}


def _cron_side(dsn: str, lo: datetime, hi: datetime, every: timedelta,
               names: Sequence[str]) -> dict[str, Any]:
    """The same from pg_cron's cron.job_run_details (slot = start time truncated)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(CRON_RUNS, {"lo": lo, "hi": hi}).fetchall()
    step = every.total_seconds()
    runs: dict[tuple[str, datetime], list[datetime]] = {}
    failed = 0
    for command, start, status in rows:
        if status != "succeeded":
            failed += 1
            continue
        view = str(command).rsplit(".", 1)[-1]
        epoch = start.timestamp()
        slot = datetime.fromtimestamp(epoch - epoch % step, UTC)
        runs.setdefault((view, slot), []).append(start)
    expected = [(v, s) for v in names for s in _slots(lo, hi, every)]
    late = [(min(runs[k]) - k[1]).total_seconds() for k in expected if k in runs]
    return {"expected": len(expected), "ran": sum(1 for k in expected if k in runs),
            "missed": sum(1 for k in expected if k not in runs), "failed_runs": failed,
            "duplicates": sum(len(runs[k]) - 1 for k in expected if k in runs),
            "lateness_p50_s": percentile(late, 50), "lateness_p99_s": percentile(late, 99),
            "lateness_max_s": max(late, default=None), "lateness_s": late}


def _wait_until(t: datetime) -> None:
    while (left := (t - datetime.now(UTC)).total_seconds()) > 0:
        time.sleep(min(left, 1.0))


def _ceil(t: datetime, step: timedelta) -> datetime:
    s = step.total_seconds()
    epoch = t.timestamp()
    return datetime.fromtimestamp(epoch - epoch % s + (s if epoch % s else 0), UTC)


def schedules(cl: Cluster, cron_db: str, cron_error: str | None, scratch: Path, *,
              n_views: int, seconds: int, minutes: int, workers: int) -> dict[str, Any]:
    """20 views refreshed every second (mvgraph daemon; pg_cron where it can) and every minute
    (both, at the same time, each its own 20 identical views)."""
    out: dict[str, Any] = {"views": n_views, "daemon_workers": workers}
    cron_dsn = cl.dsn(cron_db)
    cron_version = None
    if cron_error is None:
        with psycopg.connect(cron_dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
            row = conn.execute("SELECT extversion FROM pg_extension "
                               "WHERE extname = 'pg_cron'").fetchone()
            cron_version = str(row[0]) if row else None
    out["pg_cron_version"] = cron_version
    _common.psql(cron_dsn, command=SCHED_TABLE)
    _common.mvgraph_cli("init", "--dsn", cron_dsn)

    # -- every second: mvgraph daemon; pg_cron only if its version parses '1 seconds'.
    _common.psql(cron_dsn, command=_views_sql("ms", n_views) + _views_sql("cs", n_views))
    second = timedelta(seconds=1)
    per_second: dict[str, Any] = {"seconds": seconds}
    cron_seconds_ok = False
    if cron_error is None:
        try:
            with psycopg.connect(cron_dsn, autocommit=True) as conn:
                for i in range(n_views):
                    conn.execute("SELECT cron.schedule(%s, '1 seconds', %s)",
                                 [f"cs{i}", f"REFRESH MATERIALIZED VIEW public.cs{i}"])
            cron_seconds_ok = True
        except psycopg.Error as exc:
            per_second["pg_cron"] = {"unsupported": f"pg_cron {cron_version}: "
                                                    f"{str(exc).strip()} (seconds need 1.5+)"}
    else:
        per_second["pg_cron"] = {"unsupported": cron_error}
    add_schedules(cron_dsn, "interval", [f"ms{i}" for i in range(n_views)])
    _common.progress(f"schedules: {n_views} views every second for {seconds} s "
                     f"(mvgraph daemon{', pg_cron' if cron_seconds_ok else ''})")
    before = tools.relfilenodes(cron_dsn)
    daemon = Daemon(cron_dsn, workers, scratch / "daemon_1s.log")
    start = datetime.now(UTC)
    lo = _ceil(start + timedelta(seconds=3), second)
    hi = lo + timedelta(seconds=seconds)
    try:
        _wait_until(hi + timedelta(seconds=3))
    finally:
        daemon.stop()
        if cron_seconds_ok:
            _common.psql(cron_dsn, command="SELECT cron.unschedule(jobid) FROM cron.job")
    after = tools.relfilenodes(cron_dsn)
    ms = [f"ms{i}" for i in range(n_views)]
    per_second["mvgraph"] = _mvgraph_side(cron_dsn, lo, hi, second, ms)
    per_second["mvgraph"]["views_refreshed"] = sum(
        1 for v in ms if after[v][1] != before[v][1])
    if cron_seconds_ok:
        cs = [f"cs{i}" for i in range(n_views)]
        per_second["pg_cron"] = _cron_side(cron_dsn, lo, hi, second, cs)
        per_second["pg_cron"]["views_refreshed"] = sum(
            1 for v in cs if after[v][1] != before[v][1])
    with psycopg.connect(cron_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM mvgraph.schedule")
    out["per_second"] = per_second

    # -- every minute: both tools at the same time, each on its own copy of the views.
    if cron_error is None and minutes > 0:
        minute = timedelta(minutes=1)
        _common.psql(cron_dsn, command=_views_sql("mm", n_views) + _views_sql("cm", n_views))
        add_schedules(cron_dsn, "cron", [f"mm{i}" for i in range(n_views)])
        with psycopg.connect(cron_dsn, autocommit=True) as conn:
            for i in range(n_views):
                conn.execute("SELECT cron.schedule(%s, '* * * * *', %s)",
                             [f"cm{i}", f"REFRESH MATERIALIZED VIEW public.cm{i}"])
        before = tools.relfilenodes(cron_dsn)
        daemon = Daemon(cron_dsn, workers, scratch / "daemon_1m.log")
        lo = _ceil(datetime.now(UTC) + timedelta(seconds=8), minute)
        hi = lo + minutes * minute
        _common.progress(f"schedules: {n_views} + {n_views} views every minute, mvgraph and "
                         f"pg_cron at once, slots {lo:%H:%M}..{hi - minute:%H:%M}")
        try:
            _wait_until(hi - minute + timedelta(seconds=15))
        finally:
            daemon.stop()
            _common.psql(cron_dsn, command="SELECT cron.unschedule(jobid) FROM cron.job")
        after = tools.relfilenodes(cron_dsn)
        mm, cm = [f"mm{i}" for i in range(n_views)], [f"cm{i}" for i in range(n_views)]
        per_minute: dict[str, Any] = {"minutes": minutes,
                      "mvgraph": _mvgraph_side(cron_dsn, lo, hi, minute, mm),
                      "pg_cron": _cron_side(cron_dsn, lo, hi, minute, cm)}
        per_minute["mvgraph"]["views_refreshed"] = sum(
            1 for v in mm if after[v][1] != before[v][1])
        per_minute["pg_cron"]["views_refreshed"] = sum(
            1 for v in cm if after[v][1] != before[v][1])
        out["per_minute"] = per_minute
    return out


# ---- workload 8: 200 heavy views, one table changed ------------------------------------------


def skip(cl: Cluster, dbt: tools.Dbt, scratch: Path, *, n_tables: int,
         rows: int, rounds: int) -> dict[str, Any]:
    """mvgraph's default refresh (unchanged views skipped) after a one-row write vs dbt run and
    the hand-kept script, which refresh everything."""
    work = heavy(n_tables, rows)
    dsn = create_db(cl, "skip")
    _common.progress(f"skip: loading {n_tables} tables of {rows:,} rows and "
                     f"{len(work.views)} views")
    load(dsn, work, scratch, "skip")
    mvgraph_run(dsn, "public.*", "-j", "2")  # first run: mvgraph refreshes everything once
    script = scratch / "skip_all.sql"
    n_script = tools.write_refresh_script(dsn, script)
    like = f"-c synchronous_commit={tools.commit_mode(dsn)}"
    runners: dict[str, Callable[[], float]] = {
        "mvgraph": lambda: mvgraph_run(dsn, "public.*", "-j", "2")[0],
        "psql": lambda: _common.timed(lambda: _common.psql(dsn, file=script, options=like))[0],
    }
    if dbt.exe:
        project = tools.write_dbt_project(scratch / "dbt_skip", work, host=cl.host,
                                          dbname="skip")
        exe = dbt.exe
        tools.dbt(exe, project, "run", "--threads", "2")  # warm-up (parse, partial parse file)
        runners["dbt"] = lambda: tools.dbt(exe, project, "run", "--threads", "2")
    t: dict[str, list[float]] = {k: [] for k in runners}
    n_changed: dict[str, list[int]] = {k: [] for k in runners}
    row_id = 0
    for rnd in range(rounds):
        for name in rotate(list(runners), rnd):
            row_id += 1
            write_row(dsn, "b0", row_id, "x")
            seconds, n = checked(dsn, runners[name])
            t[name].append(seconds)
            n_changed[name].append(n)
        _common.progress(f"skip round {rnd + 1}/{rounds}: " + ", ".join(
            f"{k} {v[-1]:.2f} s ({n_changed[k][-1]})" for k, v in t.items()))
    out: dict[str, Any] = {"tables": n_tables, "rows": rows, "views": len(work.views),
                           "stale_after_write": len(work.downstream("b0")),
                           "script_statements": n_script, "script_options": like,
                           "seconds": t, "changed": n_changed,
                           "ratios": {"mvgraph_psql": ratios(t["mvgraph"], t["psql"])}}
    if "dbt" in t:
        out["ratios"]["mvgraph_dbt"] = ratios(t["mvgraph"], t["dbt"])
    return out


__all__ = ["dag_refresh", "parse", "schedules", "skip", "startup"]
