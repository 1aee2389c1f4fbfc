"""Skipping unchanged views: a refresh after one base-table write against a forced full refresh.

Schema: 20 base tables ``b0 .. b19`` of 200,000 rows, 200 materialized views in 20 families of
10. Family ``f`` has five ``a{f}_k`` views aggregating ``b{f}`` (a full scan and a GROUP BY),
three ``c{f}_j`` views merging three of the family's ``a`` views, and two ``d{f}_m`` views
merging two ``c`` views of the family and one of the next family (so a change crosses
families). ``mvgraph track --all`` puts triggers on the tables; everything is refreshed once.

Each round, side by side:

* force: ``mvgraph refresh 'public.*' --force --json`` (all 200 views refreshed);
* one ``UPDATE b0 ... WHERE id = 1`` (one row of one table);
* default: ``mvgraph refresh 'public.*' --json``: views whose inputs did not change are
  skipped; 12 are stale (family 0's ten plus the two ``d19`` views that read ``c0_0``).

Goal: default time / force time <= 0.15. Run: ``python benchmarks/refresh_skip.py [--quick]``.
"""

from __future__ import annotations

import json
from typing import Any

from _common import (
    Result,
    best,
    database,
    fmt_s,
    fmt_samples,
    load_script,
    mvgraph_cli,
    parse_args,
    print_table,
    progress,
    psql,
    scratch_dir,
    server,
    server_note,
    timed,
)

import mvgraph

GOAL = 0.15
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


def main() -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "")
    n_tables, rows, rounds = (4, 20_000, 2) if args.quick else (20, 200_000, 3)
    n_views = n_tables * (A_PER_FAMILY + C_PER_FAMILY + D_PER_FAMILY)
    stale = A_PER_FAMILY + C_PER_FAMILY + D_PER_FAMILY + D_PER_FAMILY
    with scratch_dir("mvgraph-refresh-skip-") as work:
        with server() as srv, database(srv, "refresh_skip") as dsn:
            settings = server_note(srv)
            progress(f"loading {n_tables} tables of {rows:,} rows and {n_views} views (setup)")
            load_script(dsn, schema_sql(n_tables, rows), work)
            psql(dsn, command="VACUUM ANALYZE")
            psql(dsn, command="CHECKPOINT")
            tracked = mvgraph_cli("track", "--all", "--dsn", dsn).stdout.strip().splitlines()
            assert len(tracked) == n_tables, tracked
            _, first = refresh(dsn)  # never refreshed by mvgraph: refreshes everything
            assert count(first, "refreshed") == n_views

            t_force: list[float] = []
            t_default: list[float] = []
            lib_force: list[float] = []
            lib_default: list[float] = []
            lib_fresh: list[float] = []
            stale_work: list[float] = []
            total_work: list[float] = []
            skipped = refreshed = 0
            row_id = 0

            def write_one_row() -> None:
                nonlocal row_id
                row_id += 1
                psql(dsn, command=f"UPDATE b0 SET x = x + 1 WHERE id = {row_id}")

            for rnd in range(rounds):
                # CLI, as a user would run it.
                seconds, forced = refresh(dsn, "--force")
                assert count(forced, "refreshed") == n_views
                t_force.append(seconds)
                write_one_row()
                seconds, default = refresh(dsn)
                t_default.append(seconds)
                refreshed, skipped = count(default, "refreshed"), count(default, "skipped")
                assert (refreshed, skipped) == (stale, n_views - stale), (refreshed, skipped)
                names = {s["name"] for s in default["steps"] if s["action"] == "refreshed"}
                stale_work.append(sum(s["duration_s"] for s in forced["steps"]
                                      if s["name"] in names))
                total_work.append(sum(s["duration_s"] for s in forced["steps"]))
                # The library call (no interpreter start-up), and a run with nothing stale.
                lib_force.append(timed(lambda: mvgraph.refresh(dsn, "public.*", force=True))[0])
                write_one_row()
                seconds, lib_report = timed(lambda: mvgraph.refresh(dsn, "public.*"))
                assert len(lib_report.refreshed) == stale, len(lib_report.refreshed)
                lib_default.append(seconds)
                seconds, lib_report = timed(lambda: mvgraph.refresh(dsn, "public.*"))
                assert not lib_report.refreshed
                lib_fresh.append(seconds)
                progress(f"round {rnd + 1}: CLI force {t_force[-1]:.3f} s, default "
                         f"{t_default[-1]:.3f} s ({refreshed} refreshed, {skipped} skipped); "
                         f"library force {lib_force[-1]:.3f} s, default {lib_default[-1]:.3f} s, "
                         f"nothing stale {lib_fresh[-1]:.3f} s")

        ratio = best(t_default) / best(t_force)
        lib_ratio = best(lib_default) / best(lib_force)
        per_round = [d / f for d, f in zip(t_default, t_force, strict=True)]
        floor = min(s / t for s, t in zip(stale_work, total_work, strict=True))
        rows_out = [
            Result(f"CLI force: all {n_views} views refreshed", fmt_s(best(t_force))),
            Result(f"CLI default after 1-row UPDATE ({refreshed} refreshed, {skipped} skipped)",
                   fmt_s(best(t_default))),
            Result("ratio default / force (CLI)", f"{ratio:.3f}", f"<= {GOAL}",
                   None if args.quick else ratio <= GOAL),
            Result("library force", fmt_s(best(lib_force))),
            Result("library default after 1-row UPDATE", fmt_s(best(lib_default))),
            Result("ratio default / force (library)", f"{lib_ratio:.3f}", f"(<= {GOAL})"),
            Result(f"library default, nothing stale ({n_views} skipped)", fmt_s(best(lib_fresh))),
            Result("floor: REFRESH time of the stale views / of all", f"{floor:.3f}"),
        ]
        notes = [
            f"best of {rounds} alternating rounds; CLI runs are new processes; samples CLI "
            f"force [{fmt_samples(t_force)}] s, default [{fmt_samples(t_default)}] s; "
            f"per-round CLI ratios [{fmt_samples(per_round)}]",
            f"library samples force [{fmt_samples(lib_force)}] s, default "
            f"[{fmt_samples(lib_default)}] s, nothing stale [{fmt_samples(lib_fresh)}] s",
            f"REFRESH statement time summed over all views in the CLI force runs: "
            f"[{fmt_samples(total_work)}] s",
            f"{n_tables} tables x {rows:,} rows, tracked by triggers (mvgraph track --all)",
            settings,
        ]
        print_table("refresh_skip: refresh after a one-row write vs forced full refresh",
                    rows_out, notes, quick=args.quick)


if __name__ == "__main__":
    main()
