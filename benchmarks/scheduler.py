"""The scheduler at scale: 10,000 schedules in the table.

Setup: 10,000 trivial materialized views (``SELECT k``) and one interval schedule each, written
by one ``INSERT ... SELECT`` into ``mvgraph.schedule``: 100 fire every second (100 fires per
second), the other 9,900 once a day at a time that does not come during the run.

Measured always (no daemon needed):

* ``mvgraph schedule list --json`` over the 10,000 (a new process, as a user runs it) and the
  library's ``store.schedules`` read;
* building the 10,000 APScheduler triggers (``SlotTrigger``) and computing each next fire time.

Measured when ``mvgraph daemon --help`` exits 0 (else each row says "daemon not available"):

* start-up: spawning ``python -m mvgraph daemon --workers 0`` to its first firing recorded in
  ``mvgraph.schedule_slot`` (an upper bound: it includes the wait for the next one-second slot);
* resident memory (``VmRSS`` of ``/proc/PID/status``) after the firing run;
* lateness of firings, ``job.submitted_at - schedule_slot.slot``, p50 and p99, at 100 fires per
  second with one daemon;
* duplicates with 3 daemons on one database: jobs submitted beyond one per fired slot (the
  unique ``(schedule_id, slot)`` key makes a duplicate slot row impossible; a duplicate would be
  an extra job), and slots of the one-second schedules neither fired nor skipped (missed).

The daemons run with ``--workers 0`` and a *job sink* (this script marks their queued jobs
done every 50 ms), so that no slot is skipped because a previous refresh is still queued: the
scheduler's own lateness is measured, not the refresh throughput of a 2-core machine.

Goals: start-up <= 3 s, memory <= 200 MB, p99 lateness <= 100 ms, duplicates 0.
Run: ``python benchmarks/scheduler.py [--quick]``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

import psycopg
from _common import (
    MVGRAPH_CLI,
    Result,
    database,
    fmt_s,
    median,
    parse_args,
    print_table,
    progress,
    server,
    server_note,
    timed,
)

STARTUP_GOAL_S = 3.0
MEMORY_GOAL_MB = 200.0
P99_GOAL_S = 0.100
FAST = 100  # schedules firing every second: 100 fires per second
NA = "daemon not available"

# In batches of 1,000 views (one transaction each: max_locks_per_transaction).
SETUP = """
DO $$
BEGIN
    FOR k IN %(lo)s..%(hi)s LOOP
        EXECUTE format('CREATE MATERIALIZED VIEW bench.mv_%%s AS SELECT %%s AS k', k, k);
    END LOOP;
END
$$;
"""

# One INSERT ... SELECT: the first FAST views every second from today's midnight, the others
# once a day at noon tomorrow (not during the run); the schedule's triggers fill what and
# view_name, the owner is the inserting role.
INSERT = """
INSERT INTO mvgraph.schedule (name, what, view_oid, view_name, kind, start_at, every,
                              every_text, tz, source)
SELECT v.name, '', v.oid, '', 'interval',
       CASE WHEN v.rn <= %(fast)s THEN date_trunc('day', now())
            ELSE date_trunc('day', now()) + interval '36 hours' END,
       CASE WHEN v.rn <= %(fast)s THEN interval '1 second' ELSE interval '1 day' END,
       CASE WHEN v.rn <= %(fast)s THEN '1 second' ELSE '1 day' END,
       'UTC', 'benchmark'
  FROM (SELECT c.oid, format('%%I.%%I', n.nspname, c.relname) AS name,
               row_number() OVER (ORDER BY c.oid) AS rn
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'bench' AND c.relkind = 'm') v
"""

SINK = """
UPDATE mvgraph.job SET status = 'done', started_at = coalesce(started_at, now()),
       finished_at = now()
 WHERE background AND status = 'queued'
"""

LATENESS = """
SELECT extract(epoch FROM j.submitted_at - ss.slot)
  FROM mvgraph.schedule_slot ss JOIN mvgraph.job j ON j.id = ss.job_id
 WHERE ss.status = 'fired' AND NOT ss.manual AND ss.slot >= %(since)s
 ORDER BY 1
"""

DUPLICATES = """
SELECT (SELECT count(*) FROM mvgraph.job WHERE background AND submitted_at >= %(since)s)
     - (SELECT count(DISTINCT job_id) FROM mvgraph.schedule_slot
         WHERE status = 'fired' AND job_id IS NOT NULL AND recorded_at >= %(since)s),
       (SELECT count(*) FROM mvgraph.schedule_slot
         WHERE status = 'fired' AND job_id IS NOT NULL AND recorded_at >= %(since)s)
         - (SELECT count(DISTINCT job_id) FROM mvgraph.schedule_slot
             WHERE status = 'fired' AND job_id IS NOT NULL AND recorded_at >= %(since)s)
"""

# Slots of the one-second schedules in [lo, hi) with no row at all (neither fired nor skipped).
MISSED = """
SELECT count(*)
  FROM mvgraph.schedule s
 CROSS JOIN generate_series(date_trunc('second', %(lo)s::timestamptz),
                            %(hi)s::timestamptz - interval '1 second', interval '1 second') t
 WHERE s.every = interval '1 second'
   AND NOT EXISTS (SELECT FROM mvgraph.schedule_slot ss WHERE ss.schedule_id = s.id
                                                          AND ss.slot = t)
"""


def daemon_available() -> bool:
    """True when this mvgraph has the ``daemon`` command."""
    probe = subprocess.run([MVGRAPH_CLI, "daemon", "--help"], capture_output=True, text=True)
    return probe.returncode == 0


def populate(dsn: str, n: int, fast: int) -> float:
    """The views and the schedules; returns the seconds the INSERT ... SELECT took."""
    from mvgraph.db.migrate import migrate

    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)  # type: ignore[arg-type]
        conn.execute("CREATE SCHEMA bench")
        for lo in range(1, n + 1, 1000):  # a fixed benchmark script, not user input
            conn.execute(SETUP % {"lo": lo, "hi": min(lo + 999, n)})  # type: ignore[arg-type]
        seconds, _ = timed(lambda: conn.execute(INSERT, {"fast": fast}))
        row = conn.execute("SELECT count(*) FROM mvgraph.schedule").fetchone()
        assert row is not None and row[0] == n, row
    return seconds


def no_daemon_rows(dsn: str, n: int) -> list[Result]:
    """What can be measured without a daemon: schedule list, triggers and next fire times."""
    from mvgraph.scheduler import store
    from mvgraph.scheduler.timing import SlotTrigger

    rows: list[Result] = []
    cli = []
    for _ in range(3):
        seconds, proc = timed(lambda: subprocess.run(
            [MVGRAPH_CLI, "schedule", "list", "--json", "--dsn", dsn], capture_output=True,
            text=True))
        if proc.returncode != 0:
            raise RuntimeError(f"schedule list failed: {proc.stderr[-2000:]}")
        cli.append(seconds)
    rows.append(Result(f"`schedule list --json` of {n:,} (new process, median of 3)",
                       fmt_s(median(cli))))
    with psycopg.connect(dsn, autocommit=True) as conn:
        read_s, schedules = timed(lambda: store.schedules(conn))  # type: ignore[arg-type]
    rows.append(Result(f"store.schedules(): read {n:,} rows", fmt_s(read_s)))
    now = datetime.now(UTC)

    def build() -> list[datetime | None]:
        triggers = [SlotTrigger(s.timing) for s in schedules]
        return [t.get_next_fire_time(None, now) for t in triggers]

    build_s, fires = timed(build)
    assert all(f is not None for f in fires)
    rows.append(Result(f"{n:,} SlotTriggers built + next fire times", fmt_s(build_s)))
    return rows


@contextmanager
def daemons(dsn: str, count: int) -> Iterator[list[subprocess.Popen[str]]]:
    """``count`` daemons (``--workers 0``), stopped with SIGTERM (then SIGKILL) afterwards."""
    procs = [subprocess.Popen([sys.executable, "-m", "mvgraph", "daemon", "--workers", "0",
                               "--dsn", dsn], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, text=True) for _ in range(count)]
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


@contextmanager
def job_sink(dsn: str) -> Iterator[None]:
    """Marks queued background jobs done every 50 ms (stands in for fast workers)."""
    stop = threading.Event()

    def loop() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not stop.wait(0.05):
                conn.execute(SINK)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def server_time(conn: psycopg.Connection[tuple[object, ...]]) -> datetime:
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None and isinstance(row[0], datetime)
    return row[0]


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process (VmRSS), in MB."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def percentile(samples: Sequence[float], p: float) -> float:
    """The p-th percentile (nearest rank) of sorted samples."""
    k = max(0, min(len(samples) - 1, round(p / 100 * len(samples) + 0.5) - 1))
    return samples[k]


def one_daemon_rows(dsn: str, run_s: float, quick: bool) -> list[Result]:
    """Start-up, memory and lateness with one daemon."""
    rows: list[Result] = []
    with psycopg.connect(dsn, autocommit=True) as conn, job_sink(dsn):
        conn.execute("DELETE FROM mvgraph.schedule_slot")
        spawned = server_time(conn)
        started = time.monotonic()
        with daemons(dsn, 1) as (proc,):
            first = None
            while time.monotonic() - started < 60 and proc.poll() is None:
                row = conn.execute("SELECT min(recorded_at) FROM mvgraph.schedule_slot"
                                   ).fetchone()
                if row and row[0] is not None:
                    first = row[0]
                    break
                time.sleep(0.05)
            if first is None:
                return [Result("daemon start-up", "no firing within 60 s (or it exited)",
                               f"<= {STARTUP_GOAL_S:g} s", False)]
            startup = (first - spawned).total_seconds()  # type: ignore[operator]
            rows.append(Result("daemon start-up (spawn to first firing; includes <= 1 s to "
                               "the next slot)", fmt_s(startup), f"<= {STARTUP_GOAL_S:g} s",
                               None if quick else startup <= STARTUP_GOAL_S))
            warm = server_time(conn)
            progress(f"one daemon firing for {run_s:g} s")
            time.sleep(run_s)
            mb = rss_mb(proc.pid)
            rows.append(Result("daemon resident memory (VmRSS)",
                               f"{mb:.0f} MB" if mb is not None else "unknown",
                               f"<= {MEMORY_GOAL_MB:g} MB",
                               None if quick or mb is None else mb <= MEMORY_GOAL_MB))
        samples = sorted(float(str(r[0])) for r in conn.execute(LATENESS, {"since": warm}))
    if not samples:
        rows.append(Result("lateness of firings", "no firing recorded", "", False))
        return rows
    rate = len(samples) / run_s
    rows.append(Result(f"lateness p50 ({len(samples):,} firings, {rate:.0f} per second)",
                       f"{percentile(samples, 50) * 1000:.1f} ms"))
    p99 = percentile(samples, 99)
    rows.append(Result("lateness p99", f"{p99 * 1000:.1f} ms", f"<= {P99_GOAL_S * 1000:g} ms",
                       None if quick else p99 <= P99_GOAL_S))
    return rows


def three_daemon_rows(dsn: str, run_s: float, quick: bool) -> list[Result]:
    """Duplicates (and missed slots) with three daemons on one database."""
    with psycopg.connect(dsn, autocommit=True) as conn, job_sink(dsn):
        conn.execute("DELETE FROM mvgraph.schedule_slot")
        since = server_time(conn)
        with daemons(dsn, 3):
            progress(f"three daemons firing for {run_s:g} s")
            time.sleep(3)  # start-up
            lo = server_time(conn)
            time.sleep(run_s)
            hi = server_time(conn)
            time.sleep(1.5)  # the last slots of the window get recorded
        row = conn.execute(DUPLICATES, {"since": since}).fetchone()
        missed = conn.execute(MISSED, {"lo": lo, "hi": hi}).fetchone()
    assert row is not None and missed is not None
    extra_jobs, shared = int(str(row[0])), int(str(row[1]))
    duplicates = extra_jobs + shared
    return [Result("duplicates with 3 daemons (extra jobs for fired slots)", str(duplicates),
                   "0", None if quick else duplicates == 0),
            Result(f"missed one-second slots with 3 daemons ({run_s:g} s window)",
                   str(missed[0]))]


def main() -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "")
    n, fast, run_s = (1000, 10, 5.0) if args.quick else (10_000, FAST, 20.0)
    with server() as srv, database(srv, "sched") as dsn:
        progress(f"creating {n:,} views and schedules")
        insert_s = populate(dsn, n, fast)
        rows = [Result(f"INSERT ... SELECT of {n:,} schedules", fmt_s(insert_s))]
        rows += no_daemon_rows(dsn, n)
        if daemon_available():
            rows += one_daemon_rows(dsn, run_s, args.quick)
            rows += three_daemon_rows(dsn, run_s, args.quick)
        else:
            for metric, goal in (("daemon start-up", f"<= {STARTUP_GOAL_S:g} s"),
                                 ("daemon resident memory (VmRSS)", f"<= {MEMORY_GOAL_MB:g} MB"),
                                 ("lateness p50 / p99 at 100 fires per second",
                                  f"p99 <= {P99_GOAL_S * 1000:g} ms"),
                                 ("duplicates with 3 daemons", "0")):
                rows.append(Result(metric, NA, goal))
        print_table(f"scheduler: {n:,} schedules, {fast} firing every second", rows,
                    [server_note(srv), "daemons: --workers 0 with a job sink (queued jobs "
                     "marked done every 50 ms)"], args.quick)


if __name__ == "__main__":
    main()
