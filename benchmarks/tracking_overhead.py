"""Write overhead of change tracking: pgbench TPS under each tracking mode vs no tracking.

``pgbench -i -s 10`` (the server's own pgbench), then TPC-B-like runs (``-T 10``) at 1, 4 and
8 clients under each mode of ``MODES``, a mapping of mode -> (enable, disable) functions:

* ``none``: no tracking (the baseline every ratio is taken against);
* ``triggers``: ``mvgraph track`` of the four pgbench tables (the statement-level trigger
  appending a row per writing statement);
* ``wal``: ``mvgraph track TABLES --mode wal`` (a logical slot, no trigger on the writers'
  path; ``pgbench_history`` has no primary key, so it keeps an UPDATE/DELETE-only trigger that
  TPC-B never fires), with a thread reading the slot every second during the run, as the
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
Run: ``python benchmarks/tracking_overhead.py [--quick]``.
"""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Callable, Sequence

import psycopg
from _common import (
    Result,
    database,
    median,
    mvgraph_cli,
    parse_args,
    pg_bin,
    print_table,
    progress,
    ratio_result,
    server,
    server_note,
)

TABLES = ("pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history")
CLIENTS = (1, 4, 8)
#: mode -> clients -> lowest acceptable median ratio TPS(mode) / TPS(none)
GOALS: dict[str, dict[int, float]] = {"triggers": {1: 0.90, 4: 0.90, 8: 0.90},
                                      "wal": {8: 0.97}}
_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)


def _nothing(dsn: str) -> None:
    """No tracking to turn on or off."""


def _track(*mode: str) -> Callable[[str], None]:
    def enable(dsn: str) -> None:
        mvgraph_cli("track", *TABLES, *mode, "--dsn", dsn)
    return enable


def _untrack(dsn: str) -> None:
    mvgraph_cli("untrack", *TABLES, "--dsn", dsn)


class SlotReader:
    """Reads the wal-mode slot every second in a thread, as the daemon's tick does."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, dsn: str) -> None:
        mvgraph_cli("track", *TABLES, "--mode", "wal", "--dsn", dsn)
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, args=(dsn,), daemon=True)
            self._thread.start()

    def _run(self, dsn: str) -> None:
        from mvgraph.tracking import wal

        with psycopg.connect(dsn, autocommit=True) as conn:
            while not self._stop.wait(1.0):
                wal.catch_up(conn)  # type: ignore[arg-type]

    def stop(self, dsn: str) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        _untrack(dsn)


_slot_reader = SlotReader()

#: mode -> (enable, disable); "none" is the baseline and must stay first.
MODES: dict[str, tuple[Callable[[str], None], Callable[[str], None]]] = {
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


def switch_to(dsn: str, mode: str) -> None:
    """Disable every other mode, enable this one."""
    for other, (_, disable) in MODES.items():
        if other != mode:
            disable(dsn)
    MODES[mode][0](dsn)


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


def measure(dsn: str, options: Sequence[str], rounds: int, label: str
            ) -> dict[str, list[list[float]]]:
    """TPS of every mode, per round (two runs each: ABBA)."""
    runs: dict[str, list[list[float]]] = {m: [] for m in MODES}
    for rnd in range(rounds):
        order = list(MODES) if rnd % 2 == 0 else list(reversed(MODES))
        got: dict[str, list[float]] = {m: [] for m in MODES}
        for mode in [*order, *reversed(order)]:
            switch_to(dsn, mode)
            prepare_run(dsn)
            value = tps(dsn, options)
            got[mode].append(value)
            progress(f"{label}, round {rnd + 1}: {mode}: {value:.1f} tps")
        for mode, values in got.items():
            runs[mode].append(values)
    return runs


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "")
    scale, seconds, rounds = (1, 3, 1) if args.quick else (10, 10, 4)
    results: dict[int, dict[str, list[list[float]]]] = {}
    options = {c: ["-c", str(c), "-j", str(min(c, 2)), "-T", str(seconds)] for c in CLIENTS}
    with server({"wal_level": "logical"}) as srv, database(srv, "tracking") as dsn:
        settings = server_note(srv) + f", wal_level={srv.setting('wal_level')}"
        progress(f"pgbench -i -s {scale} (setup)")
        pgbench(dsn, "-i", "-q", "-s", str(scale))
        for mode in MODES:  # install mvgraph's schema: every mode runs with it present
            switch_to(dsn, mode)
        switch_to(dsn, "none")
        pgbench(dsn, *options[8])  # warm-up, as long as a measured run
        for clients in CLIENTS:
            results[clients] = measure(dsn, options[clients], rounds, f"{clients} client(s)")
        switch_to(dsn, "none")

    rows: list[Result] = []
    notes: list[str] = []
    for clients, runs in results.items():
        base = [mean(r) for r in runs["none"]]
        rows.append(Result(f"{clients} client(s): none, TPS (median of rounds)",
                           f"{median(base):.1f}"))
        for mode in list(MODES)[1:]:
            ratios = [mean(r) / b for r, b in zip(runs[mode], base, strict=True)]
            goal = GOALS.get(mode, {}).get(clients)
            metric = f"{clients} client(s): {mode} / none, median of rounds"
            rows.append(ratio_result(metric, ratios, goal, at_least=True, quick=args.quick)
                        if goal is not None else Result(metric, f"{median(ratios):.3f}"))
            notes.append(f"{clients} client(s) {mode}: per-round ratios "
                         f"[{', '.join(f'{r:.3f}' for r in ratios)}]")
        notes.append(f"{clients} client(s) TPS per round: " + "; ".join(
            f"{m} [{', '.join('/'.join(f'{v:.0f}' for v in r) for r in runs[m])}]"
            for m in MODES))
    notes += [f"TPC-B-like, scale {scale}, {rounds} ABBA round(s) of {seconds} s runs per "
              f"client count; tracked tables: " + ", ".join(TABLES), settings]
    print_table("tracking_overhead: pgbench TPS under each tracking mode vs none", rows, notes,
                quick=args.quick)


if __name__ == "__main__":
    main()
