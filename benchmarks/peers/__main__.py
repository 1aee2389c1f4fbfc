"""``python -m benchmarks.peers [--quick]``: mvgraph side by side with dbt, a hand-kept psql
script and pg_cron on one fresh PostgreSQL 15 server; writes ``benchmarks/results/<date>.json``,
a PNG chart and the table of ``benchmarks/README.md`` (between ``<!-- peers:begin -->`` and
``<!-- peers:end -->``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _common
import psycopg

from . import report, tools, workloads
from .pg import PG15, cluster, ensure_pg_cron

CRON_DB = "bench"
# The daemon runs as many jobs at once as schedules fall due at one instant, as pg_cron does
# (it starts every due job at once, up to cron.max_running_jobs = 32).

FULL = {"dag_views": 300, "dag_tables": 20, "dag_rounds": 3, "downstream": 102,
        "parse_views": 1600, "parse_rounds": 2, "startup_rounds": 10,
        "sched_views": 20, "sched_seconds": 60, "sched_minutes": 3, "daemon_workers": 20,
        "skip_tables": 20, "skip_rows": 200_000, "skip_rounds": 2}
QUICK = {"dag_views": 40, "dag_tables": 5, "dag_rounds": 2, "downstream": 14,
         "parse_views": 200, "parse_rounds": 2, "startup_rounds": 3,
         "sched_views": 20, "sched_seconds": 10, "sched_minutes": 1, "daemon_workers": 20,
         "skip_tables": 2, "skip_rows": 20_000, "skip_rounds": 2}


#: Where the published table lives (between the markers).
README = _common.REPO / "benchmarks" / "README.md"

def _version(cmd: list[str]) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, **tools.DBT_ENV})
    return (proc.stdout or proc.stderr).strip().splitlines()[0] if proc.returncode == 0 else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="small sizes, under 5 minutes")
    parser.add_argument("--only", default="",
                        help="comma-separated workloads (startup, parse, dag, skip, schedules); "
                        "for development: the README is not rewritten")
    parser.add_argument("--render", type=Path, default=None, metavar="JSON",
                        help="only redraw the chart and the README table from a results file")
    args = parser.parse_args()
    if args.render is not None:
        render(args.render)
        return
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    size = QUICK if args.quick else FULL
    started = time.perf_counter()
    now = datetime.now(UTC)
    results_dir = _common.REPO / "benchmarks" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    stem = now.strftime("%Y-%m-%d") + ("-quick" if args.quick else "") + (
        "-only-" + "-".join(sorted(only)) if only else "")
    json_path, png_path = results_dir / f"{stem}.json", results_dir / f"{stem}.png"

    not_installable: dict[str, str] = {}
    dbt = tools.install_dbt()
    if dbt.error:
        not_installable["dbt"] = dbt.error
    cron_error = ensure_pg_cron()
    if cron_error:
        not_installable["pg_cron"] = cron_error
    os.environ["MVGRAPH_BENCH_PGBIN"] = str(PG15)  # psql of the server's version

    results: dict[str, Any] = {
        "date": now.strftime("%Y-%m-%d %H:%M UTC"), "quick": args.quick, "sizes": size,
        "machine": f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}",
        "not_installable": not_installable, "workloads": {},
        "json": json_path.relative_to(_common.REPO).as_posix(),
    }
    w = results["workloads"]
    with _common.scratch_dir("mvgraph-peers-") as scratch, \
            cluster(None if cron_error else CRON_DB) as cl:
        workloads.create_db(cl, CRON_DB)
        with psycopg.connect(cl.dsn(CRON_DB), autocommit=True) as conn:
            settings = {n: str(conn.execute("SELECT current_setting(%s)", [n]).fetchall()[0][0])
                        for n in ("server_version", "fsync", "synchronous_commit",
                                  "shared_buffers", "max_connections")}
        results["server"] = settings
        results["versions"] = {
            "mvgraph": _version([_common.MVGRAPH_CLI, "--version"]),
            "postgresql": settings["server_version"],
            "psql": _version([str(PG15 / "psql"), "--version"]),
            **({"dbt-core": dbt.versions.get("core", "?"),
                "dbt-postgres": dbt.versions.get("postgres", "?")} if dbt.exe else {}),
        }
        _common.progress(f"server PostgreSQL {settings['server_version']} in {cl.root}; "
                         f"dbt {dbt.versions or dbt.error}; pg_cron {cron_error or 'preloaded'}")
        steps: dict[str, Callable[[], dict[str, Any]]] = {
            "startup": lambda: workloads.startup(dbt, size["startup_rounds"]),
            "parse": lambda: workloads.parse(cl, dbt, scratch, n_views=size["parse_views"],
                                             rounds=size["parse_rounds"]),
            "dag": lambda: workloads.dag_refresh(cl, dbt, scratch, n_views=size["dag_views"],
                                                 n_tables=size["dag_tables"],
                                                 rounds=size["dag_rounds"],
                                                 target_downstream=size["downstream"]),
            "skip": lambda: workloads.skip(cl, dbt, scratch, n_tables=size["skip_tables"],
                                           rows=size["skip_rows"], rounds=size["skip_rounds"]),
            "schedules": lambda: workloads.schedules(
                cl, CRON_DB, cron_error, scratch, n_views=size["sched_views"],
                seconds=size["sched_seconds"], minutes=size["sched_minutes"],
                workers=size["daemon_workers"]),
        }
        for name, step in steps.items():
            if only and name not in only:
                continue
            try:
                w[name] = step()
            except Exception as exc:  # recorded, and the other workloads still run
                w[name] = {"error": f"{type(exc).__name__}: {str(exc)[-1500:]}"}
                _common.progress(f"{name} FAILED: {w[name]['error']}")
        if w.get("schedules", {}).get("pg_cron_version"):
            results["versions"]["pg_cron"] = w["schedules"]["pg_cron_version"]
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    results["goals"] = report.judge(results, args.quick)
    results["notes"] = notes(results)
    chart_error = report.chart(results, png_path)
    if chart_error:
        results["chart"] = chart_error
    else:
        results["chart"] = png_path.relative_to(_common.REPO).as_posix()
    report.write_json(json_path, results)
    readme_ok = not only and report.write_readme(
        README, results, None if chart_error else png_path.relative_to(README.parent))
    print(report.markdown(results))
    print(f"written: {json_path}" + ("" if chart_error else f", {png_path}")
          + (", benchmarks/README.md" if readme_ok else " (README not updated: " + (
              "a quick run's numbers are not published" if args.quick else "--only given"
              if only else "its markers are missing") + ")")
          + f"; {results['elapsed_s']:.0f} s")


def render(json_path: Path) -> None:
    """Chart and README table again from a results file (no measuring)."""
    results = json.loads(json_path.read_text(encoding="utf-8"))
    png_path = json_path.with_suffix(".png")
    chart_error = report.chart(results, png_path)
    report.write_readme(README, results,
                        None if chart_error else png_path.resolve().relative_to(README.parent))
    print(report.markdown(results))


def notes(results: dict[str, Any]) -> list[str]:
    """What the table's numbers mean, under it."""
    w = results["workloads"]
    out = ["Every ratio is a median over rounds of side-by-side runs on the same server and "
           "database, the order rotating each round; all tools are new processes (CLIs).",
           "Each run is checked by counting the views whose relfilenode changed: "
           + _changed_note(w)]
    dag = w.get("dag", {})
    first = dag.get("dbt_first_run")
    if first:
        logged = "; its log shows refresh statements" if first.get("log_shows_refresh") else ""
        out.append(f"dbt on the existing views (loaded from SQL): first run refreshed "
                   f"{first['changed']} in place, recreated {first['recreated']} (REFRESH, as "
                   f"on an unchanged config){logged}.")
    if dag:
        out.append(f"Hand-kept script: {dag.get('script_statements')} REFRESH statements "
                   "ordered by a recursive query over pg_depend/pg_rewrite, `psql -f`, one "
                   f"connection, `{dag.get('script_options')}` (mvgraph's commit setting).")
    sched = w.get("schedules", {})
    if sched:
        ps = sched.get("per_second", {}).get("pg_cron", {})
        out.append(f"Schedules: mvgraph daemon --workers {sched.get('daemon_workers')}, "
                   "schedules with --restrict (refresh unconditionally, as pg_cron does). "
                   "Lateness = refresh start - slot (mvgraph: job_step.started_at - "
                   "schedule_slot.slot; pg_cron: job_run_details.start_time - the second or "
                   "minute it belongs to).")
        for label in ("per_second", "per_minute"):
            where = sched.get(label, {}).get("mvgraph", {}).get("where_p50_p99_s")
            if where:
                out.append(f"mvgraph's lateness {label.replace('_', ' ')}, p50 / p99: " + ", ".join(
                    f"{k} {_ms(v[0])} / {_ms(v[1])}" for k, v in where.items())
                    + " (fire: job submitted - slot; claim: job started - submitted; plan: "
                    "refresh step started - job started).")
        if "unsupported" in ps:
            out.append(f"pg_cron every second: not possible here ({ps['unsupported']}); "
                       "both tools are compared every minute instead, running at the same "
                       "time on separate copies of the 20 views.")
    for name, why in results.get("not_installable", {}).items():
        out.append(f"{name}: NOT INSTALLABLE: {why}")
    out.append(f"Server: {', '.join(f'{k}={v}' for k, v in results.get('server', {}).items())}; "
               f"machine: {results['machine']}; whole run {results.get('elapsed_s')} s.")
    return out


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.0f} ms"


def _changed_note(w: dict[str, Any]) -> str:
    parts = []
    dag = w.get("dag", {})
    for k, v in dag.get("force_changed", {}).items():
        parts.append(f"forced {k} {min(v)}-{max(v)}/{dag['views']}")
    for k, v in dag.get("cascade_changed", {}).items():
        parts.append(f"cascade {k} {min(v)}-{max(v)}/{dag['cascade_downstream']}")
    sk = w.get("skip", {})
    for k, v in sk.get("changed", {}).items():
        parts.append(f"heavy {k} {min(v)}-{max(v)}/{sk['views']}")
    return "; ".join(parts) + "."


if __name__ == "__main__":
    main()
