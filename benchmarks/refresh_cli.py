"""The command line against a hand-kept psql script: issue 10's "forced run" workload.

300 trivial materialized views in the synthetic DAG (20 base tables, depth 8) are loaded into
two identical databases on one fresh server: ``plain`` (no mvgraph) and ``managed``. Each round
times, side by side, in alternating order:

* ``psql -f refresh.sql`` on ``plain``: the 300 ``REFRESH MATERIALIZED VIEW`` statements in
  dependency order, psql's defaults (``synchronous_commit`` as the server has it), as a
  hand-kept script runs them; and the same with mvgraph's commit mode
  (``synchronous_commit=off``), the stricter comparison;
* ``mvgraph refresh 'public.*' --force -j 2`` on ``managed`` (a new process, start-up included);
* ``mvgraph refresh 'public.*'`` after an ``UPDATE`` of one base table (the cascade: only the
  views downstream of it are refreshed), informational.

Goal (median of per-round ratios): CLI ``-j 2`` forced / ``psql -f`` <= 1.0.
Run: ``python benchmarks/refresh_cli.py [--quick] [--baseline DIR]``. With ``--baseline``, the
same forced ``-j 2`` run of another mvgraph source tree (``DIR/mvgraph``, e.g. ``git archive
main mvgraph | tar -x -C DIR``) is timed in the same rounds, and every CLI runs as
``python -m mvgraph`` with its own ``PYTHONPATH`` (before / after in one run).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
from _common import (
    REPO,
    Result,
    database,
    fmt_s,
    fmt_samples,
    load_script,
    median,
    mvgraph_cli,
    print_table,
    progress,
    psql,
    ratio_result,
    scratch_dir,
    server,
    server_note,
    spread,
    timed,
)

import mvgraph
from fixtures.synthetic import generate

GOAL = 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 7")
    parser.add_argument("--baseline", help="another mvgraph source tree to time alongside")
    args = parser.parse_args()
    rounds = 3 if args.quick else 7
    schema = generate(300, n_tables=20, seed=2)
    # byte-compiled like an installed package (PYTHONDONTWRITEBYTECODE would otherwise make
    # every run compile mvgraph's modules again)
    for tree in (REPO, *([args.baseline] if args.baseline else [])):
        compileall.compile_dir(str(Path(tree) / "mvgraph"), quiet=1)
    with scratch_dir("mvgraph-refresh-cli-") as work, server() as srv, \
            database(srv, "plain", init=False) as plain, database(srv, "managed") as managed:
        progress("loading 300 trivial views into two databases")
        load_script(plain, schema.sql(with_data=True), work, "plain.sql")
        load_script(managed, schema.sql(with_data=True), work, "managed.sql")
        mvgraph_cli("refresh", "public.*", "--force", "--json", "--dsn", managed)  # migrations
        order = [str(st.name) for st in mvgraph.plan(managed, "public.*", force=True).steps]
        script = work / "refresh.sql"
        script.write_text("".join(f"REFRESH MATERIALIZED VIEW {n};\n" for n in order),
                          encoding="utf-8")
        psql(plain, file=script)
        table = schema.tables[0]

        def run_cli(tree: str | None, *extra: str) -> subprocess.CompletedProcess[str]:
            if tree is None and not args.baseline:
                return mvgraph_cli("refresh", "public.*", *extra, "--json", "--dsn", managed)
            env = {**os.environ, "PYTHONPATH": tree or str(REPO)}
            proc = subprocess.run([sys.executable, "-m", "mvgraph", "refresh", "public.*",
                                   *extra, "--json", "--dsn", managed],
                                  capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr[-2000:])
            return proc

        def cli(*extra: str, expect: int | None = None, tree: str | None = None) -> float:
            seconds, proc = timed(lambda: run_cli(tree, *extra))
            report = json.loads(proc.stdout)
            assert report["status"] == "ok", report["status"]
            done = sum(s["action"] == "refreshed" for s in report["steps"])
            assert expect is None or done == expect, (done, expect)
            counts[" ".join(extra) or "default"] = done
            return seconds

        def cascade() -> float:
            with psycopg.connect(managed, autocommit=True) as conn:
                conn.execute(f"UPDATE {table} SET v = v + 1")  # a trusted fixture name
            return cli()

        counts: dict[str, int] = {}
        runs = {
            "psql": lambda: timed(lambda: psql(plain, file=script))[0],
            "psql_off": lambda: timed(lambda: psql(
                plain, file=script, options="-c synchronous_commit=off"))[0],
            "cli_j2": lambda: cli("--force", "-j", "2", expect=len(order)),
            "cli_j1": lambda: cli("--force", expect=len(order)),
            "cascade": cascade,
        }
        if args.baseline:
            run_cli(args.baseline, "--force")  # compiles its modules once
            runs["base_j2"] = lambda: cli("--force", "-j", "2", expect=len(order),
                                          tree=args.baseline)
        t: dict[str, list[float]] = {k: [] for k in runs}
        for rnd in range(rounds):
            keys = list(runs) if rnd % 2 == 0 else list(reversed(runs))
            for key in keys:
                t[key].append(runs[key]())
            progress(f"round {rnd + 1}: " + ", ".join(f"{k} {v[-1]:.3f} s"
                                                      for k, v in t.items()))

        def ratios(a: str, b: str) -> list[float]:
            return [x / y for x, y in zip(t[a], t[b], strict=True)]

        rows = [
            Result("psql -f, 300 REFRESH (psql defaults)", fmt_s(median(t["psql"]))),
            Result("psql -f, synchronous_commit=off", fmt_s(median(t["psql_off"]))),
            Result("mvgraph refresh --force -j 2 (CLI)", fmt_s(median(t["cli_j2"]))),
            Result("mvgraph refresh --force (CLI, one connection)", fmt_s(median(t["cli_j1"]))),
            Result(f"mvgraph refresh after a write to {table} ({counts.get('default')} views)",
                   fmt_s(median(t["cascade"]))),
            ratio_result("CLI -j 2 / psql -f", ratios("cli_j2", "psql"), GOAL, quick=args.quick),
            Result("CLI -j 2 / psql -f (synchronous_commit=off)",
                   spread(ratios("cli_j2", "psql_off"))),
            Result("CLI -j 1 / psql -f", spread(ratios("cli_j1", "psql"))),
        ]
        if args.baseline:
            rows += [Result("baseline CLI -j 2 (before)", fmt_s(median(t["base_j2"]))),
                     Result("baseline CLI -j 2 / psql -f", spread(ratios("base_j2", "psql"))),
                     Result("CLI -j 2 / baseline CLI -j 2", spread(ratios("cli_j2", "base_j2")))]
        notes = [f"ratios: median (range) of per-round ratios; {rounds} alternating rounds",
                 *(f"samples {k}: [{fmt_samples(v)}] s" for k, v in t.items()),
                 "300 MVs over 20 tables of 3 rows; synthetic DAG depth 8 (seed 2)",
                 server_note(srv)]
        print_table("refresh_cli: mvgraph refresh (CLI) vs psql -f", rows, notes,
                    quick=args.quick)


if __name__ == "__main__":
    main()
