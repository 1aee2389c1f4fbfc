"""Write overhead of change tracking: pgbench TPS under each tracking mode vs no tracking.

``pgbench -i -s 10`` (the server's own pgbench), then TPC-B-like runs (``-T 10``) at 1, 4 and
8 clients under each mode of ``MODES``, a mapping of mode -> (enable, disable) functions:

* ``none``: no tracking (the baseline every ratio is taken against);
* ``triggers``: ``mvgraph track`` of the four pgbench tables (the statement-level trigger
  appending a row per writing statement);
* ``wal``: ``mvgraph track TABLES --mode wal`` (a logical slot, no trigger on the writers'
  path; ``pgbench_history`` has no primary key, so it keeps an UPDATE/DELETE-only trigger that
  TPC-B never fires), with a process reading the slot every second during the run, as the
  daemon does.

The server runs with ``wal_level = logical`` for every mode, so that all of them are compared
on one configuration (``benchmarks/wal_tracking.py`` also prints the decoding CPU). Each round
runs the modes in one order and then in the reverse order (ABBA; the first order alternates
between rounds), so that drift (table growth, caches, the neighbours on a shared machine) does
not favour one side. Before each run, every mode is disabled but the one
measured, the change logs are emptied (as compaction after each refresh keeps them: this
benchmark has no views that read them), the pgbench tables are vacuumed and a checkpoint is
taken. A mode's ratio in a round is its mean TPS over the mean TPS of ``none`` in that round;
goals are judged on the median of the per-round ratios (range printed too).
``--baseline DIR``: another mvgraph tree measured in the same run, in a database of its own
initialised and tracked by it (its slot read by a process importing it), the sides alternating
by round; printed also: each round's (mode / none) of this tree over the baseline's.
``MVGRAPH_BENCH_CLIENTS=8`` runs one client count only.
Run: ``python benchmarks/tracking_overhead.py [--quick] [--baseline DIR]``.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

import psycopg
from _common import (
    Result,
    database,
    median,
    parse_args,
    pg_bin,
    print_table,
    progress,
    ratio_result,
    server,
    server_note,
    spread,
    tree_cli,
    trees,
)
from wal_tracking import Consumer

TABLES = ("pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history")
# MVGRAPH_BENCH_CLIENTS="8" narrows a run
CLIENTS = tuple(int(c) for c in os.environ.get("MVGRAPH_BENCH_CLIENTS", "1,4,8").split(","))
#: mode -> clients -> lowest acceptable median ratio TPS(mode) / TPS(none)
GOALS: dict[str, dict[int, float]] = {"triggers": {1: 0.90, 4: 0.90, 8: 0.90},
                                      "wal": {8: 0.97}}
_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)


Tree = Path | None  # the mvgraph source tree a database is tracked by (None: this one)


def _nothing(dsn: str, tree: Tree) -> None:
    """No tracking to turn on or off."""


def _track(*mode: str) -> Callable[[str, Tree], None]:
    def enable(dsn: str, tree: Tree) -> None:
        tree_cli(tree, "track", *TABLES, *mode, "--dsn", dsn)
    return enable


def _untrack(dsn: str, tree: Tree) -> None:
    tree_cli(tree, "untrack", *TABLES, "--dsn", dsn)


class SlotReader:
    """Reads the wal-mode slot every second in a process of its own (mvgraph from the
    database's tree), as the daemon's tick does."""

    def __init__(self) -> None:
        self._consumer: Consumer | None = None

    def start(self, dsn: str, tree: Tree) -> None:
        tree_cli(tree, "track", *TABLES, "--mode", "wal", "--dsn", dsn)
        if self._consumer is None:
            self._consumer = Consumer(dsn, tree)

    def stop(self, dsn: str, tree: Tree) -> None:
        if self._consumer is not None:
            self._consumer.finish()
            self._consumer.__exit__()
            self._consumer = None
        _untrack(dsn, tree)


_slot_reader = SlotReader()

#: mode -> (enable, disable); "none" is the baseline and must stay first.
MODES: dict[str, tuple[Callable[[str, Tree], None], Callable[[str, Tree], None]]] = {
    "none": (_nothing, _nothing),
    "triggers": (_track("--mode", "triggers"), _untrack),
    "wal": (_slot_reader.start, _slot_reader.stop),
}


def pgbench(dsn: str, *args: str) -> str:
    """Run pgbench; return its standard output."""
    proc = subprocess.run([pg_bin("pgbench"), *args, dsn], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pgbench {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def tps(dsn: str, options: Sequence[str]) -> float:
    """TPS of one TPC-B-like run."""
    out = pgbench(dsn, *options)
    m = _TPS.search(out)
    if not m:
        raise RuntimeError(f"no tps line in pgbench output:\n{out}")
    return float(m.group(1))


def switch_to(dsn: str, mode: str, tree: Tree = None) -> None:
    """Disable every other mode, enable this one."""
    for other, (_, disable) in MODES.items():
        if other != mode:
            disable(dsn, tree)
    MODES[mode][0](dsn, tree)


def prepare_run(dsn: str) -> None:
    """Empty the change logs (mvgraph's tables holding change rows), VACUUM, CHECKPOINT."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        logs = [str(r[0]) for r in conn.execute(
            "SELECT c.oid::regclass::text FROM pg_class c "
            "WHERE c.relnamespace = 'mvgraph'::regnamespace AND c.relkind = 'r' "
            "AND c.relname IN ('change_log', 'write_log')").fetchall()]
        if logs:
            conn.execute("TRUNCATE " + ", ".join(logs))
        conn.execute("VACUUM " + ", ".join(TABLES))
        conn.execute("CHECKPOINT")


def measure(dsns: dict[str, str], sides: dict[str, Path], options: Sequence[str],
            rounds: int, label: str) -> dict[str, dict[str, list[list[float]]]]:
    """TPS of every mode on every side, per round (two runs each: ABBA; the sides alternate)."""
    runs: dict[str, dict[str, list[list[float]]]] = {
        side: {m: [] for m in MODES} for side in sides}
    for rnd in range(rounds):
        for side in (list(sides) if rnd % 2 == 0 else list(reversed(sides))):
            tree = sides[side] if side != "this" else None
            order = list(MODES) if rnd % 2 == 0 else list(reversed(MODES))
            got: dict[str, list[float]] = {m: [] for m in MODES}
            for mode in [*order, *reversed(order)]:
                switch_to(dsns[side], mode, tree)
                prepare_run(dsns[side])
                value = tps(dsns[side], options)
                got[mode].append(value)
                progress(f"{side}, {label}, round {rnd + 1}: {mode}: {value:.1f} tps")
            switch_to(dsns[side], "none", tree)  # no trigger or slot while the other side runs
            for mode, values in got.items():
                runs[side][mode].append(values)
    return runs


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "")
    scale, seconds, rounds = (1, 3, 1) if args.quick else (10, 10, 4)
    sides = trees(args)
    results: dict[int, dict[str, dict[str, list[list[float]]]]] = {}
    options = {c: ["-c", str(c), "-j", str(min(c, 2)), "-T", str(seconds)] for c in CLIENTS}
    with server({"wal_level": "logical"}) as srv, ExitStack() as stack:
        dsns = {side: stack.enter_context(database(srv, f"tracking_{side}", tree=tree))
                for side, tree in sides.items()}
        settings = server_note(srv) + f", wal_level={srv.setting('wal_level')}"
        for side, dsn in dsns.items():
            tree = sides[side] if side != "this" else None
            progress(f"{side}: pgbench -i -s {scale} (setup)")
            pgbench(dsn, "-i", "-q", "-s", str(scale))
            for mode in MODES:  # every mode runs with mvgraph's schema present
                switch_to(dsn, mode, tree)
            switch_to(dsn, "none", tree)
            pgbench(dsn, *options[max(CLIENTS)])  # warm-up, as long as a measured run
        for clients in CLIENTS:
            results[clients] = measure(dsns, sides, options[clients], rounds,
                                       f"{clients} client(s)")

    rows: list[Result] = []
    notes: list[str] = []
    ratios: dict[tuple[str, str, int], list[float]] = {}
    for side in sides:
        label = "" if len(sides) == 1 else f"{side}: "
        for clients, per_side in results.items():
            runs = per_side[side]
            base = [mean(r) for r in runs["none"]]
            rows.append(Result(f"{label}{clients} client(s): none, TPS (median of rounds)",
                               f"{median(base):.1f}"))
            for mode in list(MODES)[1:]:
                got = [mean(r) / b for r, b in zip(runs[mode], base, strict=True)]
                ratios[(side, mode, clients)] = got
                goal = GOALS.get(mode, {}).get(clients)
                metric = f"{label}{clients} client(s): {mode} / none, median of rounds"
                rows.append(ratio_result(metric, got, goal, at_least=True, quick=args.quick)
                            if goal is not None else Result(metric, f"{median(got):.3f}"))
                notes.append(f"{label}{clients} client(s) {mode}: per-round ratios "
                             f"[{', '.join(f'{r:.3f}' for r in got)}]")
            notes.append(f"{label}{clients} client(s) TPS per round: " + "; ".join(
                f"{m} [{', '.join('/'.join(f'{v:.0f}' for v in r) for r in runs[m])}]"
                for m in MODES))
    if "baseline" in sides:
        for clients in CLIENTS:
            for mode in list(MODES)[1:]:
                rel = [t / b for t, b in zip(ratios[("this", mode, clients)],
                                             ratios[("baseline", mode, clients)], strict=True)]
                rows.append(Result(f"{clients} client(s): ({mode} / none) this / baseline, "
                                   "per round", spread(rel)))
        notes.append(f"baseline: {sides['baseline']}; each side in its own database, "
                     "initialised and tracked by its own tree, the sides alternating by round")
    notes += [f"TPC-B-like, scale {scale}, {rounds} ABBA round(s) of {seconds} s runs per "
              f"client count; tracked tables: " + ", ".join(TABLES), settings]
    print_table("tracking_overhead: pgbench TPS under each tracking mode vs none", rows, notes,
                quick=args.quick)


if __name__ == "__main__":
    main()
