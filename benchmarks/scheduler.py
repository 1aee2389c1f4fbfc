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
Run: ``python benchmarks/scheduler.py [--quick] [--rounds N] [--baseline DIR]``. With
``--baseline DIR`` (another mvgraph source tree, e.g. a ``git worktree`` of main) the daemon
rounds alternate between the two trees, each on its own database initialised by its own tree;
the table shows each tree's medians and ranges and the per-round ratio of the p99s.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from _common import (
    MVGRAPH_CLI,
    Result,
    add_baseline,
    database,
    fmt_s,
    median,
    print_table,
    progress,
    ratio_result,
    server,
    server_note,
    timed,
    tree_env,
    trees,
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
    with psycopg.connect(dsn, autocommit=True) as conn:  # mvgraph installed by its own tree
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
def daemons(dsn: str, count: int, tree: Path | None = None
            ) -> Iterator[list[subprocess.Popen[str]]]:
    """``count`` daemons (``--workers 0``) of the mvgraph in ``tree`` (default: this one),
    stopped with SIGTERM (then SIGKILL) afterwards."""
    procs = [subprocess.Popen([sys.executable, "-m", "mvgraph", "daemon", "--workers", "0",
                               "--dsn", dsn], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, text=True, env=tree_env(tree))
             for _ in range(count)]
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


@dataclass
class Variant:
    """One source tree's measurements over the rounds."""

    tree: Path
    dsn: str
    startup: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    firings: list[int] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)
    missed: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def one_daemon(v: Variant, run_s: float) -> None:
    """Start-up, memory and lateness with one daemon: one round."""
    with psycopg.connect(v.dsn, autocommit=True) as conn, job_sink(v.dsn):
        conn.execute("DELETE FROM mvgraph.schedule_slot")
        spawned = server_time(conn)
        started = time.monotonic()
        with daemons(v.dsn, 1, v.tree) as (proc,):
            first = None
            while time.monotonic() - started < 60 and proc.poll() is None:
                row = conn.execute("SELECT min(recorded_at) FROM mvgraph.schedule_slot"
                                   ).fetchone()
                if row and row[0] is not None:
                    first = row[0]
                    break
                time.sleep(0.05)
            if first is None:
                v.errors.append("no firing within 60 s (or the daemon exited)")
                return
            v.startup.append((first - spawned).total_seconds())  # type: ignore[operator]
            warm = server_time(conn)
            progress(f"one daemon ({v.tree.name}) firing for {run_s:g} s")
            time.sleep(run_s)
            mb = rss_mb(proc.pid)
            if mb is not None:
                v.rss.append(mb)
        samples = sorted(float(str(r[0])) for r in conn.execute(LATENESS, {"since": warm}))
    if not samples:
        v.errors.append("no firing recorded")
        return
    v.firings.append(len(samples))
    v.p50.append(percentile(samples, 50))
    v.p99.append(percentile(samples, 99))


def three_daemons(v: Variant, run_s: float) -> None:
    """Duplicates (and missed slots) with three daemons on one database: one round."""
    with psycopg.connect(v.dsn, autocommit=True) as conn, job_sink(v.dsn):
        conn.execute("DELETE FROM mvgraph.schedule_slot")
        since = server_time(conn)
        with daemons(v.dsn, 3, v.tree):
            progress(f"three daemons ({v.tree.name}) firing for {run_s:g} s")
            time.sleep(3)  # start-up
            lo = server_time(conn)
            time.sleep(run_s)
            hi = server_time(conn)
            time.sleep(1.5)  # the last slots of the window get recorded
        row = conn.execute(DUPLICATES, {"since": since}).fetchone()
        missed = conn.execute(MISSED, {"lo": lo, "hi": hi}).fetchone()
    assert row is not None and missed is not None
    v.duplicates.append(int(str(row[0])) + int(str(row[1])))
    v.missed.append(int(str(missed[0])))


def variant_rows(label: str, v: Variant, run_s: float, quick: bool) -> list[Result]:
    """One source tree's rows: medians (and ranges) over the rounds."""
    def ms(samples: list[float]) -> str:
        if len(samples) == 1:
            return f"{samples[0] * 1000:.1f} ms"
        return (f"{median(samples) * 1000:.1f} ms ({min(samples) * 1000:.1f}-"
                f"{max(samples) * 1000:.1f})")

    rows: list[Result] = []
    if v.startup:
        rows.append(Result(f"{label}daemon start-up (spawn to first firing; includes <= 1 s "
                           "to the next slot)", fmt_s(median(v.startup)),
                           f"<= {STARTUP_GOAL_S:g} s",
                           None if quick else median(v.startup) <= STARTUP_GOAL_S))
    if v.rss:
        rows.append(Result(f"{label}daemon resident memory (VmRSS)", f"{median(v.rss):.0f} MB",
                           f"<= {MEMORY_GOAL_MB:g} MB",
                           None if quick else median(v.rss) <= MEMORY_GOAL_MB))
    if v.p99:
        rate = median([float(n) for n in v.firings]) / run_s
        rows.append(Result(f"{label}lateness p50 ({median([float(n) for n in v.firings]):,.0f} "
                           f"firings per round, {rate:.0f} per second)", ms(v.p50)))
        rows.append(Result(f"{label}lateness p99", ms(v.p99), f"<= {P99_GOAL_S * 1000:g} ms",
                           None if quick else median(v.p99) <= P99_GOAL_S))
    if v.duplicates:
        rows.append(Result(f"{label}duplicates with 3 daemons (extra jobs for fired slots)",
                           str(sum(v.duplicates)), "0",
                           None if quick else sum(v.duplicates) == 0))
        rows.append(Result(f"{label}missed one-second slots with 3 daemons ({run_s:g} s "
                           "windows)", str(sum(v.missed))))
    rows += [Result(f"{label}daemon", e, "", False) for e in v.errors]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke check")
    parser.add_argument("--rounds", type=int, default=None,
                        help="daemon rounds per source tree (default 1, 3 with --baseline)")
    add_baseline(parser)
    args = parser.parse_args()
    n, fast, run_s = (1000, 10, 5.0) if args.quick else (10_000, FAST, 20.0)
    found = trees(args)
    rounds = args.rounds or (3 if "baseline" in found else 1)
    with server() as srv, ExitStack() as stack:
        variants: dict[str, Variant] = {}
        rows: list[Result] = []
        for name, tree in found.items():
            dsn = stack.enter_context(database(srv, f"sched_{name}", tree=tree))
            progress(f"{name}: creating {n:,} views and schedules")
            insert_s = populate(dsn, n, fast)
            if name == "this":
                rows.append(Result(f"INSERT ... SELECT of {n:,} schedules", fmt_s(insert_s)))
                rows += no_daemon_rows(dsn, n)
            variants[name] = Variant(tree, dsn)
        if daemon_available():
            order = list(variants)
            for r in range(rounds):  # alternating: each tree goes first every other round
                for name in order if r % 2 == 0 else order[::-1]:
                    one_daemon(variants[name], run_s)
                    three_daemons(variants[name], run_s)
            for name, v in variants.items():
                rows += variant_rows("" if len(variants) == 1 else f"{name}: ", v, run_s,
                                     args.quick or name != "this")
            base = variants.get("baseline")
            this = variants["this"]
            if base is not None and len(base.p99) == len(this.p99) and this.p99:
                rows.append(ratio_result("p99 lateness this / baseline (per round)",
                                         [a / b for a, b in zip(this.p99, base.p99,
                                                                strict=True)],
                                         1.0, quick=True))
        else:
            for metric, goal in (("daemon start-up", f"<= {STARTUP_GOAL_S:g} s"),
                                 ("daemon resident memory (VmRSS)", f"<= {MEMORY_GOAL_MB:g} MB"),
                                 ("lateness p50 / p99 at 100 fires per second",
                                  f"p99 <= {P99_GOAL_S * 1000:g} ms"),
                                 ("duplicates with 3 daemons", "0")):
                rows.append(Result(metric, NA, goal))
        notes = [server_note(srv), "daemons: --workers 0 with a job sink (queued jobs marked "
                 "done every 50 ms)", f"{rounds} round(s) of {run_s:g} s per source tree"
                 + (", alternating; ranges are min-max over the rounds" if len(variants) > 1
                    else "")]
        if "baseline" in found:
            notes.append(f"baseline: {found['baseline']}")
        print_table(f"scheduler: {n:,} schedules, {fast} firing every second", rows, notes,
                    args.quick)


if __name__ == "__main__":
    main()
