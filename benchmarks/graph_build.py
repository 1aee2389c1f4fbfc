"""Graph build time: from SQL files (cold and warm parse cache) and from the live catalog.

* cold: ``load_graph(sql=[dir])`` with a fresh, empty parse cache directory (deleted before
  every cold run), the modules already imported;
* warm: the same call again, with the parse cache populated by the cold run;
* catalog: ``load_graph(dsn=...)`` on a database holding the views (loading them is setup).

Goals on a 2-core machine: 10,000 views cold <= 5 s, warm <= 0.5 s; catalog, 2,000 views
<= 1 s.

With ``--dbt PATH`` (a virtual environment holding dbt-core 1.10 and dbt-postgres 1.9, see
``_dbt.py``), also against dbt, in new processes, alternating the order round by round: 1,600
views, one per file (the synthetic DAG: 160 base tables, depth 8, fan-in 3), as SQL files for
mvgraph and as a dbt project of 1,600 models (``materialized='materialized_view'``, ``ref()``
and ``source()``); ``mvgraph graph --from-sql DIR -f json`` (the graph built from the files and
printed, output discarded) with an empty parse cache (cold) and a populated one (warm), against
``dbt parse --no-partial-parse``. Goals (median of the per-round ratios): cold / dbt <= 0.10,
warm / dbt <= 0.05. CPU seconds (user + system of the process) are reported beside the wall
clock.

Run: ``python benchmarks/graph_build.py [--quick] [--dbt PATH]``.
"""

from __future__ import annotations

import compileall
import json
import os
import resource
import shutil
import subprocess
from pathlib import Path

from _common import (
    MVGRAPH_CLI,
    Result,
    best,
    database,
    fmt_s,
    fmt_samples,
    load_script,
    median,
    parse_args,
    print_table,
    progress,
    scratch_dir,
    server,
    timed,
)
from _dbt import dbt_env, dbt_executable, dbt_parse_command, dbt_version, write_dbt_project

import mvgraph
from fixtures.synthetic import generate

REPEAT = 3
COLD_GOAL = 5.0  # seconds, 10,000 views
WARM_GOAL = 0.5  # seconds, 10,000 views
CATALOG_GOAL = 1.0  # seconds, 2,000 views
DBT_VIEWS = 1600
DBT_COLD_GOAL = 0.10  # mvgraph cold / dbt parse --no-partial-parse
DBT_WARM_GOAL = 0.05  # mvgraph warm / dbt parse --no-partial-parse


def spread3(ratios: list[float]) -> str:
    """Median and range with three decimals (ratios of a few hundredths)."""
    return f"{median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})"


def run_process(argv: list[str], env: dict[str, str] | None = None,
                cwd: Path | None = None) -> tuple[float, float]:
    """Wall-clock and CPU seconds (user + system) of one new process, output discarded."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds, _ = timed(lambda: subprocess.run(argv, check=True, env=env, cwd=cwd,
                                              stdout=subprocess.DEVNULL,
                                              stderr=subprocess.PIPE))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu


def dbt_benchmark(dbt_path: str, work: Path, quick: bool) -> tuple[list[Result], list[str]]:
    """mvgraph's graph from SQL files (cold, warm) against ``dbt parse --no-partial-parse``."""
    dbt = dbt_executable(dbt_path)
    n_views = 200 if quick else DBT_VIEWS
    rounds = 1 if quick else 5
    schema = generate(n_views)
    sql_dir = work / "dbt_cmp_sql"
    schema.sql_files(sql_dir, per_file=1)
    project = write_dbt_project(schema, work / "dbt_cmp_project")
    cache = work / "dbt_cmp_cache"
    env = {**os.environ, "MVGRAPH_CACHE_DIR": str(cache)}
    graph_cmd = [MVGRAPH_CLI, "graph", "--from-sql", str(sql_dir), "-f", "json"]
    dbt_cmd = dbt_parse_command(dbt, project)

    # mvgraph's bytecode, as an installed wheel has it (pip compiled dbt's at install; with
    # PYTHONDONTWRITEBYTECODE=1 an editable install would compile mvgraph's source every run)
    compileall.compile_dir(str(Path(mvgraph.__file__).parent), quiet=1)
    # setup: check once that both did the work (every view in the graph, every model parsed)
    shutil.rmtree(cache, ignore_errors=True)
    out = subprocess.run(graph_cmd, env=env, capture_output=True, text=True, check=True).stdout
    views = [n for n in json.loads(out)["nodes"] if n["kind"] == "matview"]
    assert len(views) == n_views, len(views)
    subprocess.run(dbt_cmd, env=dbt_env(), cwd=project, check=True, capture_output=True)
    manifest = json.loads((project / "target" / "manifest.json").read_text(encoding="utf-8"))
    models = [k for k in manifest["nodes"] if k.startswith("model.")]
    assert len(models) == n_views, len(models)

    def cold() -> tuple[float, float]:
        shutil.rmtree(cache, ignore_errors=True)
        return run_process(graph_cmd, env)

    steps = {
        "dbt": lambda: run_process(dbt_cmd, dbt_env(), project),
        "cold": cold,
        "warm": lambda: run_process(graph_cmd, env),  # the cache of the cold run before it
    }
    wall: dict[str, list[float]] = {k: [] for k in steps}
    cpu: dict[str, list[float]] = {k: [] for k in steps}
    for rnd in range(rounds):
        order = ["dbt", "cold", "warm"] if rnd % 2 == 0 else ["cold", "warm", "dbt"]
        for key in order:
            w, c = steps[key]()
            wall[key].append(w)
            cpu[key].append(c)
        progress(f"dbt comparison, round {rnd + 1}: " + ", ".join(
            f"{k} {wall[k][-1]:.2f} s (cpu {cpu[k][-1]:.2f})" for k in steps))
    cold_r = [c / d for c, d in zip(wall["cold"], wall["dbt"], strict=True)]
    warm_r = [w / d for w, d in zip(wall["warm"], wall["dbt"], strict=True)]
    cold_cpu = [c / d for c, d in zip(cpu["cold"], cpu["dbt"], strict=True)]
    warm_cpu = [w / d for w, d in zip(cpu["warm"], cpu["dbt"], strict=True)]
    label = f"{n_views:,} views, one per file"
    rows = [
        Result(f"{label}: dbt parse --no-partial-parse (median)", fmt_s(median(wall["dbt"]))),
        Result(f"{label}: mvgraph graph --from-sql, cold (median)", fmt_s(median(wall["cold"]))),
        Result(f"{label}: mvgraph graph --from-sql, warm (median)", fmt_s(median(wall["warm"]))),
        Result("ratio cold / dbt parse (wall)", spread3(cold_r), f"<= {DBT_COLD_GOAL}",
               None if quick else median(cold_r) <= DBT_COLD_GOAL),
        Result("ratio warm / dbt parse (wall)", spread3(warm_r), f"<= {DBT_WARM_GOAL}",
               None if quick else median(warm_r) <= DBT_WARM_GOAL),
        Result("ratio cold / dbt parse (cpu)", spread3(cold_cpu)),
        Result("ratio warm / dbt parse (cpu)", spread3(warm_cpu)),
    ]
    notes = [f"dbt-core {dbt_version(dbt)} ({dbt}); {rounds} rounds, order alternating; new "
             "processes; `mvgraph graph --from-sql DIR -f json`, output discarded; mvgraph's "
             "bytecode compiled first (as installed)",
             *(f"dbt comparison samples {k}: wall [{fmt_samples(wall[k])}] s, "
               f"cpu [{fmt_samples(cpu[k])}] s" for k in steps)]
    return rows, notes


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
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "", dbt=True)
    small, large, catalog = (100, 1000, 200) if args.quick else (1000, 10_000, 2000)
    with scratch_dir("mvgraph-graph-build-") as work:
        # Import the parser and the graph code once, so that no run pays the imports.
        import mvgraph.sql.dialect
        import mvgraph.sql.sqlfiles  # noqa: F401

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
        if args.dbt:
            d_rows, d_notes = dbt_benchmark(args.dbt, work, args.quick)
            rows += d_rows
            notes += d_notes
        notes.append(f"best of {REPEAT} runs; in-process library calls; synthetic DAG depth 8, "
                     "fan-in 3, 500 views per file")
        print_table("graph_build: building the dependency graph", rows, notes,
                    quick=args.quick)


if __name__ == "__main__":
    main()
