"""CPU cost of each tracking-trigger variant: CPU time of the writing backend per transaction.

TPS on a shared 2-core machine swings by a factor of two from run to run, far more than a
trigger costs, so this profile measures what waiting for the CPU does not change: the CPU time
the server backend spends (``perf stat -e task-clock -p PID``: on a VM without hardware
counters, instructions are not available; needs Linux perf and the right to attach to the
server's processes) over a fixed number of TPC-B-like
transactions sent by one connection, for no trigger and for each body of
``trigger_variants.VARIANTS``, in ABBA rounds. Printed: CPU microseconds per transaction, the
extra of each variant over none, and none / variant: the TPS ratio a CPU-bound server would
see (median and range of rounds; cache and frequency effects of the neighbours remain).
``--workload empty``: each transaction is one INSERT that writes no row (issue 17);
``--workload bulk``: one INSERT of 1,000 rows into pgbench_history (what a per-row cost shows).
``--in-server``: the TPC-B-like transactions are run by a procedure in the server (a COMMIT per
loop, ``synchronous_commit = off``), 20,000 a run by default, the backend's CPU read from
``/proc/<pid>/stat``: no client, protocol or parsing in the measure, so the triggers' share of
a transaction shows with far less noise (no perf needed; the server must be local).
Run: ``python benchmarks/trigger_cost.py [--quick] [--transactions N] [--rounds N]
[--workload tpcb|empty|bulk] [--variants a,b] [--in-server]``.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import time

import psycopg
from _common import Result, database, pg_bin, print_table, progress, server, server_note, spread
from trigger_variants import VARIANTS, install_functions, use

Conn = psycopg.Connection[tuple[object, ...]]
TPCB = [
    "UPDATE pgbench_accounts SET abalance = abalance + %(d)s WHERE aid = %(a)s",
    "SELECT abalance FROM pgbench_accounts WHERE aid = %(a)s",
    "UPDATE pgbench_tellers SET tbalance = tbalance + %(d)s WHERE tid = %(t)s",
    "UPDATE pgbench_branches SET bbalance = bbalance + %(d)s WHERE bid = %(b)s",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
    "VALUES (%(t)s, %(b)s, %(a)s, %(d)s, CURRENT_TIMESTAMP)",
]
WORKLOADS = {
    "tpcb": TPCB,
    "empty": ["INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
              "SELECT %(t)s, %(b)s, %(a)s, %(d)s, CURRENT_TIMESTAMP WHERE %(d)s > 99999"],
    "bulk": ["INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
             "SELECT %(t)s, %(b)s, %(a)s, g, CURRENT_TIMESTAMP FROM generate_series(1, 1000) g"],
}


def cpu_us(dsn: str, transactions: int, scale: int, workload: str = "tpcb") -> float:
    """Backend CPU microseconds per TPC-B-like transaction, over ``transactions`` of them."""
    rng = random.Random(1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        pid = conn.info.backend_pid
        for _ in range(50):  # warm: plans prepared, caches filled
            run_one(conn, rng, scale, workload)
        perf = subprocess.Popen(["perf", "stat", "-x", ",", "-e", "task-clock", "-p",
                                 str(pid)], stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)  # attached
        for _ in range(transactions):
            run_one(conn, rng, scale, workload)
        perf.send_signal(signal.SIGINT)
        _, err = perf.communicate()
    for line in err.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2].startswith("task-clock"):
            return float(fields[0]) * 1000 / transactions  # msec -> microseconds
    raise RuntimeError(f"no task-clock from perf:\n{err}")


PROCEDURE = """
CREATE PROCEDURE bench.tpcb(n integer, scale integer) LANGUAGE plpgsql AS $$
DECLARE
    a integer; t integer; b integer; d integer; x integer;
BEGIN
    FOR i IN 1..n LOOP
        a := 1 + (random() * (100000 * scale - 1))::integer;
        t := 1 + (random() * (10 * scale - 1))::integer;
        b := 1 + (random() * (scale - 1))::integer;
        d := (random() * 10000)::integer - 5000;
        UPDATE pgbench_accounts SET abalance = abalance + d WHERE aid = a;
        SELECT abalance INTO x FROM pgbench_accounts WHERE aid = a;
        UPDATE pgbench_tellers SET tbalance = tbalance + d WHERE tid = t;
        UPDATE pgbench_branches SET bbalance = bbalance + d WHERE bid = b;
        INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (t, b, a, d, now());
        COMMIT;
    END LOOP;
END
$$"""


def proc_cpu_us(dsn: str, transactions: int, scale: int) -> float:
    """Backend CPU microseconds per TPC-B-like transaction run by ``bench.tpcb`` in the server
    (utime + stime of the backend, ``/proc``)."""
    def cpu(pid: int) -> float:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("CALL bench.tpcb(200, %s)", [scale])  # warm
        pid = conn.info.backend_pid
        before = cpu(pid)
        conn.execute("CALL bench.tpcb(%s, %s)", [transactions, scale])
        return (cpu(pid) - before) * 1e6 / transactions


def run_one(conn: Conn, rng: random.Random, scale: int, workload: str = "tpcb") -> None:
    """One transaction of the workload (TPC-B-like by default)."""
    args = {"a": rng.randint(1, 100000 * scale), "t": rng.randint(1, 10 * scale),
            "b": rng.randint(1, scale), "d": rng.randint(-5000, 5000)}
    with conn.transaction():
        for stmt in WORKLOADS[workload]:
            conn.execute(stmt, args, prepare=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke check")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--transactions", type=int, default=3000)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="tpcb")
    parser.add_argument("--in-server", action="store_true",
                        help="TPC-B-like transactions run by a procedure in the server")
    args = parser.parse_args()
    chosen = [v for v in args.variants.split(",") if v]
    scale, rounds, n = (1, 1, 300) if args.quick else (10, args.rounds, args.transactions)
    if args.in_server and not args.quick and args.transactions == 3000:
        n = 20000  # a run of about a second: the /proc clock ticks every 10 ms
    per: dict[str | None, list[float]] = {None: [], **{v: [] for v in chosen}}
    extra: dict[str, list[float]] = {v: [] for v in chosen}
    with server() as srv, database(srv, "cost") as dsn:
        settings = server_note(srv)
        subprocess.run([pg_bin("pgbench"), "-i", "-q", "-s", str(scale), dsn], check=True,
                       capture_output=True)
        with psycopg.connect(dsn, autocommit=True) as conn:
            install_functions(conn)
            if args.in_server:
                conn.execute(PROCEDURE)
            for rnd in range(rounds):
                order: list[str | None] = [None, *chosen]
                if rnd % 2:
                    order.reverse()
                got: dict[str | None, list[float]] = {}
                for variant in [*order, *reversed(order)]:
                    use(conn, variant)
                    value = proc_cpu_us(dsn, n, scale) if args.in_server else \
                        cpu_us(dsn, n, scale, args.workload)
                    got.setdefault(variant, []).append(value)
                    progress(f"round {rnd + 1}, {variant or 'none'}: {value:,.0f} "
                             f"CPU us per transaction")
                none = sum(got[None]) / 2
                per[None].append(none)
                for v in chosen:
                    per[v].append(sum(got[v]) / 2)
                    extra[v].append(sum(got[v]) / 2 - none)
            use(conn, None)
    rows = [Result("none: backend CPU us per transaction", spread(per[None]))]
    for v in chosen:
        rows.append(Result(f"{v}: extra CPU us per transaction (4 tables)",
                           spread(extra[v])))
        rows.append(Result(f"{v}: ratio none / {v} (CPU-bound TPS ratio)",
                           spread([b / x for b, x in zip(per[None], per[v], strict=True)])))
    print_table(f"trigger_cost: backend CPU time per {args.workload} transaction, by trigger "
                "body",
                rows, [f"{rounds} ABBA round(s) of {n} transactions "
                       + ("run by a procedure in the server, synchronous_commit off, "
                          f"pgbench -i -s {scale}, utime + stime of the backend (/proc)"
                          if args.in_server else
                          f"from one connection, pgbench -i -s {scale}, task-clock of the "
                          "backend (perf stat)"),
                       settings])


if __name__ == "__main__":
    main()
