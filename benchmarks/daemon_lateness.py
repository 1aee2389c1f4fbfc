"""Daemon lateness: 20 views, each refreshed every second, by ``mvgraph daemon --workers 2``.

Setup: 20 trivial materialized views (``SELECT k, clock_timestamp()``: volatile, so every
run really refreshes), each scheduled with
``mvgraph schedule add VIEW --every 1s`` (the command line, as a user does it). Then, per round,
``python -m mvgraph daemon --workers 2`` runs for 60 s (``--quick``: 15 s) after a warm-up
(every schedule fired once after the start, then 3 s).
For every one-second slot of every schedule in the measured window (whole seconds, server
clock), from the database afterwards:

* lateness from the slot to the job submitted (``job.submitted_at``), to the job started
  (``job.started_at``, a worker claimed it) and to the refresh step started
  (``job_step.started_at`` of the view's step: the REFRESH is sent): p50, p99, max;
* missed slots: no row in ``mvgraph.schedule_slot`` or a row ``missed``; skipped slots (the
  overlap rule: the previous run of the view was still going) are counted apart, and both
  together are "slots without a run"; a fired slot whose job did not end ``done`` is "failed";
* duplicates: jobs submitted for the views in the window beyond one per fired slot, plus
  refresh steps beyond one per job, plus jobs claimed again (``attempt > 1``: a requeued job
  runs its refresh again) (two runs of one slot);
* the daemon's CPU (``/proc/PID/stat`` utime + stime over the window, as a share of one core).

``--baseline DIR`` (alias ``--compare DIR``): a second source tree (e.g. ``git worktree`` or
``git archive`` of main) run in the same server, alternating rounds (``PYTHONPATH=DIR``), each
variant in its own database initialised by its own tree; the table shows both, and the per-round
ratios this / baseline of the p99s (median and range).

Goals (after the warm-up, 2 workers, 20 fires per second): slot -> refresh start p99
<= 100 ms, 0 missed, 0 duplicates.
Run: ``python benchmarks/daemon_lateness.py [--quick] [--rounds N] [--workers N]
[--baseline DIR] [--keep-log FILE] [--profile PREFIX]`` (py-spy: ``pip install py-spy``).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import IO

import psycopg
from _common import (
    Result,
    Server,
    add_baseline,
    database,
    median,
    print_table,
    progress,
    ratio_result,
    server,
    server_note,
    tree_env,
    trees,
)

VIEWS = 20
P99_GOAL_S = 0.100
WARMUP_S = 3.0

# Per fired slot in the window: lateness to submitted, started, refresh step started; job
# status; refresh steps of the job.
PER_SLOT = """
SELECT extract(epoch FROM j.submitted_at - ss.slot)::float8,
       extract(epoch FROM j.started_at - ss.slot)::float8,
       extract(epoch FROM (SELECT min(st.started_at) FROM mvgraph.job_step st
                            WHERE st.job_id = j.id AND st.status = 'done') - ss.slot)::float8,
       j.status,
       (SELECT count(*) FROM mvgraph.job_step st WHERE st.job_id = j.id
                                                   AND st.status = 'done'),
       j.attempt
  FROM mvgraph.schedule_slot ss JOIN mvgraph.job j ON j.id = ss.job_id
 WHERE ss.slot >= %(lo)s AND ss.slot < %(hi)s AND NOT ss.manual
"""

# Every (schedule, second) of the window with what became of it.
OUTCOMES = """
SELECT coalesce(CASE WHEN ss.status = 'fired' AND ss.job_id IS NULL THEN 'waiting'
                     ELSE ss.status END, 'no row'), count(*)
  FROM mvgraph.schedule s
 CROSS JOIN generate_series(%(lo)s::timestamptz, %(hi)s::timestamptz - interval '1 second',
                            interval '1 second') t
  LEFT JOIN mvgraph.schedule_slot ss ON ss.schedule_id = s.id AND ss.slot = t
 GROUP BY 1
"""

# Jobs submitted for the scheduled views in the window beyond those of fired slots.
EXTRA_JOBS = """
SELECT (SELECT count(*) FROM mvgraph.job j
         WHERE j.background AND j.submitted_at >= %(lo)s
           AND j.submitted_at < %(hi)s + interval '1 second'
           AND j.statement IN (SELECT what FROM mvgraph.schedule))
     - (SELECT count(DISTINCT ss.job_id) FROM mvgraph.schedule_slot ss
          JOIN mvgraph.job j ON j.id = ss.job_id
         WHERE j.submitted_at >= %(lo)s AND j.submitted_at < %(hi)s + interval '1 second')
"""

ARMED = """
SELECT count(DISTINCT schedule_id) FROM mvgraph.schedule_slot
 WHERE slot > %(since)s AND status = 'fired' AND NOT manual
"""


@dataclass
class Round:
    """One daemon run's measurements."""

    variant: str
    submitted: list[float]
    started: list[float]
    step: list[float]
    outcomes: dict[str, int]
    failed: int
    duplicates: int
    reruns: int  # jobs claimed again (attempt > 1): their refresh may have run twice
    cpu: float  # share of one core
    slots: int


def percentile(samples: Sequence[float], p: float) -> float:
    """The p-th percentile (nearest rank) of samples."""
    s = sorted(samples)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


def ms(v: float) -> str:
    return f"{v * 1000:.0f} ms"


def stats(samples: Sequence[float]) -> str:
    if not samples:
        return "none"
    return (f"p50 {ms(percentile(samples, 50))}, p99 {ms(percentile(samples, 99))}, "
            f"max {ms(max(samples))}")


def setup(dsn: str, env: dict[str, str]) -> None:
    """The views, and a one-second schedule each through the command line."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA bench")
        for k in range(1, VIEWS + 1):
            conn.execute(f"CREATE MATERIALIZED VIEW bench.v{k} AS "
                         f"SELECT {k} AS k, clock_timestamp() AS at")
    for k in range(1, VIEWS + 1):
        proc = subprocess.run([sys.executable, "-m", "mvgraph", "schedule", "add",
                               f"bench.v{k}", "--every", "1s", "--dsn", dsn],
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"schedule add failed: {proc.stdout}{proc.stderr}")


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def server_now(conn: psycopg.Connection[tuple[object, ...]]) -> datetime:
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None and isinstance(row[0], datetime)
    return row[0]


def one_round(variant: str, dsn: str, env: dict[str, str], workers: int, run_s: float,
              log_path: str | None, profile: str | None = None) -> Round:
    """Run a daemon for the warm-up plus ``run_s``; measure the whole seconds in between."""
    with ExitStack() as stack:
        log: IO[str] | int = (stack.enter_context(open(log_path, "a", encoding="utf-8"))
                              if log_path else subprocess.DEVNULL)
        return _round(variant, dsn, env, workers, run_s, log, profile)


def _round(variant: str, dsn: str, env: dict[str, str], workers: int, run_s: float,
           log: IO[str] | int, profile: str | None) -> Round:
    with psycopg.connect(dsn, autocommit=True) as conn:
        proc = subprocess.Popen([sys.executable, "-m", "mvgraph", "daemon", "--workers",
                                 str(workers), "--dsn", dsn], stdout=log, stderr=log, env=env)
        try:
            spawned = server_now(conn)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None:
                # warm: every schedule armed (a slot after the start fired); the catch-up of
                # the slots missed before the start is not measured
                row = conn.execute(ARMED, {"since": spawned}).fetchone()
                if row is not None and row[0] == VIEWS:
                    break
                time.sleep(0.2)
            else:
                raise RuntimeError(f"{variant}: the daemon did not fire every schedule "
                                   "within 120 s")
            time.sleep(WARMUP_S)
            start = server_now(conn)
            lo = start.replace(microsecond=0) + timedelta(seconds=1)
            ticks0 = cpu_ticks(proc.pid)
            spy = None
            if profile:
                spy = subprocess.Popen(
                    [os.path.join(os.path.dirname(sys.executable), "py-spy"), "record",
                     "--pid", str(proc.pid), "--duration", str(int(run_s)), "--rate", "250",
                     "--format", "raw", "--idle", "--threads", "--nonblocking",
                     "-o", f"{profile}.{variant}.txt"], stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)
            t0 = time.monotonic()
            time.sleep(max(0.0, (lo - start).total_seconds()) + run_s)
            ticks1 = cpu_ticks(proc.pid)
            cpu = (ticks1 - ticks0) / os.sysconf("SC_CLK_TCK") / (time.monotonic() - t0)
            hi = lo + timedelta(seconds=int(run_s))
            if spy is not None:
                spy.wait(30)
            # the last slots get their runs
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and server_now(conn) < hi + timedelta(seconds=2):
                time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        rows = conn.execute(PER_SLOT, {"lo": lo, "hi": hi}).fetchall()
        outcomes = {str(k): int(str(n)) for k, n in
                    conn.execute(OUTCOMES, {"lo": lo, "hi": hi}).fetchall()}
        extra = conn.execute(EXTRA_JOBS, {"lo": lo, "hi": hi}).fetchone()
        # jobs left queued by the stop: not this round's business, and not the next one's
        conn.execute("UPDATE mvgraph.job SET status = 'cancelled', finished_at = now() "
                     "WHERE background AND status IN ('queued', 'running')")
    assert extra is not None
    submitted = [float(str(r[0])) for r in rows]
    started = [float(str(r[1])) for r in rows if r[1] is not None]
    step = [float(str(r[2])) for r in rows if r[2] is not None]
    failed = sum(1 for r in rows if r[3] != "done")
    dup_steps = sum(max(0, int(str(r[4])) - 1) for r in rows)
    reruns = sum(1 for r in rows if int(str(r[5])) > 1)
    return Round(variant, submitted, started, step, outcomes, failed,
                 int(str(extra[0])) + dup_steps, reruns, cpu, VIEWS * int(run_s))


def summary(variant: str, rounds: list[Round], quick: bool) -> list[Result]:
    """The table rows of one variant: pooled percentiles, counts, per-round p99."""
    rs = [r for r in rounds if r.variant == variant]
    pool = {k: [x for r in rs for x in getattr(r, k)] for k in ("submitted", "started", "step")}
    slots = sum(r.slots for r in rs)
    out: dict[str, int] = {}
    for r in rs:
        for k, n in r.outcomes.items():
            out[k] = out.get(k, 0) + n
    missed = out.get("missed", 0) + out.get("no row", 0)
    skipped = out.get("skipped", 0)
    dups = sum(r.duplicates for r in rs)
    reruns = sum(r.reruns for r in rs)
    failed = sum(r.failed for r in rs)
    p99s = [percentile(r.step, 99) for r in rs]
    p99 = percentile(pool["step"], 99)
    tag = f"[{variant}] "
    return [
        Result(f"{tag}slot -> job submitted ({len(pool['submitted'])} firings of {slots} slots)",
               stats(pool["submitted"])),
        Result(f"{tag}slot -> job started", stats(pool["started"])),
        Result(f"{tag}slot -> refresh step started", stats(pool["step"]),
               f"p99 <= {P99_GOAL_S * 1000:g} ms", None if quick else p99 <= P99_GOAL_S),
        Result(f"{tag}per-round p99 slot -> refresh start (median, range)",
               f"{ms(median(p99s))} ({ms(min(p99s))}-{ms(max(p99s))})"),
        Result(f"{tag}missed slots (no row, or missed)", str(missed), "0",
               None if quick else missed == 0),
        Result(f"{tag}skipped slots (overlap: previous run still going)", str(skipped)),
        Result(f"{tag}fired, job not done / still waiting",
               f"{failed} / {out.get('waiting', 0)}"),
        Result(f"{tag}duplicate runs: extra jobs or steps / jobs run again (attempt > 1)",
               f"{dups} / {reruns}", "0", None if quick else dups + reruns == 0),
        Result(f"{tag}daemon CPU (share of one core, median of rounds)",
               f"{median([r.cpu for r in rs]) * 100:.0f} %"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="15 s rounds, 1 round")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per variant")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=None, help="measured seconds a round")
    add_baseline(parser)  # --baseline DIR, alias --compare DIR
    parser.add_argument("--keep-log", default=None, help="append the daemons' logs here")
    parser.add_argument("--profile", default=None,
                        help="py-spy record (collapsed stacks, idle too) to PREFIX.VARIANT.txt")
    args = parser.parse_args()
    run_s = args.seconds or (15.0 if args.quick else 60.0)
    rounds_n = args.rounds or (1 if args.quick else 3)
    variants = trees(args)  # "this", and "baseline" with --baseline
    rounds: list[Round] = []
    with server() as srv:
        dsns: dict[str, str] = {}
        envs: dict[str, dict[str, str]] = {}
        stack = []
        for name, path in variants.items():
            env = tree_env(path)
            cm = database(srv, f"late_{name}", tree=path)  # installed by its own tree
            dsns[name] = cm.__enter__()
            stack.append(cm)
            envs[name] = env
            progress(f"{name}: {VIEWS} views, schedules every 1s ({path})")
            setup(dsns[name], env)
        try:
            order = list(variants)
            for i in range(rounds_n):
                for name in (order if i % 2 == 0 else order[::-1]):
                    progress(f"round {i + 1}: {name}, daemon --workers {args.workers}, "
                             f"{run_s:g} s")
                    r = one_round(name, dsns[name], envs[name], args.workers, run_s,
                                  args.keep_log, args.profile)
                    progress(f"  slot -> refresh start {stats(r.step)}; {r.outcomes}; "
                             f"dups {r.duplicates}, reruns {r.reruns}; cpu {r.cpu * 100:.0f} %")
                    rounds.append(r)
        finally:
            for cm in reversed(stack):
                cm.__exit__(None, None, None)
        rows: list[Result] = []
        for name in variants:
            rows += summary(name, rounds, args.quick)
        if "baseline" in variants:
            rows += ratio_rows(rounds)
        print_table(f"daemon lateness: {VIEWS} views every second, --workers {args.workers}, "
                    f"{rounds_n} x {run_s:g} s", rows, [server_note_safe(srv)], args.quick)


def ratio_rows(rounds: list[Round]) -> list[Result]:
    """Per-round ratios this / baseline of the p99s (rounds paired in order)."""
    this = [r for r in rounds if r.variant == "this"]
    base = [r for r in rounds if r.variant == "baseline"]
    out = []
    for key, label in (("submitted", "slot -> job submitted"),
                       ("step", "slot -> refresh step started")):
        pairs = [(getattr(a, key), getattr(b, key)) for a, b in zip(this, base, strict=False)]
        ratios = [percentile(a, 99) / percentile(b, 99) for a, b in pairs
                  if a and b and percentile(b, 99) > 0]
        if ratios:
            out.append(ratio_result(f"p99 {label}: this / baseline (per round)", ratios, 1.0,
                                    quick=True))
    return out


def server_note_safe(srv: Server) -> str:
    try:
        return server_note(srv)
    except psycopg.Error:
        return "server: (gone)"


if __name__ == "__main__":
    main()
