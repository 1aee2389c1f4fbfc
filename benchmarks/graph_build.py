"""Graph build time: from SQL files (cold and warm parse cache) and from the live catalog.

* cold: ``load_graph(sql=[dir])`` with a fresh, empty parse cache directory (deleted before
  every cold run), the modules already imported;
* warm: the same call again, with the parse cache populated by the cold run;
* catalog: ``load_graph(dsn=...)`` on a database holding the views (loading them is setup).

Goals on a 2-core machine: 10,000 views cold <= 5 s, warm <= 0.5 s; catalog, 2,000 views
<= 1 s. Run: ``python benchmarks/graph_build.py [--quick]``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from _common import (
    Result,
    best,
    database,
    fmt_s,
    fmt_samples,
    load_script,
    parse_args,
    print_table,
    progress,
    scratch_dir,
    server,
    timed,
)

import mvgraph
from fixtures.synthetic import generate

REPEAT = 3
COLD_GOAL = 5.0  # seconds, 10,000 views
WARM_GOAL = 0.5  # seconds, 10,000 views
CATALOG_GOAL = 1.0  # seconds, 2,000 views


def files_benchmark(n_views: int, work: Path, goal_cold: float | None,
                    goal_warm: float | None) -> tuple[list[Result], list[str]]:
    """Cold and warm builds from SQL files of ``n_views`` synthetic views."""
    sql_dir = work / f"sql_{n_views}"
    files = generate(n_views).sql_files(sql_dir)
    cache = work / f"cache_{n_views}"
    os.environ["MVGRAPH_CACHE_DIR"] = str(cache)
    cold: list[float] = []
    warm: list[float] = []
    nodes = 0
    for rep in range(REPEAT):
        shutil.rmtree(cache, ignore_errors=True)  # cold really is cold
        seconds, graph = timed(lambda: mvgraph.load_graph(sql=[sql_dir]))
        cold.append(seconds)
        nodes = len(graph)
        for _ in range(2 if rep == 0 else 1):
            warm.append(timed(lambda: mvgraph.load_graph(sql=[sql_dir]))[0])
        progress(f"{n_views} views, round {rep + 1}: cold {seconds:.3f} s, warm {warm[-1]:.3f} s")
    assert nodes == n_views + len(generate(n_views).tables), nodes
    label = f"{n_views:,} views ({len(files)} files)"
    return [
        Result(f"{label}: cold build", fmt_s(best(cold)),
               f"<= {fmt_s(goal_cold)}" if goal_cold else "",
               best(cold) <= goal_cold if goal_cold else None),
        Result(f"{label}: warm build", fmt_s(best(warm)),
               f"<= {fmt_s(goal_warm)}" if goal_warm else "",
               best(warm) <= goal_warm if goal_warm else None),
    ], [f"{label}: cold samples [{fmt_samples(cold)}] s, warm samples [{fmt_samples(warm)}] s"]


def catalog_benchmark(n_views: int, work: Path, goal: float | None) -> tuple[Result, str]:
    """Discovery of ``n_views`` materialized views from the catalog of a live database."""
    schema = generate(n_views, seed=1)
    with server() as srv, database(srv, "graph_build") as dsn:
        progress(f"loading {n_views} materialized views into the server (setup)")
        load_script(dsn, schema.sql(with_data=True), work, "catalog.sql")
        samples = []
        for rep in range(REPEAT + 1):
            seconds, graph = timed(lambda: mvgraph.load_graph(dsn=dsn))
            samples.append(seconds)
            progress(f"catalog round {rep + 1}: {seconds:.3f} s ({len(graph)} relations)")
        assert len(graph) == n_views + len(schema.tables), len(graph)
    label = f"{n_views:,} views: catalog discovery"
    value = best(samples[1:])  # the first call also warms the server's catalog caches
    return (Result(label, fmt_s(value), f"<= {fmt_s(goal)}" if goal else "",
                   value <= goal if goal else None),
            f"catalog samples [{fmt_samples(samples)}] s (first call: fresh backend; best of "
            "the others reported)")


def main() -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "")
    small, large, catalog = (100, 1000, 200) if args.quick else (1000, 10_000, 2000)
    with scratch_dir("mvgraph-graph-build-") as work:
        # Import the parser and the graph code once, so that no run pays the imports.
        import mvgraph.dialect
        import mvgraph.sqlfiles  # noqa: F401

        rows: list[Result] = []
        notes: list[str] = []
        for n, is_goal in ((small, False), (large, not args.quick)):
            r, n_notes = files_benchmark(n, work, COLD_GOAL if is_goal else None,
                                         WARM_GOAL if is_goal else None)
            rows += r
            notes += n_notes
        row, note = catalog_benchmark(catalog, work, None if args.quick else CATALOG_GOAL)
        rows.append(row)
        notes.append(note)
        notes.append(f"best of {REPEAT} runs; in-process library calls; synthetic DAG depth 8, "
                     "fan-in 3, 500 views per file")
        print_table("graph_build: building the dependency graph", rows, notes,
                    quick=args.quick)


if __name__ == "__main__":
    main()
