"""Background jobs through ``mvgraph worker``: throughput and submit-to-start latency.

One database holds N trivial materialized views (``vN AS SELECT i FROM t``, 3 rows). Two worker
processes run throughout (``python -m mvgraph worker --concurrency 1``, twice: two processes
as two machines would run them, each with its own GIL and connections; the cap,
``max_concurrent_jobs``, stays at its default 4; one worker with ``--concurrency 2`` measured
the same throughput, with a slightly higher idle p99). Each round times, side by side (the order of
the first two alternates between rounds):

* foreground: ``mvgraph.refresh(dsn, 'public.*', force=True)``, the library call, one job of N
  steps (wall clock of the call in a warm process of its own, one per source tree; connection
  and planning included);
* backlog: N jobs submitted at once, one SQL statement
  ``SELECT mvgraph.submit('REFRESH MATERIALIZED VIEW vI RESTRICT') FROM generate_series(...)``
  (RESTRICT refreshes the view whatever its freshness), run by the two workers; span = the last
  job's ``finished_at`` less the first ``submitted_at`` (server clock);
* idle: a slice of the views (N / rounds), one job at a time: submit, wait for the job to end
  (LISTEN mvgraph_jobs; the worker notifies when a job ends), pause ``IDLE_GAP_S`` so that both
  workers are idle again, submit the next.

CPU per job and per view (informational, and less sensitive than wall clocks to whatever else
the machine runs): user + system CPU of the client processes (the two workers; the foreground
process) and of the whole server (its live processes and those it reaped, from /proc) over the
backlog and the foreground run, divided by N.

Latency from submit to start is ``started_at - submitted_at`` of each job (the claim);
informational: to the start of its step (``job_step.started_at``: the claim plus planning).
Every round checks the work: every job ``done`` and every view's relfilenode changed.

Goals: submit-to-start p99 <= 50 ms with a worker idle (the p99 of all idle jobs pooled; the
range of the per-round p99s is shown); throughput >= 0.8 x the foreground run (median of the
per-round ratios foreground seconds / backlog span; issue 22). ``--baseline DIR``: another
source tree (an earlier commit) measured alternately with this one, each on its own database
initialised by its own mvgraph, with its own two workers (idle while the other tree is
measured); each tree's ratio is its own backlog over its own foreground, and the backlog spans
are compared round by round. Run: ``python benchmarks/jobs.py [--quick] [--baseline DIR]``.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import psycopg
from _common import (
    REPO,
    Result,
    database,
    fmt_s,
    fmt_samples,
    load_script,
    median,
    parse_args,
    print_table,
    progress,
    ratio_result,
    scratch_dir,
    server,
    server_note,
    spread,
    tree_env,
    trees,
)

LATENCY_GOAL_MS = 50.0
THROUGHPUT_GOAL = 0.8  # issue 22 (was 0.7)
WORKERS = 2
IDLE_GAP_S = 0.05  # after a job ends, before the next submit: its worker's housekeeping ends
FINISHED = ("done", "failed", "cancelled")
Conn = psycopg.Connection[tuple[object, ...]]


def views_sql(n: int) -> str:
    """A small table and ``n`` trivial materialized views over it."""
    out = ["CREATE TABLE t AS SELECT generate_series(1, 3) AS i;"]
    out += [f"CREATE MATERIALIZED VIEW v{i} AS SELECT i FROM t;" for i in range(n)]
    return "\n".join(out) + "\n"


@contextmanager
def workers(dsn: str, logdir: Path, tree: Path = REPO,
            tag: str = "") -> Iterator[list[subprocess.Popen[bytes]]]:
    """``WORKERS`` worker processes of concurrency 1 running the mvgraph of ``tree``, logging
    to files; stopped afterwards."""
    procs = []
    try:
        for k in range(WORKERS):
            log = (logdir / f"worker{tag}{k}.log").open("wb")
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "mvgraph", "worker", "--concurrency", "1", "--dsn", dsn],
                cwd=tree, stdout=log, stderr=subprocess.STDOUT, env=tree_env(tree)))
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=40)
            except subprocess.TimeoutExpired:
                p.kill()


def wait_workers_listening(conn: Conn, timeout: float = 60.0) -> None:
    """Until both workers LISTEN (their claim connections are up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity "
                           "WHERE application_name LIKE 'mvgraph worker %%'").fetchone()
        if row and int(str(row[0])) >= WORKERS:
            time.sleep(0.5)  # LISTEN comes right after the connection
            return
        time.sleep(0.1)
    raise RuntimeError("the workers did not start; see their logs")


def filenodes(conn: Conn, names: Sequence[str]) -> dict[str, int]:
    """Each view's relfilenode (a REFRESH gives it a new one)."""
    rows = conn.execute("SELECT relname, relfilenode FROM pg_class WHERE relname = ANY(%s) "
                        "AND relnamespace = 'public'::regnamespace", [list(names)]).fetchall()
    return {str(r[0]): int(str(r[1])) for r in rows}


def check_refreshed(before: dict[str, int], after: dict[str, int], what: str) -> None:
    same = [n for n in before if after.get(n) == before[n]]
    if same or len(after) != len(before):
        raise RuntimeError(f"{what}: {len(same)} views not refreshed, e.g. {same[:3]}")


def last_job(conn: Conn) -> int:
    row = conn.execute("SELECT coalesce(max(id), 0) FROM mvgraph.job").fetchone()
    return int(str(row[0])) if row else 0


def job_latencies(conn: Conn, after: int) -> tuple[list[float], list[float], float, list[str]]:
    """For jobs with id > ``after``: submit -> claim and submit -> first step start (seconds),
    the span first submit -> last finish, and the statuses that are not ``done``."""
    rows = conn.execute(
        "SELECT extract(epoch FROM j.started_at - j.submitted_at), "
        "       extract(epoch FROM (SELECT min(s.started_at) FROM mvgraph.job_step s "
        "                           WHERE s.job_id = j.id) - j.submitted_at), "
        "       j.status, j.error "
        "  FROM mvgraph.job j WHERE j.id > %s ORDER BY j.id", [after]).fetchall()
    span = conn.execute("SELECT extract(epoch FROM max(finished_at) - min(submitted_at)) "
                        "FROM mvgraph.job WHERE id > %s", [after]).fetchone()
    bad = [f"{r[2]}: {r[3]}" for r in rows if r[2] != "done"]
    return ([float(str(r[0])) for r in rows if r[0] is not None],
            [float(str(r[1])) for r in rows if r[1] is not None],
            float(str(span[0])) if span and span[0] is not None else math.nan, bad)


def wait_finished(conn: Conn, after: int, count: int, timeout: float) -> None:
    """Until ``count`` jobs with id > ``after`` have finished (woken by the workers' NOTIFY)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute("SELECT count(*) FROM mvgraph.job WHERE id > %s AND status = ANY(%s)",
                           [after, list(FINISHED)]).fetchone()
        if row and int(str(row[0])) >= count:
            return
        for _ in conn.notifies(timeout=0.2, stop_after=1):
            pass
    raise RuntimeError(f"timed out: jobs after {after} not finished in {timeout:.0f}s")


def submit_all(conn: Conn, names: Sequence[str]) -> None:
    """Every view's job, submitted in one statement (one transaction)."""
    conn.execute("SELECT mvgraph.submit(format('REFRESH MATERIALIZED VIEW %%I RESTRICT', n)) "
                 "FROM unnest(%s::text[]) WITH ORDINALITY AS u(n, o) ORDER BY o", [list(names)])


def run_one(conn: Conn, name: str, timeout: float = 60.0) -> int:
    """Submit one job and wait for it to end."""
    row = conn.execute("SELECT mvgraph.submit(%s)",
                       [f"REFRESH MATERIALIZED VIEW {name} RESTRICT"]).fetchone()
    assert row is not None
    job = int(str(row[0]))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for _ in conn.notifies(timeout=0.5, stop_after=1):
            pass
        st = conn.execute("SELECT status FROM mvgraph.job WHERE id = %s", [job]).fetchone()
        if st and st[0] in FINISHED:
            return job
    raise RuntimeError(f"job {job} did not finish in {timeout:.0f}s")


def pct(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def ms_spread(samples: Sequence[float]) -> str:
    return (f"{median(samples) * 1000:.1f} ms ({min(samples) * 1000:.1f}-"
            f"{max(samples) * 1000:.1f})")


FOREGROUND = """
import sys, time
import mvgraph
for line in sys.stdin:
    start = time.perf_counter()
    report = mvgraph.refresh(sys.argv[1], "public.*", force=True)
    print(time.perf_counter() - start, len(report.refreshed), report.status.value, flush=True)
"""


TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (ppid first); empty when gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return text.rsplit(")", 1)[1].split()


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    f = _stat(pid)
    return (int(f[11]) + int(f[12])) * TICK_S if f else 0.0


def server_cpu(postmaster: int) -> float:
    """CPU seconds the server has used so far: the postmaster and its live children, and the
    children it has reaped (a foreground run's session ends with it)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            f = _stat(int(entry.name))
            if f and int(f[1]) == postmaster:
                total += (int(f[11]) + int(f[12])) * TICK_S
    f = _stat(postmaster)
    return total + ((int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) * TICK_S if f else 0.0)


class Foreground:
    """A process of its own that runs ``mvgraph.refresh(dsn, 'public.*', force=True)`` with the
    mvgraph of ``tree`` each time it is asked, as the benchmark process itself did before
    ``--baseline``: warm (imports and caches of earlier runs), only the call timed."""

    def __init__(self, dsn: str, tree: Path) -> None:
        self.tree = tree
        self.proc = subprocess.Popen([sys.executable, "-c", FOREGROUND, dsn], cwd=tree,
                                     env=tree_env(tree), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def run(self) -> tuple[float, int]:
        """Seconds of one call, and the views it refreshed."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        out = self.proc.stdout.readline().split()
        if not out:
            raise RuntimeError(f"the foreground process of {self.tree} exited; see stderr")
        return float(out[0]), int(out[1])

    def close(self) -> None:
        """End the process (its stdin closed)."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)


class Tree:
    """One source tree's database, workers and samples."""

    def __init__(self, name: str, path: Path, dsn: str, conn: Conn, n_views: int,
                 procs: list[subprocess.Popen[bytes]], fg: Foreground) -> None:
        self.name, self.path, self.dsn, self.conn, self.n = name, path, dsn, conn, n_views
        self.procs, self.fg = procs, fg
        self.names = [f"v{i}" for i in range(n_views)]
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        self.postmaster = int(_stat(int(str(row[0])))[1]) if row else 0
        # CPU seconds per view (foreground) and per job (backlog): client process(es) + server
        self.cpu: dict[str, list[float]] = {"fg": [], "job": []}
        self.t: dict[str, list[float]] = {"fg": [], "span": []}
        self.lat: dict[str, list[list[float]]] = {"idle": [], "idle_step": [], "backlog": [],
                                                  "backlog_step": []}

    def foreground(self) -> None:
        before = filenodes(self.conn, self.names)
        cpu = process_cpu(self.fg.proc.pid) + server_cpu(self.postmaster)
        seconds, refreshed = self.fg.run()
        cpu = process_cpu(self.fg.proc.pid) + server_cpu(self.postmaster) - cpu
        self.cpu["fg"].append(cpu / self.n)
        assert refreshed == self.n, refreshed
        check_refreshed(before, filenodes(self.conn, self.names), "foreground")
        self.t["fg"].append(seconds)

    def backlog(self) -> None:
        conn = self.conn
        before, first = filenodes(conn, self.names), last_job(conn)
        cpu = self._workers_cpu()
        submit_all(conn, self.names)
        wait_finished(conn, first, self.n, timeout=600)
        self.cpu["job"].append((self._workers_cpu() - cpu) / self.n)
        start, step, span, bad = job_latencies(conn, first)
        if bad or len(start) != self.n:
            raise RuntimeError(f"backlog: {len(bad)} jobs not done, e.g. {bad[:3]}")
        check_refreshed(before, filenodes(conn, self.names), "backlog")
        self.t["span"].append(span)
        self.lat["backlog"].append(start)
        self.lat["backlog_step"].append(step)

    def idle(self, chosen: list[str]) -> None:
        conn = self.conn
        before, first = filenodes(conn, chosen), last_job(conn)
        for name in chosen:
            run_one(conn, name)
            time.sleep(IDLE_GAP_S)
        start, step, _span, bad = job_latencies(conn, first)
        if bad or len(start) != len(chosen):
            raise RuntimeError(f"idle: {len(bad)} jobs not done, e.g. {bad[:3]}")
        check_refreshed(before, filenodes(conn, chosen), "idle")
        self.lat["idle"].append(start)
        self.lat["idle_step"].append(step)

    def _workers_cpu(self) -> float:
        return sum(process_cpu(p.pid) for p in self.procs) + server_cpu(self.postmaster)

    @property
    def cpu_ratios(self) -> list[float]:
        """Per round: CPU seconds per job / per view of the foreground run."""
        return [j / f for j, f in zip(self.cpu["job"], self.cpu["fg"], strict=True)]

    @property
    def ratios(self) -> list[float]:
        """Per round: foreground seconds / backlog span (jobs/s over views/s)."""
        return [fg / span for fg, span in zip(self.t["fg"], self.t["span"], strict=True)]

    def rows(self, quick: bool, label: str) -> list[Result]:
        t, lat, n = self.t, self.lat, self.n
        idle_all = [x for r in lat["idle"] for x in r]
        idle_step_all = [x for r in lat["idle_step"] for x in r]
        backlog_all = [x for r in lat["backlog"] for x in r]
        idle_p99s = [pct(r, 99) for r in lat["idle"]]
        p99 = pct(idle_all, 99)
        return [
            Result(f"{label}foreground: mvgraph.refresh(force=True), {n} views (median)",
                   fmt_s(median(t["fg"]))),
            Result(f"{label}backlog: {n} jobs, {WORKERS} workers, first submit -> last finish",
                   fmt_s(median(t["span"]))),
            Result(f"{label}backlog: jobs per second (median)",
                   f"{n / median(t['span']):.0f} (foreground: "
                   f"{n / median(t['fg']):.0f} views/s)"),
            ratio_result(f"{label}throughput: backlog jobs/s / foreground views/s",
                         self.ratios, THROUGHPUT_GOAL, at_least=True, quick=quick),
            Result(f"{label}idle worker: submit -> start p50 ({len(idle_all)} jobs)",
                   ms(pct(idle_all, 50))),
            Result(f"{label}idle worker: submit -> start p99 ({len(idle_all)} jobs pooled; "
                   "per-round p99 range)",
                   f"{ms(p99)} ({min(idle_p99s) * 1000:.1f}-{max(idle_p99s) * 1000:.1f})",
                   f"<= {LATENCY_GOAL_MS:.0f} ms",
                   None if quick else p99 * 1000 <= LATENCY_GOAL_MS),
            Result(f"{label}idle worker: submit -> step start (claim + plan) p50 / p99",
                   f"{ms(pct(idle_step_all, 50))} / {ms(pct(idle_step_all, 99))}"),
            Result(f"{label}backlog: submit -> start p50 / p99 (queueing)",
                   f"{ms(pct(backlog_all, 50))} / {ms(pct(backlog_all, 99))}"),
            Result(f"{label}CPU per job (workers + server) / per view (foreground + server)",
                   f"{median(self.cpu['job']) * 1000:.2f} ms / "
                   f"{median(self.cpu['fg']) * 1000:.2f} ms = {spread(self.cpu_ratios)}"),
        ]

    def notes(self, label: str) -> list[str]:
        return [
            f"{label}samples foreground: [{fmt_samples(self.t['fg'])}] s",
            f"{label}samples backlog span: [{fmt_samples(self.t['span'])}] s",
            f"{label}per-round idle p50 / p99: " + ", ".join(
                f"{pct(r, 50) * 1000:.1f}/{pct(r, 99) * 1000:.1f}" for r in self.lat["idle"])
            + " ms",
            f"{label}per-round backlog jobs/s: " + ", ".join(
                f"{self.n / s:.0f}" for s in self.t["span"]),
            f"{label}per-round CPU ms per job / per view: " + ", ".join(
                f"{j * 1000:.2f}/{f * 1000:.2f}"
                for j, f in zip(self.cpu["job"], self.cpu["fg"], strict=True)),
        ]


def main() -> None:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "")
    n_views, rounds = (60, 2) if args.quick else (1000, 3)
    names = [f"v{i}" for i in range(n_views)]
    idle_slices = [names[r::rounds] for r in range(rounds)]
    paths = trees(args)
    with scratch_dir("mvgraph-jobs-") as work, server() as srv, ExitStack() as stack:
        runs: list[Tree] = []
        for name, path in paths.items():
            dsn = stack.enter_context(database(srv, f"jobs_{name}", tree=path))
            progress(f"{name}: loading {n_views} trivial views")
            load_script(dsn, views_sql(n_views), work)
            # Warm-up (not measured): installs the event trigger's state; warms caches.
            fg = Foreground(dsn, path)
            stack.callback(fg.close)
            fg.run()
            conn = stack.enter_context(psycopg.connect(dsn, autocommit=True))
            conn.execute("LISTEN mvgraph_jobs")
            procs = stack.enter_context(workers(dsn, work, path, tag=name))
            wait_workers_listening(conn)
            runs.append(Tree(name, path, dsn, conn, n_views, procs, fg))
        progress(f"{WORKERS} workers up per tree")
        settings = server_note(srv)
        for rnd in range(rounds):
            order = runs if rnd % 2 == 0 else runs[::-1]
            for tr in order:
                pair = [tr.foreground, tr.backlog] if rnd % 2 == 0 else [tr.backlog,
                                                                          tr.foreground]
                for fn in pair:
                    fn()
                tr.idle(idle_slices[rnd])
                progress(f"round {rnd + 1} {tr.name}: foreground {tr.t['fg'][-1]:.3f} s, "
                         f"backlog span {tr.t['span'][-1]:.3f} s, idle p50/p99 "
                         f"{ms(pct(tr.lat['idle'][-1], 50))}/"
                         f"{ms(pct(tr.lat['idle'][-1], 99))}")
        for tr in runs:
            if any(p.poll() is not None for p in tr.procs):
                raise RuntimeError(f"{tr.name}: a worker exited during the run; see its log")

    label = (lambda tr: f"[{tr.name}] ") if len(runs) > 1 else (lambda tr: "")
    rows = [row for tr in runs for row in tr.rows(args.quick, label(tr))]
    notes = [
        f"{WORKERS} worker processes, --concurrency 1 each; max_concurrent_jobs 4 (default)",
        f"ratios: median (range) of per-round ratios; {rounds} alternating rounds",
        *(note for tr in runs for note in tr.notes(label(tr))),
        f"idle: {n_views // rounds} jobs per round one at a time ({IDLE_GAP_S * 1000:.0f} ms "
        "pause after each ends), submitted with mvgraph.submit from SQL",
        f"{n_views} MVs over one table of 3 rows; every job done and every view's "
        "relfilenode changed, checked each round",
        "foreground: timed inside a warm process of its own (one per tree)",
        settings,
    ]
    if len(runs) > 1:
        this, base = runs[0], runs[1]
        per_round = [b / t for t, b in zip(this.t["span"], base.t["span"], strict=True)]
        rows.append(Result("backlog speed-up this / baseline (per-round span ratio)",
                           f"{median(per_round):.2f} ({min(per_round):.2f}-"
                           f"{max(per_round):.2f})"))
        notes.append(f"baseline: {base.path}")
    print_table("jobs: background jobs through workers vs one foreground refresh", rows, notes,
                quick=args.quick)


if __name__ == "__main__":
    main()
