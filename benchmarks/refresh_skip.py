"""Skipping unchanged views: the cascade after one base-table write, against its physical limit.

Schema: 20 base tables ``b0 .. b19`` of 200,000 rows, 200 materialized views in 20 families of
10. Family ``f`` has five ``a{f}_k`` views aggregating ``b{f}`` (a full scan and a GROUP BY),
three ``c{f}_j`` views merging three of the family's ``a`` views, and two ``d{f}_m`` views
merging two ``c`` views of the family and one of the next family (so a change crosses
families). The same schema and data go into two databases: ``managed`` (``mvgraph track --all``
puts triggers on the tables; everything is refreshed once) and ``plain`` (no mvgraph).

Each round, side by side:

* one ``UPDATE b0 ... WHERE id = n`` (one row of one table), then the default refresh of
  everything, ``mvgraph refresh 'public.*'`` (CLI, a new process) or ``mvgraph.refresh``
  (library): views whose inputs did not change are skipped; 12 are stale (family 0's ten plus
  the two ``d19`` views that read ``c0_0``);
* the physical limit: ``psql -f`` on ``plain`` of exactly the views that run refreshed, in its
  order, committing like mvgraph (``synchronous_commit`` as its setting);
* a forced refresh of all 200 views (CLI and library), for the second ratio.

Also, with nothing stale: the library on a connection passed in (the application's own,
kept open between calls: ``mvgraph.refresh(conn, ...)``) and on a DSN (a connection of its own).
The floor of a CLI run is timed too: a new Python process that imports psycopg, connects and
runs ``SELECT 1``.

Goals (median of per-round ratios): default refresh / psql of the stale views: library <= 1.2,
CLI <= 1.5 x (the floor + the library's time) / psql; library default / library forced refresh
of everything <= 0.15; nothing stale on a passed connection <= 10 ms.

The library runs in a child process per source tree (``--baseline DIR``: the old tree too,
alternating with this one, each on a database of its own), which keeps its connection and its
caches between calls as an application does.
Run: ``python benchmarks/refresh_skip.py [--quick] [--rounds N] [--baseline DIR]``.
"""

from __future__ import annotations

import compileall
import json
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg
from _common import (
    Result,
    add_baseline,
    database,
    fmt_s,
    fmt_samples,
    load_script,
    median,
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
    tree_env,
    trees,
)

LIB_GOAL = 1.2
CLI_GOAL = 1.5  # x (floor + library) / psql
FORCE_GOAL = 0.15
FRESH_GOAL_S = 0.010  # nothing stale, on a passed connection
FRESH_CALLS = 5  # no-op calls per round on the passed connection (their median is kept)
A_PER_FAMILY, C_PER_FAMILY, D_PER_FAMILY = 5, 3, 2


def schema_sql(n_tables: int, rows: int) -> str:
    """Tables with rows, then the views family by family (a, then c, then d)."""
    out: list[str] = []
    for f in range(n_tables):
        out.append(f"CREATE TABLE b{f} (id int PRIMARY KEY, g int NOT NULL, x int NOT NULL);")
        out.append(f"INSERT INTO b{f} SELECT i, i % 997, (i * 7919 + {f}) % 10007 "
                   f"FROM generate_series(1, {rows}) AS i;")
        out.append(f"ANALYZE b{f};")
    for f in range(n_tables):
        for k in range(A_PER_FAMILY):
            out.append(f"CREATE MATERIALIZED VIEW a{f}_{k} AS SELECT g % {50 * (k + 1)} AS k, "
                       f"count(*) AS n, sum(x)::bigint AS s FROM b{f} WHERE x % {k + 2} <> 0 "
                       "GROUP BY 1;")
    for f in range(n_tables):
        for j in range(C_PER_FAMILY):
            parts = " UNION ALL ".join(f"SELECT k, n, s FROM a{f}_{j + i}" for i in range(3))
            out.append(f"CREATE MATERIALIZED VIEW c{f}_{j} AS SELECT k, sum(n)::bigint AS n, "
                       f"sum(s)::bigint AS s FROM ({parts}) AS u GROUP BY k;")
    for f in range(n_tables):
        nxt = (f + 1) % n_tables
        for m in range(D_PER_FAMILY):
            reads = [f"c{f}_{m}", f"c{f}_{m + 1}", f"c{nxt}_0"]
            parts = " UNION ALL ".join(f"SELECT k, n, s FROM {r}" for r in reads)
            out.append(f"CREATE MATERIALIZED VIEW d{f}_{m} AS SELECT k % 10 AS k, "
                       f"sum(n)::bigint AS n, sum(s)::bigint AS s FROM ({parts}) AS u GROUP BY 1;")
    return "\n".join(out) + "\n"



RUNNER = r"""
import json, sys, time
import psycopg
import mvgraph
conns = {}
for line in sys.stdin:
    req = json.loads(line)
    target = req["dsn"]
    if req["passed"]:
        target = conns.get(req["dsn"]) or conns.setdefault(
            req["dsn"], psycopg.connect(req["dsn"], autocommit=True))
    start = time.perf_counter()
    report = mvgraph.refresh(target, "public.*", force=req["force"])
    seconds = time.perf_counter() - start
    print(json.dumps({"s": seconds, "refreshed": [str(n) for n in report.refreshed],
                      "status": str(report.status)}), flush=True)
"""


class Library:
    """A child process that imports mvgraph from one source tree and times library calls."""

    def __init__(self, tree: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", RUNNER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=tree_env(tree))

    def refresh(self, dsn: str, *, force: bool = False,
                passed: bool = False) -> tuple[float, list[str]]:
        """Seconds of one ``mvgraph.refresh(dsn or its connection, 'public.*')`` and the views
        it refreshed."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"dsn": dsn, "force": force, "passed": passed}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the library runner died")
        out = json.loads(line)
        assert out["status"] == "ok", out
        return float(out["s"]), list(out["refreshed"])

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def cli_refresh(tree: Path, dsn: str, *extra: str) -> tuple[float, dict[str, Any]]:
    """Time one ``mvgraph refresh 'public.*'`` run through the CLI (``python -m mvgraph``, a
    new process, mvgraph imported from ``tree``); return its JSON report."""
    seconds, proc = timed(lambda: tree_cli(tree, "refresh", "public.*", "--json", "--dsn", dsn,
                                           *extra))
    report: dict[str, Any] = json.loads(proc.stdout)
    assert report["status"] == "ok", report["status"]
    return seconds, report


def floor(dsn: str) -> float:
    """A new Python process that imports psycopg, connects and runs SELECT 1."""
    code = "import sys, psycopg; psycopg.connect(sys.argv[1]).execute('select 1')"
    return timed(lambda: subprocess.run([sys.executable, "-c", code, dsn], check=True))[0]


def count(report: dict[str, Any], action: str) -> int:
    return sum(s["action"] == action for s in report["steps"])


def commit_mode(dsn: str) -> str:
    """The synchronous_commit mvgraph uses for refreshes (its setting)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT coalesce((SELECT value FROM mvgraph.setting "
                           "WHERE key = 'synchronous_commit'), "
                           "current_setting('synchronous_commit'))").fetchone()
    return str(row[0]) if row else "on"


def ratios(top: list[float], bottom: list[float]) -> list[float]:
    """Per-round ratios."""
    return [a / b for a, b in zip(top, bottom, strict=True)]


KEYS = ("cli_force", "cli_default", "psql_cli", "lib_force", "lib_default", "psql_lib",
        "lib_fresh", "lib_fresh_passed", "floor")


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke check")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 5; quick 2)")
    add_baseline(parser)
    args = parser.parse_args()
    n_tables, rows, rounds = (4, 20_000, 2) if args.quick else (20, 200_000, 5)
    rounds = args.rounds or rounds
    n_views = n_tables * (A_PER_FAMILY + C_PER_FAMILY + D_PER_FAMILY)
    stale = A_PER_FAMILY + C_PER_FAMILY + D_PER_FAMILY + D_PER_FAMILY
    sources = trees(args)
    for tree in sources.values():  # as installed: bytecode written (PYTHONDONTWRITEBYTECODE
        compileall.compile_dir(tree / "mvgraph", quiet=1)  # would make a tree's CLI compile)
    with scratch_dir("mvgraph-refresh-skip-") as work, server() as srv, ExitStack() as stack:
        plain = stack.enter_context(database(srv, "plain", init=False))
        dsns = {name: stack.enter_context(database(srv, f"refresh_skip_{name}", tree=tree))
                for name, tree in sources.items()}
        settings = server_note(srv)
        progress(f"loading {n_tables} tables of {rows:,} rows and {n_views} views into "
                 f"{len(dsns) + 1} databases (setup)")
        script = schema_sql(n_tables, rows)
        load_script(plain, script, work, "plain.sql")
        for name, dsn in dsns.items():
            load_script(dsn, script, work, f"{name}.sql")
        for target in (plain, *dsns.values()):
            psql(target, command="VACUUM ANALYZE")
        psql(plain, command="CHECKPOINT")
        libs = {name: Library(tree) for name, tree in sources.items()}
        stack.callback(lambda: [lib.close() for lib in libs.values()])
        names: list[str] = []
        row_id = 0

        def write_one_row(dsn: str) -> None:
            nonlocal row_id
            row_id += 1
            psql(dsn, command=f"UPDATE b0 SET x = x + 1 WHERE id = {row_id}")

        for name, tree in sources.items():
            dsn = dsns[name]
            tracked = tree_cli(tree, "track", "--all", "--dsn", dsn).stdout.strip().splitlines()
            assert len(tracked) == n_tables, tracked
            _, first = cli_refresh(tree, dsn)  # never refreshed by mvgraph: everything
            assert count(first, "refreshed") == n_views
            write_one_row(dsn)  # which views a one-row write to b0 makes stale
            _, names = libs[name].refresh(dsn)
            assert len(names) == stale, names
        like = f"-c synchronous_commit={commit_mode(next(iter(dsns.values())))}"
        psql(plain, command="SELECT 1", options=like)
        limit_sql = work / "limit.sql"
        limit_sql.write_text("".join(f"REFRESH MATERIALIZED VIEW {n};\n" for n in names),
                             encoding="utf-8")
        t: dict[str, dict[str, list[float]]] = {n: {k: [] for k in KEYS} for n in sources}
        skipped = refreshed = 0

        for rnd in range(rounds):
            order = list(sources) if rnd % 2 == 0 else list(reversed(sources))
            for name in order:
                tree, dsn, lib, tt = sources[name], dsns[name], libs[name], t[name]
                psql_first = rnd % 2 == 1  # the limit runs before or after the mvgraph run

                def limit(key: str, tt: dict[str, list[float]] = tt) -> None:
                    tt[key].append(timed(lambda: psql(plain, file=limit_sql, options=like))[0])

                tt["floor"].append(floor(dsn))
                seconds, forced = cli_refresh(tree, dsn, "--force")
                assert count(forced, "refreshed") == n_views
                tt["cli_force"].append(seconds)
                write_one_row(dsn)
                if psql_first:
                    limit("psql_cli")
                seconds, default = cli_refresh(tree, dsn)
                tt["cli_default"].append(seconds)
                refreshed, skipped = count(default, "refreshed"), count(default, "skipped")
                assert [s["name"] for s in default["steps"] if s["action"] == "refreshed"] \
                    == names, default["steps"]
                if not psql_first:
                    limit("psql_cli")
                tt["lib_force"].append(lib.refresh(dsn, force=True)[0])
                write_one_row(dsn)
                if psql_first:
                    limit("psql_lib")
                seconds, done = lib.refresh(dsn)
                assert done == names, done
                tt["lib_default"].append(seconds)
                if not psql_first:
                    limit("psql_lib")
                seconds, done = lib.refresh(dsn)
                assert not done
                tt["lib_fresh"].append(seconds)
                calls = [lib.refresh(dsn, passed=True) for _ in range(FRESH_CALLS + 1)][1:]
                assert not any(done for _, done in calls)
                tt["lib_fresh_passed"].append(median([s for s, _ in calls]))
                progress(f"round {rnd + 1} {name}: " + ", ".join(
                    f"{k} {v[-1]:.3f} s" for k, v in tt.items()))

        rows_out: list[Result] = []
        for name in sources:
            tt = t[name]
            tag = f"[{name}] " if len(sources) > 1 else ""
            cli_floor = [(f + lib) / p for f, lib, p in zip(tt["floor"], tt["lib_default"],
                                                              tt["psql_cli"], strict=True)]
            rows_out += [
                Result(f"{tag}CLI force: all {n_views} views refreshed (median)",
                       fmt_s(median(tt["cli_force"]))),
                Result(f"{tag}CLI default after 1-row UPDATE ({refreshed} refreshed, "
                       f"{skipped} skipped)", fmt_s(median(tt["cli_default"]))),
                Result(f"{tag}psql -f of the {refreshed} refreshed views (physical limit)",
                       fmt_s(median(tt["psql_cli"] + tt["psql_lib"]))),
                Result(f"{tag}floor: new process, import psycopg, connect, SELECT 1",
                       fmt_s(median(tt["floor"]))),
                Result(f"{tag}library force", fmt_s(median(tt["lib_force"]))),
                Result(f"{tag}library default after 1-row UPDATE",
                       fmt_s(median(tt["lib_default"]))),
                Result(f"{tag}library, nothing stale ({n_views} skipped), own connection",
                       fmt_s(median(tt["lib_fresh"]))),
                Result(f"{tag}library, nothing stale, connection passed in",
                       f"{median(tt['lib_fresh_passed']) * 1000:.1f} ms "
                       f"({min(tt['lib_fresh_passed']) * 1000:.1f}-"
                       f"{max(tt['lib_fresh_passed']) * 1000:.1f})",
                       f"<= {FRESH_GOAL_S * 1000:.0f} ms",
                       None if args.quick else median(tt["lib_fresh_passed"]) <= FRESH_GOAL_S),
                ratio_result(f"{tag}library default / psql of the stale views",
                             ratios(tt["lib_default"], tt["psql_lib"]), LIB_GOAL,
                             quick=args.quick),
                Result(f"{tag}CLI default / psql of the stale views",
                       spread(ratios(tt["cli_default"], tt["psql_cli"]))),
                Result(f"{tag}(floor + library default) / psql of the stale views",
                       spread(cli_floor)),
                ratio_result(f"{tag}CLI default / (floor + library default)",
                             ratios(tt["cli_default"], [f + lib for f, lib in zip(
                                 tt["floor"], tt["lib_default"], strict=True)]),
                             CLI_GOAL, quick=args.quick),
                ratio_result(f"{tag}library default / library force (everything)",
                             ratios(tt["lib_default"], tt["lib_force"]), FORCE_GOAL,
                             quick=args.quick),
                Result(f"{tag}CLI default / CLI force",
                       spread(ratios(tt["cli_default"], tt["cli_force"]))),
            ]
        if "baseline" in sources:
            new, old = t["this"], t["baseline"]
            for key, what in (("lib_fresh_passed", "nothing stale, passed connection"),
                              ("lib_fresh", "nothing stale, own connection"),
                              ("lib_default", "library default after a write"),
                              ("cli_default", "CLI default after a write")):
                rows_out.append(Result(f"this / baseline: {what}",
                                       spread(ratios(new[key], old[key]))))
        notes = [
            f"median (range) of {rounds} per-round ratios; CLI runs are new processes "
            "(python -m mvgraph); psql runs on an identical database without mvgraph "
            f"({like.removeprefix('-c ')}), before or after the mvgraph run it is compared "
            "with, alternating; trees alternate in order each round",
            *(f"samples {name} {k}: [{fmt_samples(v)}] s" for name in sources
              for k, v in t[name].items()),
            f"{n_tables} tables x {rows:,} rows, tracked by triggers (mvgraph track --all)",
            *(f"tree {name}: {tree}" for name, tree in sources.items()),
            settings,
        ]
        print_table("refresh_skip: refresh after a one-row write vs its physical limit",
                    rows_out, notes, quick=args.quick)


if __name__ == "__main__":
    main()
