"""Start-up cost of the ``mvgraph`` command line, separated from any per-view cost.

Side by side in each round (new processes, alternating):

* ``python -c pass``: the interpreter alone (same venv, same site-packages);
* ``mvgraph --version`` (and ``mvgraph --help``, informational);
* ``mvgraph plan mv5`` on the demo database (the examples ``gaussdb_nested`` and ``analytics``
  loaded into a fresh database, tracked and refreshed once, like ``mvgraph demo``);
* the floor of any Python tool doing that: ``python -c "import psycopg, networkx;
  psycopg.connect(DSN).execute('select 1')"``.

It also checks, in a subprocess each, which heavy modules ``--version``, ``--help`` and ``plan``
load (``--version``/``--help`` must load none of psycopg, networkx, sqlglot, rich; a plan reads
the catalog only, so no sqlglot).

Goals (median of the per-round ratios): ``--version`` / ``python -c pass`` <= 3;
``plan mv5`` / floor <= 1.5.

With ``--dbt PATH`` (a virtual environment holding dbt-core 1.10 and dbt-postgres 1.9, see
``_dbt.py``), ``dbt --version`` joins the rounds (no network: its PyPI lookup fails at once),
with the goal ``mvgraph --version`` / ``dbt --version`` <= 0.10.

Run: ``python benchmarks/startup.py [--quick] [--dbt PATH]``.
"""

from __future__ import annotations

import subprocess
import sys

from _common import (
    MVGRAPH_CLI,
    Result,
    database,
    fmt_s,
    fmt_samples,
    median,
    mvgraph_cli,
    parse_args,
    print_table,
    progress,
    ratio_result,
    server,
    server_note,
    timed,
)
from _dbt import dbt_env, dbt_executable, dbt_version

from mvgraph.db.connect import connect
from mvgraph.db.scripts import run_files

VERSION_GOAL = 3.0
DBT_VERSION_GOAL = 0.10  # mvgraph --version / dbt --version
PLAN_GOAL = 1.5
HEAVY = ("psycopg", "networkx", "sqlglot", "rich", "psycopg_pool", "typer")

_PROBE = f"""
import sys
sys.argv = ["mvgraph", *sys.argv[1:]]
try:
    from mvgraph.entry import main
    main()
except SystemExit:
    pass
finally:
    loaded = {{m.split(".")[0] for m in sys.modules}}
    sys.stderr.write("LOADED " + " ".join(sorted(loaded & set({HEAVY!r}))) + "\\n")
"""


def run(*args: str, env: dict[str, str] | None = None) -> None:
    """Run a process, output discarded, failing loudly."""
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def loaded_modules(*args: str) -> list[str]:
    """The heavy top-level modules an ``mvgraph`` invocation imports (a subprocess)."""
    proc = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True)
    line = next(x for x in proc.stderr.splitlines() if x.startswith("LOADED"))
    return line.split()[1:]


def main() -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "", dbt=True)
    rounds = 3 if args.quick else 15
    dbt = dbt_executable(args.dbt) if args.dbt else None
    from mvgraph.commands.demo import demo_files

    files = demo_files()  # exactly what `mvgraph demo` loads
    with server() as srv, database(srv, "startup") as dsn:
        settings = server_note(srv)
        progress(f"loading {len(files)} fixture files, tracking, refreshing once (setup)")
        with connect(dsn) as conn:
            run_files(conn, files)
        mvgraph_cli("track", "--all", "--dsn", dsn)
        mvgraph_cli("refresh", "*", "--dsn", dsn, "--json")
        mvgraph_cli("plan", "mv5", "--dsn", dsn)  # warm-up
        floor_code = ("import psycopg, networkx; "
                      f"psycopg.connect({dsn!r}).execute('select 1')")
        commands = {
            "pass": [sys.executable, "-c", "pass"],
            "version": [MVGRAPH_CLI, "--version"],
            "help": [MVGRAPH_CLI, "--help"],
            "plan": [MVGRAPH_CLI, "plan", "mv5", "--dsn", dsn],
            "floor": [sys.executable, "-c", floor_code],
        }
        envs: dict[str, dict[str, str] | None] = dict.fromkeys(commands)
        if dbt is not None:
            commands["dbt"] = [dbt, "--version"]
            envs["dbt"] = dbt_env()
        for key, cmd in commands.items():  # warm the page cache
            run(*cmd, env=envs[key])
        times: dict[str, list[float]] = {k: [] for k in commands}
        for rnd in range(rounds):
            order = list(commands) if rnd % 2 == 0 else list(reversed(commands))
            for key in order:
                times[key].append(timed(  # type: ignore[misc]
                    lambda key=key: run(*commands[key], env=envs[key]))[0])
            progress(f"round {rnd + 1}: " + ", ".join(f"{k} {v[-1]:.3f} s"
                                                     for k, v in times.items()))
        loads = {name: loaded_modules(*argv) for name, argv in (
            ("--version", ["--version"]), ("--help", ["--help"]),
            ("plan mv5", ["plan", "mv5", "--dsn", dsn]))}

    version_ratios = [v / p for v, p in zip(times["version"], times["pass"], strict=True)]
    help_ratios = [v / p for v, p in zip(times["help"], times["pass"], strict=True)]
    plan_ratios = [v / f for v, f in zip(times["plan"], times["floor"], strict=True)]
    forbidden = {"psycopg", "networkx", "sqlglot", "rich"}
    rows = [
        *(Result(f"{label} (median)", fmt_s(median(times[key]))) for key, label in (
            ("pass", "python -c pass"), ("version", "mvgraph --version"),
            ("help", "mvgraph --help"), ("plan", "mvgraph plan mv5"),
            ("floor", "floor: python -c 'import psycopg, networkx; connect; select 1'"))),
        ratio_result("ratio --version / python -c pass", version_ratios, VERSION_GOAL,
                     quick=args.quick),
        Result("ratio --help / python -c pass", f"{median(help_ratios):.2f} "
               f"({min(help_ratios):.2f}-{max(help_ratios):.2f})"),
        ratio_result("ratio plan mv5 / floor", plan_ratios, PLAN_GOAL, quick=args.quick),
        *(Result(f"heavy modules loaded by {name}", " ".join(mods) or "none",
                 "no psycopg, networkx, sqlglot, rich" if name != "plan mv5" else "no sqlglot",
                 not (set(mods) & (forbidden if name != "plan mv5" else {"sqlglot"})))
          for name, mods in loads.items()),
    ]
    if dbt is not None:
        dbt_ratios = [v / d for v, d in zip(times["version"], times["dbt"], strict=True)]
        rows += [
            Result("dbt --version (median)", fmt_s(median(times["dbt"]))),
            Result("ratio mvgraph --version / dbt --version",
                   f"{median(dbt_ratios):.3f} ({min(dbt_ratios):.3f}-{max(dbt_ratios):.3f})",
                   f"<= {DBT_VERSION_GOAL}",
                   None if args.quick else median(dbt_ratios) <= DBT_VERSION_GOAL),
        ]
    notes = [
        *([f"dbt-core {dbt_version(dbt)} ({dbt}), run without network"] if dbt else []),
        f"median (range) of {rounds} per-round ratios; rounds alternate the order of the "
        "commands; every command is a new process",
        *(f"samples {key}: [{fmt_samples(v)}] s" for key, v in times.items()),
        f"demo database: {len(files)} fixture files (gaussdb_nested, analytics), tracked, "
        "refreshed once",
        settings,
    ]
    print_table("startup: mvgraph start-up against the interpreter and a psycopg floor", rows,
                notes, quick=args.quick)


if __name__ == "__main__":
    main()
