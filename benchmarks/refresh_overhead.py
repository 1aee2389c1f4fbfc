"""Per-view overhead of ``mvgraph.refresh`` against plain ``psql -f`` of the same statements.

Two sets of materialized views are loaded into two identical databases on one server: ``plain``
(no mvgraph: the baseline) and ``managed`` (where mvgraph installs its schema and event
trigger):

* ``public``: 300 trivial views (the synthetic DAG, 3 rows per table): mostly overhead;
* ``slow``: 300 views that each take about 20 ms (``pg_sleep(0.02)``; the server waits, not
  computes, so the client's work can overlap it).

Each round times, side by side (the order alternates between rounds):

* ``psql -f refresh.sql`` on ``plain``: ``REFRESH MATERIALIZED VIEW`` of every view in mvgraph's
  plan order, each statement in autocommit, with the ``synchronous_commit`` that mvgraph uses
  for its refresh transactions (its ``synchronous_commit`` setting), so both sides commit alike;
* ``mvgraph.refresh(dsn, 'public.*', force=True)``, the library call (modules imported), serial
  and with ``parallel=2``;
* informational: the same through the CLI (a new process), one view alone (a run's fixed cost),
  and a plain psycopg loop over the same ``REFRESH`` statements (Python alone, no mvgraph).

Goals (median of the per-round ratios): trivial views, library serial / psql <= 1.6;
20 ms views, library serial / psql <= 1.05; trivial views, library ``parallel=2`` / psql
(serial) <= 1.0. Run: ``python benchmarks/refresh_overhead.py [--quick]``.
"""

from __future__ import annotations

import json
from pathlib import Path

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
from fixtures.synthetic import generate

SERIAL_GOAL = 1.6
SLOW_GOAL = 1.05
PARALLEL_GOAL = 1.0
SLOW_SECONDS = 0.02


def slow_views_sql(n: int) -> str:
    """``n`` views in schema ``slow`` that each take about SLOW_SECONDS to refresh."""
    out = ["CREATE SCHEMA slow;"]
    out += [f"CREATE MATERIALIZED VIEW slow.v{i} AS SELECT {i} AS id "
            f"FROM (SELECT pg_sleep({SLOW_SECONDS})) AS z;" for i in range(n)]
    return "\n".join(out) + "\n"


def mvgraph_commit_mode(dsn: str) -> str:
    """The synchronous_commit mvgraph uses for refreshes: its setting, else the server's."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT coalesce((SELECT value FROM mvgraph.setting "
                           "WHERE key = 'synchronous_commit'), "
                           "current_setting('synchronous_commit'))").fetchone()
    return str(row[0]) if row else "on"


def psycopg_loop(dsn: str, order: list[str], commit_mode: str) -> None:
    """The same REFRESH statements from Python, one autocommit statement each (no mvgraph)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT set_config('synchronous_commit', %s, false)", [commit_mode])
        for name in order:
            conn.execute(f"REFRESH MATERIALIZED VIEW {name}")  # names from mvgraph's plan


def refresh_file(dsn: str, pattern: str, path: Path) -> int:
    """Write the REFRESH statements of ``pattern``'s views in plan order; return their count."""
    order = [str(st.name) for st in mvgraph.plan(dsn, pattern, force=True).steps]
    path.write_text("".join(f"REFRESH MATERIALIZED VIEW {name};\n" for name in order),
                    encoding="utf-8")
    return len(order)


def ratios(top: list[float], bottom: list[float]) -> list[float]:
    """Per-round ratios."""
    return [a / b for a, b in zip(top, bottom, strict=True)]


def main() -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "")
    n_views, n_slow, rounds, slow_rounds = (40, 20, 2, 2) if args.quick else (300, 300, 5, 3)
    schema = generate(n_views, seed=2)
    with scratch_dir("mvgraph-refresh-overhead-") as work:
        with server() as srv, database(srv, "plain", init=False) as plain, \
                database(srv, "managed") as managed:
            progress(f"loading {n_views} trivial and {n_slow} slow views into two databases")
            script = schema.sql(with_data=True) + slow_views_sql(n_slow)
            load_script(plain, script, work, "plain.sql")
            load_script(managed, script, work, "managed.sql")

            # Warm-up (not measured): installs mvgraph's schema and event trigger, so that no
            # measured run pays the one-time migration; warms both databases' caches.
            mvgraph_cli("refresh", "public.*", "--force", "--json", "--dsn", managed)
            mvgraph.refresh(managed, "slow.*", force=True)
            trivial_sql, slow_sql = work / "refresh.sql", work / "slow.sql"
            assert refresh_file(managed, "public.*", trivial_sql) == n_views
            assert refresh_file(managed, "slow.*", slow_sql) == n_slow
            order = [line.split()[-1].rstrip(";")
                     for line in trivial_sql.read_text(encoding="utf-8").splitlines()]
            commit_mode = mvgraph_commit_mode(managed)
            like = f"-c synchronous_commit={commit_mode}"
            psql(plain, file=trivial_sql, options=like)
            settings = server_note(srv)

            def lib(pattern: str, expect: int, parallel: int = 1) -> float:
                seconds, report = timed(lambda: mvgraph.refresh(managed, pattern, force=True,
                                                                parallel=parallel))
                assert len(report.refreshed) == expect, report.status
                return seconds

            def cli() -> float:
                seconds, proc = timed(lambda: mvgraph_cli(
                    "refresh", "public.*", "--force", "--json", "--dsn", managed))
                report = json.loads(proc.stdout)
                assert report["status"] == "ok", report["status"]
                assert sum(s["action"] == "refreshed" for s in report["steps"]) == n_views
                return seconds

            t: dict[str, list[float]] = {k: [] for k in (
                "psql", "lib", "par", "cli", "one", "loop", "slow_psql", "slow_lib")}
            trivial = {
                "psql": lambda: timed(lambda: psql(plain, file=trivial_sql, options=like))[0],
                "lib": lambda: lib("public.*", n_views),
                "par": lambda: lib("public.*", n_views, parallel=2),
                "cli": cli,
                "one": lambda: lib(order[0], 1),
                "loop": lambda: timed(lambda: psycopg_loop(plain, order, commit_mode))[0],
            }
            slow = {
                "slow_psql": lambda: timed(lambda: psql(plain, file=slow_sql, options=like))[0],
                "slow_lib": lambda: lib("slow.*", n_slow),
            }
            for rnd in range(rounds):
                for group in ([trivial, slow] if rnd < slow_rounds else [trivial]):
                    keys = list(group) if rnd % 2 == 0 else list(reversed(group))
                    for key in keys:
                        t[key].append(group[key]())
                progress(f"round {rnd + 1}: " + ", ".join(
                    f"{k} {v[-1]:.3f} s" for k, v in t.items() if len(v) > rnd))

        serial = ratios(t["lib"], t["psql"])
        rows = [
            Result(f"psql -f, {n_views} trivial REFRESH (median)", fmt_s(median(t["psql"]))),
            Result("mvgraph.refresh(force=True), serial", fmt_s(median(t["lib"]))),
            Result("mvgraph.refresh(force=True, parallel=2)", fmt_s(median(t["par"]))),
            Result("mvgraph refresh --force (CLI, new process)", fmt_s(median(t["cli"]))),
            Result("library, one view (fixed cost of a run)", fmt_s(median(t["one"]))),
            Result("plain psycopg loop of the same REFRESH statements", fmt_s(median(t["loop"]))),
            Result(f"psql -f, {n_slow} views of ~{SLOW_SECONDS * 1000:.0f} ms",
                   fmt_s(median(t["slow_psql"]))),
            Result("mvgraph.refresh(force=True) of those, serial", fmt_s(median(t["slow_lib"]))),
            Result("per view: psql / library marginal", "{:.2f} / {:.2f} ms".format(
                median(t["psql"]) / n_views * 1000,
                (median(t["lib"]) - median(t["one"])) / (n_views - 1) * 1000)),
            ratio_result("trivial: library serial / psql", serial, SERIAL_GOAL,
                         quick=args.quick),
            ratio_result(f"{SLOW_SECONDS * 1000:.0f} ms views: library serial / psql",
                         ratios(t["slow_lib"], t["slow_psql"]), SLOW_GOAL, quick=args.quick),
            ratio_result("trivial: library parallel=2 / psql (serial)",
                         ratios(t["par"], t["psql"]), PARALLEL_GOAL, quick=args.quick),
            Result("trivial: CLI / psql (start-up included)", spread(ratios(t["cli"], t["psql"]))),
            Result("trivial: psycopg loop / psql (Python alone)",
                   spread(ratios(t["loop"], t["psql"]))),
            Result("trivial: library / psycopg loop", spread(ratios(t["lib"], t["loop"]))),
        ]
        notes = [
            f"mvgraph commits refreshes with synchronous_commit={commit_mode} (its setting); "
            "psql commits the same way",
            f"ratios: median (range) of per-round ratios; {rounds} alternating rounds "
            f"({slow_rounds} for the slow views)",
            *(f"samples {k}: [{fmt_samples(v)}] s" for k, v in t.items()),
            f"{n_views} MVs over {len(schema.tables)} tables of 3 rows; synthetic DAG depth 8; "
            "psql on an identical database without mvgraph, same server",
            settings,
        ]
        print_table("refresh_overhead: mvgraph.refresh vs psql -f", rows, notes,
                    quick=args.quick)


if __name__ == "__main__":
    main()
