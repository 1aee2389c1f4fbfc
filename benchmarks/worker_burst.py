"""Worker burst: what 20 jobs due at once cost a worker with 2 concurrent jobs.

The daemon's 20 one-second schedules submit 20 refresh jobs at the same instant every second;
with ``--workers 2`` the last one starts after 9 others per job slot, so the lateness of a
burst is about 10 x the time a job slot spends per job. This measures that time, in-process:
a ``Worker`` (concurrency 2) runs bursts of 20 ``REFRESH MATERIALIZED VIEW vN`` jobs (volatile
trivial views: every job really refreshes), per round once with Python's default GIL switch
interval (5 ms) and once with 1 ms (an experiment: mvgraph does not change it), alternating
the order; reported: milliseconds per job (wall time of the burst / 20) and the time from the
burst's submission to the last job's refresh step started, median and range over rounds.
Run: ``python benchmarks/worker_burst.py [--quick]``.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from _common import Result, database, median, parse_args, print_table, progress, server

VIEWS = 20
SWITCH_INTERVAL_S = 0.001  # the candidate against Python's default

LAST_STEP = """
SELECT extract(epoch FROM max(st.started_at) - min(j.submitted_at))::float8
  FROM mvgraph.job j JOIN mvgraph.job_step st ON st.job_id = j.id
 WHERE j.id = ANY(%(ids)s)
"""


@contextmanager
def running_worker(dsn: str) -> Iterator[None]:
    from mvgraph.jobs.worker import Worker, WorkerConfig

    w = Worker(WorkerConfig(dsn, 2, poll_s=1.0, heartbeat_s=2.0))
    thread = threading.Thread(target=w.run, name="worker", daemon=True)
    thread.start()
    try:
        yield
    finally:
        w.stop()
        thread.join(60)


def burst(conn: psycopg.Connection[tuple[object, ...]]) -> tuple[float, float]:
    """Submit 20 jobs in one transaction; wait for them; (ms per job, s to last step start)."""
    t0 = time.perf_counter()
    with conn.transaction():
        ids = [int(str(conn.execute("SELECT mvgraph.submit(%s)",
                                    [f"REFRESH MATERIALIZED VIEW v{k}"]).fetchone()[0]))  # type: ignore[index]
               for k in range(VIEWS)]
    while True:
        row = conn.execute("SELECT count(*) FILTER (WHERE status IN ('queued', 'running')), "
                           "count(*) FILTER (WHERE status <> 'done') FROM mvgraph.job "
                           "WHERE id = ANY(%s)", [ids]).fetchone()
        assert row is not None
        if row[0] == 0:
            break
        time.sleep(0.005)
    wall = time.perf_counter() - t0
    if row[1]:
        raise RuntimeError(f"{row[1]} jobs did not end done")
    last = conn.execute(LAST_STEP, {"ids": ids}).fetchone()
    assert last is not None
    return wall / VIEWS * 1000, float(str(last[0]))


def main() -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "")
    rounds, bursts = (2, 3) if args.quick else (5, 10)
    from mvgraph.db.migrate import migrate

    default = sys.getswitchinterval()
    per_job: dict[float, list[float]] = {default: [], SWITCH_INTERVAL_S: []}
    last: dict[float, list[float]] = {default: [], SWITCH_INTERVAL_S: []}
    with server() as srv, database(srv, "burst") as dsn, \
            psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)  # type: ignore[arg-type]
        for k in range(VIEWS):
            conn.execute(f"CREATE MATERIALIZED VIEW v{k} AS "
                         f"SELECT {k} AS k, clock_timestamp() AS at")
        with running_worker(dsn):
            burst(conn)  # warm: graph cached, connections open
            for i in range(rounds):
                order = [default, SWITCH_INTERVAL_S]
                for sw in (order if i % 2 == 0 else order[::-1]):
                    sys.setswitchinterval(sw)
                    samples = [burst(conn) for _ in range(bursts)]
                    per_job[sw].append(median([s[0] for s in samples]))
                    last[sw].append(median([s[1] for s in samples]))
                    progress(f"round {i + 1}, switch {sw * 1000:g} ms: "
                             f"{per_job[sw][-1]:.1f} ms/job, last start "
                             f"{last[sw][-1] * 1000:.0f} ms")
        sys.setswitchinterval(default)
    rows = []
    for sw in (default, SWITCH_INTERVAL_S):
        p, lst = per_job[sw], last[sw]
        rows.append(Result(f"switch interval {sw * 1000:g} ms: ms per job (20-job burst, "
                           "2 concurrent)", f"{median(p):.1f} ({min(p):.1f}-{max(p):.1f})"))
        rows.append(Result(f"switch interval {sw * 1000:g} ms: submit -> last refresh start",
                           f"{median(lst) * 1000:.0f} ms ({min(lst) * 1000:.0f}-"
                           f"{max(lst) * 1000:.0f})"))
    ratios = [a / b for a, b in zip(per_job[SWITCH_INTERVAL_S], per_job[default], strict=True)]
    rows.append(Result("ms per job, 1 ms / 5 ms (per round)",
                       f"{median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"))
    print_table(f"worker burst: {VIEWS} jobs at once, concurrency 2, {rounds} rounds x "
                f"{bursts} bursts", rows, [], args.quick)


if __name__ == "__main__":
    main()
