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

Goals (median of per-round ratios): default refresh / psql of the stale views: library <= 1.15,
CLI <= 1.3; library default / library forced refresh of everything <= 0.15.
Run: ``python benchmarks/refresh_skip.py [--quick]``.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
from _common import (
    Result,
    database,
    fmt_s,
    fmt_samples,
    load_script,
    median,
    mvgraph_cli,
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
)

import mvgraph

LIB_GOAL = 1.15
CLI_GOAL = 1.3
FORCE_GOAL = 0.15
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


def refresh(dsn: str, *extra: str) -> tuple[float, dict[str, Any]]:
    """Time one ``mvgraph refresh 'public.*'`` run through the CLI; return its JSON report."""
    seconds, proc = timed(lambda: mvgraph_cli("refresh", "public.*", "--json", "--dsn", dsn,
                                              *extra))
    report: dict[str, Any] = json.loads(proc.stdout)
    assert report["status"] == "ok", report["status"]
    return seconds, report


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


def main() -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "")
    n_tables, rows, rounds = (4, 20_000, 2) if args.quick else (20, 200_000, 5)
    n_views = n_tables * (A_PER_FAMILY + C_PER_FAMILY + D_PER_FAMILY)
    stale = A_PER_FAMILY + C_PER_FAMILY + D_PER_FAMILY + D_PER_FAMILY
    with scratch_dir("mvgraph-refresh-skip-") as work:
        with server() as srv, database(srv, "refresh_skip") as dsn, \
                database(srv, "plain", init=False) as plain:
            settings = server_note(srv)
            progress(f"loading {n_tables} tables of {rows:,} rows and {n_views} views into two "
                     "databases (setup)")
            script = schema_sql(n_tables, rows)
            load_script(dsn, script, work)
            load_script(plain, script, work, "plain.sql")
            for target in (dsn, plain):
                psql(target, command="VACUUM ANALYZE")
            psql(dsn, command="CHECKPOINT")
            tracked = mvgraph_cli("track", "--all", "--dsn", dsn).stdout.strip().splitlines()
            assert len(tracked) == n_tables, tracked
            _, first = refresh(dsn)  # never refreshed by mvgraph: refreshes everything
            assert count(first, "refreshed") == n_views
            like = f"-c synchronous_commit={commit_mode(dsn)}"
            psql(plain, command="SELECT 1", options=like)

            t: dict[str, list[float]] = {k: [] for k in (
                "cli_force", "cli_default", "psql_cli", "lib_force", "lib_default", "psql_lib",
                "lib_fresh")}
            skipped = refreshed = 0
            row_id = 0

            def write_one_row() -> None:
                nonlocal row_id
                row_id += 1
                psql(dsn, command=f"UPDATE b0 SET x = x + 1 WHERE id = {row_id}")

            write_one_row()  # which views a one-row write to b0 makes stale (the same each time)
            names = [str(st.name) for st in mvgraph.plan(dsn, "public.*").steps
                     if st.action is mvgraph.Action.REFRESH]
            assert len(names) == stale, names
            limit_sql = work / "limit.sql"
            limit_sql.write_text("".join(f"REFRESH MATERIALIZED VIEW {n};\n" for n in names),
                                 encoding="utf-8")

            def limit(key: str) -> None:
                t[key].append(timed(lambda: psql(plain, file=limit_sql, options=like))[0])

            for rnd in range(rounds):
                psql_first = rnd % 2 == 1  # the limit runs before or after the mvgraph run
                # CLI, as a user would run it.
                seconds, forced = refresh(dsn, "--force")
                assert count(forced, "refreshed") == n_views
                t["cli_force"].append(seconds)
                write_one_row()
                if psql_first:
                    limit("psql_cli")
                seconds, default = refresh(dsn)
                t["cli_default"].append(seconds)
                refreshed, skipped = count(default, "refreshed"), count(default, "skipped")
                assert [s["name"] for s in default["steps"] if s["action"] == "refreshed"] \
                    == names, default["steps"]
                if not psql_first:
                    limit("psql_cli")
                # The library call (no interpreter start-up), and a run with nothing stale.
                t["lib_force"].append(timed(lambda: mvgraph.refresh(dsn, "public.*",
                                                                    force=True))[0])
                write_one_row()
                if psql_first:
                    limit("psql_lib")
                seconds, lib_report = timed(lambda: mvgraph.refresh(dsn, "public.*"))
                assert [str(n) for n in lib_report.refreshed] == names, lib_report.refreshed
                t["lib_default"].append(seconds)
                if not psql_first:
                    limit("psql_lib")
                seconds, lib_report = timed(lambda: mvgraph.refresh(dsn, "public.*"))
                assert not lib_report.refreshed
                t["lib_fresh"].append(seconds)
                progress(f"round {rnd + 1}: " + ", ".join(f"{k} {v[-1]:.3f} s"
                                                         for k, v in t.items()))

        rows_out = [
            Result(f"CLI force: all {n_views} views refreshed (median)",
                   fmt_s(median(t["cli_force"]))),
            Result(f"CLI default after 1-row UPDATE ({refreshed} refreshed, {skipped} skipped)",
                   fmt_s(median(t["cli_default"]))),
            Result(f"psql -f of the {refreshed} refreshed views (physical limit)",
                   fmt_s(median(t["psql_cli"] + t["psql_lib"]))),
            Result("library force", fmt_s(median(t["lib_force"]))),
            Result("library default after 1-row UPDATE", fmt_s(median(t["lib_default"]))),
            Result(f"library default, nothing stale ({n_views} skipped)",
                   fmt_s(median(t["lib_fresh"]))),
            ratio_result("library default / psql of the stale views",
                         ratios(t["lib_default"], t["psql_lib"]), LIB_GOAL, quick=args.quick),
            ratio_result("CLI default / psql of the stale views",
                         ratios(t["cli_default"], t["psql_cli"]), CLI_GOAL, quick=args.quick),
            ratio_result("library default / library force (everything)",
                         ratios(t["lib_default"], t["lib_force"]), FORCE_GOAL,
                         quick=args.quick),
            Result("CLI default / CLI force", spread(ratios(t["cli_default"], t["cli_force"]))),
        ]
        notes = [
            f"median (range) of {rounds} per-round ratios; CLI runs are new processes; psql "
            f"runs on an identical database without mvgraph ({like.removeprefix('-c ')}), "
            "before or after the mvgraph run it is compared with, alternating",
            *(f"samples {k}: [{fmt_samples(v)}] s" for k, v in t.items()),
            f"{n_tables} tables x {rows:,} rows, tracked by triggers (mvgraph track --all)",
            settings,
        ]
        print_table("refresh_skip: refresh after a one-row write vs its physical limit",
                    rows_out, notes, quick=args.quick)


if __name__ == "__main__":
    main()
