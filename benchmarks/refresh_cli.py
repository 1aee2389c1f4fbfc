"""The command line against a hand-kept psql script: the peers' 300-view workloads (issue 22).

300 trivial materialized views in the synthetic DAG (20 base tables of 3 rows, depth 8, seed 0:
``benchmarks.peers``' ``dag`` workload) are loaded into one database without mvgraph
(``plain``) and one managed database per source tree measured (``--baseline DIR`` adds the
other tree's, installed by its own ``mvgraph init``; every table tracked, as the peers
workload does). Each round times, in alternating order:

* ``psql -f refresh.sql`` on ``plain``: the 300 ``REFRESH MATERIALIZED VIEW`` statements in
  dependency order, with psql's defaults and with mvgraph's commit mode
  (``synchronous_commit=off``);
* per tree, ``mvgraph refresh 'public.*' --force -j 2`` (a new process, start-up included);
* per tree, the cascade: ``mvgraph refresh 'public.t3+' -j 2`` after a one-row ``UPDATE`` of
  ``t3`` (102 views downstream, every one refreshed), the peers' ``source+`` run;
* ``--force`` with one connection (this tree), informational.

The executor's own time (the report's ``elapsed_s``: the run without start-up and planning) is
reported per tree too, so that the execution side is seen apart from a new process's cost.

Goal (median of per-round ratios): CLI ``-j 2`` forced / ``psql -f`` <= 1.0. The cascade's goal
(/ ``dbt run --select source+`` <= 0.05) needs dbt: ``python -m benchmarks.peers``.
Run: ``python benchmarks/refresh_cli.py [--quick] [--baseline DIR]``.
"""

from __future__ import annotations

import compileall
import json
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import psycopg
from _common import (
    Result,
    Server,
    database,
    fmt_s,
    fmt_samples,
    load_script,
    median,
    parse_args,
    print_table,
    progress,
    psql,
    ratio_result,
    scratch_dir,
    server,
    server_note,
    spread,
    timed,
    tree_cli,
    trees,
)

from fixtures.synthetic import generate

GOAL = 1.0
CASCADE_TABLE = "public.t3"  # seed 0: 102 views downstream, as in the peers' workload


def main() -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "")
    rounds = 3 if args.quick else 7
    schema = generate(300, n_tables=20, depth=8, seed=0)
    sources = trees(args)
    # byte-compiled like an installed package (PYTHONDONTWRITEBYTECODE would otherwise make
    # every run compile mvgraph's modules again)
    for tree in sources.values():
        compileall.compile_dir(str(Path(tree) / "mvgraph"), quiet=1)
    with scratch_dir("mvgraph-refresh-cli-") as work, server() as srv, ExitStack() as stack:
        plain = stack.enter_context(database(srv, "plain", init=False))
        dbs = {key: stack.enter_context(database(srv, key, tree=tree))
               for key, tree in sources.items()}
        progress(f"loading 300 trivial views into {1 + len(dbs)} databases")
        load_script(plain, schema.sql(with_data=True), work, "plain.sql")
        for key, dsn in dbs.items():
            load_script(dsn, schema.sql(with_data=True), work, f"{key}.sql")
            tree_cli(sources[key], "track", "--all", "--dsn", dsn)
            tree_cli(sources[key], "refresh", "public.*", "--force", "--json", "--dsn", dsn)
        with psycopg.connect(dbs["this"], autocommit=True) as conn:
            order = [str(r[0]) for r in conn.execute(
                "SELECT name FROM mvgraph.job_step WHERE job_id = (SELECT max(id) FROM "
                "mvgraph.job) ORDER BY seq")]
        assert len(order) == 300, len(order)
        script = work / "refresh.sql"
        script.write_text("".join(f"REFRESH MATERIALIZED VIEW {n};\n" for n in order),
                          encoding="utf-8")
        psql(plain, file=script)
        counts: dict[str, int] = {}
        executor: dict[str, list[float]] = {}
        row_id = 0

        def cli(key: str, label: str, *extra: str, expect: int) -> float:
            seconds, proc = timed(lambda: tree_cli(sources[key], "refresh", *extra, "--json",
                                                   "--dsn", dbs[key]))
            report = json.loads(proc.stdout)
            assert report["status"] == "ok", report["status"]
            done = sum(s["action"] == "refreshed" for s in report["steps"])
            assert done == expect, (label, done, expect)
            counts[label] = done
            executor.setdefault(label, []).append(float(report["elapsed_s"]))
            return seconds

        def cascade(key: str) -> float:
            nonlocal row_id
            row_id += 1
            with psycopg.connect(dbs[key], autocommit=True) as conn:
                conn.execute(f"UPDATE {CASCADE_TABLE} SET v = v + 1 "  # a trusted fixture name
                             f"WHERE id = {row_id % 3 + 1}")
            return cli(key, f"{key}_cascade", f"{CASCADE_TABLE}+", "-j", "2", expect=102)

        runs = {
            "psql": lambda: timed(lambda: psql(plain, file=script))[0],
            "psql_off": lambda: timed(lambda: psql(
                plain, file=script, options="-c synchronous_commit=off"))[0],
            "this_j1": lambda: cli("this", "this_j1", "public.*", "--force", expect=300),
        }
        for key in dbs:
            runs[f"{key}_j2"] = (lambda k: lambda: cli(k, f"{k}_j2", "public.*", "--force", "-j",
                                                       "2", expect=300))(key)
            runs[f"{key}_cascade"] = (lambda k: lambda: cascade(k))(key)
        t: dict[str, list[float]] = {k: [] for k in runs}
        for rnd in range(rounds):
            keys = list(runs) if rnd % 2 == 0 else list(reversed(runs))
            for key in keys:
                t[key].append(runs[key]())
            progress(f"round {rnd + 1}: " + ", ".join(f"{k} {v[-1]:.3f} s"
                                                      for k, v in t.items()))

        syncs = {k: wal_syncs(srv, runs[k]) for k in ("psql", *(f"{k}_j2" for k in dbs))}
        for samples in executor.values():
            del samples[rounds:]  # those extra runs are no round's

        def ratios(a: list[float], b: list[float]) -> list[float]:
            return [x / y for x, y in zip(a, b, strict=True)]

        rows = [
            Result("psql -f, 300 REFRESH (psql defaults)", fmt_s(median(t["psql"]))),
            Result("psql -f, synchronous_commit=off", fmt_s(median(t["psql_off"]))),
            Result("mvgraph refresh --force -j 2 (CLI)", fmt_s(median(t["this_j2"]))),
            Result("  its executor (report elapsed_s)", fmt_s(median(executor["this_j2"]))),
            Result("mvgraph refresh --force (CLI, one connection)", fmt_s(median(t["this_j1"]))),
            Result(f"cascade: {CASCADE_TABLE}+ -j 2 after a one-row write "
                   f"({counts.get('this_cascade')} views)", fmt_s(median(t["this_cascade"]))),
            Result("  its executor (report elapsed_s)",
                   fmt_s(median(executor["this_cascade"]))),
            ratio_result("CLI -j 2 / psql -f", ratios(t["this_j2"], t["psql"]), GOAL,
                         quick=args.quick),
            Result("CLI -j 2 / psql -f (synchronous_commit=off)",
                   spread(ratios(t["this_j2"], t["psql_off"]))),
            Result("CLI -j 1 / psql -f", spread(ratios(t["this_j1"], t["psql"]))),
        ]
        if "baseline" in dbs:
            rows += [
                Result("baseline CLI -j 2 (before)", fmt_s(median(t["baseline_j2"]))),
                Result("baseline CLI -j 2 / psql -f",
                       spread(ratios(t["baseline_j2"], t["psql"]))),
                Result("CLI -j 2 / baseline CLI -j 2",
                       spread(ratios(t["this_j2"], t["baseline_j2"]))),
                Result("executor -j 2 / baseline's",
                       spread(ratios(executor["this_j2"], executor["baseline_j2"]))),
                Result("baseline cascade (before)", fmt_s(median(t["baseline_cascade"]))),
                Result("cascade / baseline cascade",
                       spread(ratios(t["this_cascade"], t["baseline_cascade"]))),
                Result("cascade executor / baseline's",
                       spread(ratios(executor["this_cascade"], executor["baseline_cascade"]))),
            ]
        notes = [f"ratios: median (range) of per-round ratios; {rounds} alternating rounds",
                 *(f"samples {k}: [{fmt_samples(v)}] s" for k, v in t.items()),
                 *(f"executor {k}: [{fmt_samples(v)}] s" for k, v in executor.items()),
                 "WAL fsyncs of one more run each (pg_stat_io; a REFRESH's commit is flushed "
                 "whatever synchronous_commit says, as it drops the old heap): "
                 + ", ".join(f"{k} {v}" for k, v in syncs.items()),
                 "300 MVs over 20 tables of 3 rows, all tracked; synthetic DAG depth 8 (seed 0)",
                 server_note(srv)]
        print_table("refresh_cli: mvgraph refresh (CLI) vs psql -f", rows, notes,
                    quick=args.quick)


def wal_syncs(srv: Server, run: Callable[[], float]) -> str:
    """The server's WAL fsyncs during one run (PostgreSQL 18's pg_stat_io), in words."""
    query = "SELECT sum(fsyncs) FROM pg_stat_io WHERE object = 'wal'"

    def count() -> int | None:
        time.sleep(1.1)  # the backends that ran have flushed their statistics
        try:
            with psycopg.connect(srv.uri, autocommit=True) as conn:
                conn.execute("SELECT pg_stat_force_next_flush()")
                row = conn.execute(query).fetchone()
        except psycopg.Error:
            return None
        return None if row is None or row[0] is None else int(str(row[0]))

    before = count()
    run()
    after = count()
    return "n/a" if before is None or after is None else str(after - before)


if __name__ == "__main__":
    main()
