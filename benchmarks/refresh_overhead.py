"""Per-view overhead of ``mvgraph refresh`` against plain ``psql -f`` of the same statements.

300 trivial materialized views (the synthetic DAG, 3 rows per table) are loaded into two
identical databases on one server: ``plain`` (no mvgraph: the baseline) and ``managed`` (where
mvgraph installs its schema and event trigger). Each round times, side by side:

* ``psql -f refresh.sql`` on ``plain``: ``REFRESH MATERIALIZED VIEW`` of every view in mvgraph's
  plan order, each statement in autocommit, with the ``synchronous_commit`` that mvgraph uses
  for its refresh transactions (its ``synchronous_commit`` setting), so that both sides commit
  alike; psql with the server default is reported too;
* ``mvgraph refresh 'public.*' --force --json`` on ``managed``, as a user would run it (a new
  process: interpreter start, imports, catalog read, planning, bookkeeping);
* ``mvgraph.refresh(dsn, 'public.*', force=True)``, the library call (modules imported);
* a plain psycopg loop over the same ``REFRESH`` statements (no mvgraph), to show what the
  Python client alone costs against psql.

Goal: CLI time / psql time (same commit mode) <= 1.15.
Run: ``python benchmarks/refresh_overhead.py [--quick]``.
"""

from __future__ import annotations

import json

import psycopg
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
from fixtures.synthetic import generate

GOAL = 1.15


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


def main() -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "")
    n_views, rounds = (40, 2) if args.quick else (300, 5)
    schema = generate(n_views, seed=2)
    with scratch_dir("mvgraph-refresh-overhead-") as work:
        with server() as srv, database(srv, "plain") as plain, \
                database(srv, "managed") as managed:
            progress(f"loading {n_views} materialized views into two databases (setup)")
            script = schema.sql(with_data=True)
            load_script(plain, script, work, "plain.sql")
            load_script(managed, script, work, "managed.sql")

            # Warm-up (not measured): installs mvgraph's schema and event trigger, so that no
            # measured run pays the one-time migration; warms both databases' caches.
            mvgraph_cli("refresh", "public.*", "--force", "--json", "--dsn", managed)
            steps = mvgraph.plan(managed, "public.*", force=True).steps
            order = [str(s.name) for s in steps]
            assert len(order) == n_views, len(order)
            refresh_sql = work / "refresh.sql"
            refresh_sql.write_text("".join(f"REFRESH MATERIALIZED VIEW {name};\n"
                                           for name in order), encoding="utf-8")
            commit_mode = mvgraph_commit_mode(managed)
            like = f"-c synchronous_commit={commit_mode}"
            psql(plain, file=refresh_sql, options=like)
            settings = server_note(srv)
            startup = best([timed(lambda: mvgraph_cli("refresh", "--help"))[0] for _ in range(3)])

            t_psql: list[float] = []
            t_psql_default: list[float] = []
            t_cli: list[float] = []
            t_lib: list[float] = []
            t_one: list[float] = []
            t_loop: list[float] = []
            for rnd in range(rounds):
                t_psql.append(timed(lambda: psql(plain, file=refresh_sql, options=like))[0])
                t_psql_default.append(timed(lambda: psql(plain, file=refresh_sql))[0])
                seconds, proc = timed(lambda: mvgraph_cli(
                    "refresh", "public.*", "--force", "--json", "--dsn", managed))
                report = json.loads(proc.stdout)
                assert report["status"] == "ok", report["status"]
                assert sum(s["action"] == "refreshed" for s in report["steps"]) == n_views
                t_cli.append(seconds)
                seconds, lib_report = timed(lambda: mvgraph.refresh(managed, "public.*",
                                                                    force=True))
                assert len(lib_report.refreshed) == n_views
                t_lib.append(seconds)
                t_one.append(timed(lambda: mvgraph.refresh(managed, order[0], force=True))[0])
                t_loop.append(timed(lambda: psycopg_loop(plain, order, commit_mode))[0])
                progress(f"round {rnd + 1}: psql {t_psql[-1]:.3f} s (server default commit "
                         f"{t_psql_default[-1]:.3f} s), cli {t_cli[-1]:.3f} s, "
                         f"library {t_lib[-1]:.3f} s")

        ratio = best(t_cli) / best(t_psql)
        lib_ratio = best(t_lib) / best(t_psql)
        per_view = (best(t_cli) - best(t_psql)) / n_views * 1000
        lib_per_view = (best(t_lib) - best(t_one)) / (n_views - 1) * 1000
        psql_per_view = best(t_psql) / n_views * 1000
        default_ratio = best(t_cli) / best(t_psql_default)
        rows = [
            Result(f"psql -f, {n_views} REFRESH, synchronous_commit={commit_mode} (as mvgraph)",
                   fmt_s(best(t_psql))),
            Result("psql -f, server default synchronous_commit", fmt_s(best(t_psql_default))),
            Result("mvgraph refresh --force (CLI)", fmt_s(best(t_cli))),
            Result("mvgraph.refresh(force=True) (library)", fmt_s(best(t_lib))),
            Result("plain psycopg loop of the same REFRESH statements", fmt_s(best(t_loop))),
            Result("CLI start-up alone (mvgraph refresh --help)", fmt_s(startup)),
            Result("library, one view (fixed cost of a run)", fmt_s(best(t_one))),
            Result("per view: psql / library marginal",
                   f"{psql_per_view:.2f} / {lib_per_view:.2f} ms"),
            Result("(CLI - psql) / views", f"{per_view:.2f} ms"),
            Result("ratio CLI / psql", f"{ratio:.2f}", f"<= {GOAL}",
                   None if args.quick else ratio <= GOAL),
            Result("ratio library / psql", f"{lib_ratio:.2f}", f"(<= {GOAL})"),
            Result("ratio psycopg loop / psql (Python alone)",
                   f"{best(t_loop) / best(t_psql):.2f}"),
            Result("ratio library / psycopg loop", f"{best(t_lib) / best(t_loop):.2f}"),
            Result("ratio CLI / psql with server default commit", f"{default_ratio:.2f}"),
        ]
        notes = [
            f"mvgraph commits refreshes with synchronous_commit={commit_mode} (its setting); "
            "the verdict compares with psql committing the same way",
            f"best of {rounds} alternating rounds; samples psql [{fmt_samples(t_psql)}] s, "
            f"psql default commit [{fmt_samples(t_psql_default)}] s, "
            f"cli [{fmt_samples(t_cli)}] s, library [{fmt_samples(t_lib)}] s, "
            f"psycopg loop [{fmt_samples(t_loop)}] s",
            f"{n_views} MVs over {len(schema.tables)} tables of 3 rows; synthetic DAG depth 8; "
            "psql on an identical database without mvgraph, same server",
            settings,
        ]
        print_table("refresh_overhead: mvgraph refresh vs psql -f", rows, notes,
                    quick=args.quick)


if __name__ == "__main__":
    main()
