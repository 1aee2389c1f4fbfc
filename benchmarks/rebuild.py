"""Rebuild: change a column's type under writes, the plain PostgreSQL way vs ``mvgraph rebuild``.

Schema: a table ``t (id bigint PRIMARY KEY, g int, v int)`` of 5,000,000 rows (``--rows``) and
three layers of dependents reading ``v``: ``l1_v`` (a view aggregating ``t`` by ``g``) and
``l1_mv`` (a materialized view aggregating ``t`` by ``g``, unique index on ``g``); ``l2_mv``
(a materialized view over ``l1_mv``, unique index); ``l3_v`` (a view over ``l2_mv``, the top).
The change is ``ALTER COLUMN v TYPE bigint``; PostgreSQL refuses it while a view uses ``v``.

Side by side in one run, on the same server and database, each method on a freshly built copy
of the table and its dependents (dropped and recreated from scratch before each method, then
``VACUUM ANALYZE`` and ``CHECKPOINT``):

* plain: one transaction that drops the dependents (top first), runs ``ALTER TABLE t ALTER
  COLUMN v TYPE bigint``, recreates the dependents and their indexes, and commits;
* rebuild: ``python -m mvgraph rebuild public.t --action "ALTER COLUMN v TYPE bigint"`` (the
  command line, a new process; it waits for the rebuild to end). Skipped, and said so, when
  this mvgraph has no ``rebuild`` command.

While each method runs, two other processes, each with its own connection (autocommit, no
server-side prepared statements), started ``LEAD_S`` before the method and stopped ``TAIL_S``
after it:

* the writer: as fast as it can, alternately a one-row ``UPDATE t SET v = seq WHERE id = k``
  (``k`` random among the original keys) and a one-row ``INSERT`` of a new key, each its own
  transaction, recording for each write its start and end (``time.monotonic``, one clock for
  every process), the key, the value and the outcome (acknowledged, refused by the server,
  unknown: the connection broke);
* the reader: ``SELECT * FROM l3_v`` every ``READER_PAUSE_S``, recording latency and errors
  (an empty answer counts as an error).

Per method: total time of the method; the longest write stall (the longest interval in which no
write was acknowledged while the writer was writing: the longest write latency when no write
fails); the time writers were blocked (sum of write latencies above ``BLOCKED_MS``); reader
errors and the reader's longest stall (the longest interval with no successful read); and lost
writes, checked in the table after the run: every acknowledged write must be there (updates:
the last acknowledged value per key, or a later write whose outcome is unknown; inserts: the key
with its value). Each run also checks that ``v`` is ``bigint`` afterwards and that the four
dependents, their indexes and the primary key exist and the materialized views are populated.

Goals (issue): rebuild's longest write stall <= 1 s and <= 0.05 x the plain way's (per-round
ratio, median); 0 reader errors and 0 lost writes with rebuild; a method that fails (or runs
past ``--timeout``) is reported under the table and meets no goal. Run: ``python
benchmarks/rebuild.py [--quick] [--rows N] [--rounds N] [--only plain|rebuild] [--timeout S]
[--json FILE]`` (``--quick``: 200,000 rows, no verdicts; several rounds alternate the order of
the methods; ``--only``: one method, no goals).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from itertools import pairwise
from multiprocessing.synchronize import Event
from pathlib import Path

import psycopg
from _common import (
    REPO,
    Result,
    database,
    fmt_s,
    median,
    print_table,
    progress,
    psql,
    scratch_dir,
    server,
    server_note,
)

ROWS = 5_000_000
QUICK_ROWS = 200_000
ACTION = "ALTER COLUMN v TYPE bigint"
TABLE = "public.t"
STALL_GOAL_S = 1.0
STALL_RATIO_GOAL = 0.05
BLOCKED_MS = 50.0  # a write slower than this counts as blocked
LEAD_S = 3.0  # the writer and the reader run this long before the method starts
TAIL_S = 3.0  # and this long after it ends
READER_PAUSE_S = 0.01  # between two reads (the writer never pauses)
READ = "SELECT bucket, n, s, mx FROM l3_v"
Conn = psycopg.Connection[tuple[object, ...]]

# A write's kind and outcome, as the writer records them.
UPDATE, INSERT = 0, 1
OK, REFUSED, UNKNOWN, NO_ROW = 0, 1, 2, 3  # NO_ROW: an UPDATE of an original key found no row


@dataclass(frozen=True)
class Dependent:
    """A view or materialized view on ``t``: its statements, in creation order."""

    name: str
    kind: str  # "VIEW" or "MATERIALIZED VIEW"
    create: tuple[str, ...]  # CREATE, then its indexes
    index: str | None = None


DEPENDENTS = (
    Dependent("l1_v", "VIEW", (
        "CREATE VIEW l1_v AS SELECT g, count(*) AS n, sum(v) AS s FROM t GROUP BY g",)),
    Dependent("l1_mv", "MATERIALIZED VIEW", (
        "CREATE MATERIALIZED VIEW l1_mv AS SELECT g, count(*) AS n, sum(v) AS s, max(v) AS mx "
        "FROM t GROUP BY g",
        "CREATE UNIQUE INDEX l1_mv_g ON l1_mv (g)"), "l1_mv_g"),
    Dependent("l2_mv", "MATERIALIZED VIEW", (
        "CREATE MATERIALIZED VIEW l2_mv AS SELECT g % 10 AS bucket, sum(n)::bigint AS n, "
        "sum(s) AS s, max(mx) AS mx FROM l1_mv GROUP BY 1",
        "CREATE UNIQUE INDEX l2_mv_bucket ON l2_mv (bucket)"), "l2_mv_bucket"),
    Dependent("l3_v", "VIEW", (
        "CREATE VIEW l3_v AS SELECT bucket, n, s, mx FROM l2_mv",)),
)


def schema_sql(rows: int) -> str:
    """The table with ``rows`` rows, then its dependents."""
    out = ["CREATE TABLE t (id bigint PRIMARY KEY, g int NOT NULL, v int NOT NULL);",
           f"INSERT INTO t SELECT i, i % 1000, (i::bigint * 7919 % 1000003)::int "
           f"FROM generate_series(1, {rows}) AS i;"]
    out += [f"{stmt};" for dep in DEPENDENTS for stmt in dep.create]
    return "\n".join(out) + "\n"


# ---- the writer and the reader (child processes) ---------------------------------------------


@dataclass
class Ops:
    """What a loop did: one entry per statement (the reader leaves kind, key, value empty)."""

    kind: list[int] = field(default_factory=list)
    key: list[int] = field(default_factory=list)
    value: list[int] = field(default_factory=list)
    start: list[float] = field(default_factory=list)
    end: list[float] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)  # first line of each message: count

    def save(self, path: str) -> None:
        Path(path).write_text(json.dumps(asdict(self)), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Ops:
        return cls(**json.loads(path.read_text(encoding="utf-8")))


def _connect(dsn: str, name: str) -> Conn:
    """Autocommit, no server-side prepared statements (a cached plan of ``SELECT * FROM l3_v``
    fails once the view's column types change, whatever method changed them)."""
    return psycopg.connect(dsn, autocommit=True, prepare_threshold=None,
                           application_name=f"rebuild-bench {name}")


def _reconnect(dsn: str, name: str, stop: Event, errors: Counter[str]) -> Conn | None:
    while not stop.is_set():
        try:
            return _connect(dsn, name)
        except psycopg.Error as exc:
            errors[f"connect: {str(exc).splitlines()[0][:200]}"] += 1
            time.sleep(0.01)
    return None


def writer_main(dsn: str, rows: int, stop: Event, ready: Event, out: str) -> None:
    """Write until ``stop``: UPDATE and INSERT alternately, one row each, autocommit."""
    ops, errors = Ops(), Counter[str]()
    rng = random.Random(rows)
    conn: Conn | None = _connect(dsn, "writer")
    ready.set()
    seq = 0
    while conn is not None and not stop.is_set():
        seq += 1
        params: tuple[int, ...]
        if seq % 2:
            kind, key = UPDATE, rng.randint(1, rows)
            statement, params = "UPDATE t SET v = %s WHERE id = %s", (seq, key)
        else:
            kind, key = INSERT, rows + seq
            statement, params = "INSERT INTO t (id, g, v) VALUES (%s, %s, %s)", \
                (key, key % 1000, seq)
        start = time.monotonic()
        try:
            cur = conn.execute(statement, params)
            status = OK if kind == INSERT or cur.rowcount == 1 else NO_ROW
        except psycopg.Error as exc:
            # A server error in autocommit: rolled back. A broken connection: unknown.
            status = REFUSED if exc.sqlstate and not conn.broken else UNKNOWN
            errors[str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__] += 1
        end = time.monotonic()
        ops.kind.append(kind)
        ops.key.append(key)
        ops.value.append(seq)
        ops.start.append(start)
        ops.end.append(end)
        ops.status.append(status)
        if conn.broken or conn.closed:
            conn = _reconnect(dsn, "writer", stop, errors)
    if conn is not None:
        conn.close()
    ops.errors = dict(errors)
    ops.save(out)


def reader_main(dsn: str, stop: Event, ready: Event, out: str) -> None:
    """Read the top view until ``stop``, pausing ``READER_PAUSE_S`` between reads."""
    ops, errors = Ops(), Counter[str]()
    conn: Conn | None = _connect(dsn, "reader")
    ready.set()
    while conn is not None and not stop.is_set():
        start = time.monotonic()
        try:
            status = OK if conn.execute(READ).fetchall() else REFUSED
            if status != OK:
                errors["empty answer"] += 1
        except psycopg.Error as exc:
            status = REFUSED
            errors[str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__] += 1
        ops.start.append(start)
        ops.end.append(time.monotonic())
        ops.status.append(status)
        if conn.broken or conn.closed:
            conn = _reconnect(dsn, "reader", stop, errors)
        time.sleep(READER_PAUSE_S)
    if conn is not None:
        conn.close()
    ops.errors = dict(errors)
    ops.save(out)


@contextmanager
def load(dsn: str, rows: int, work: Path) -> Iterator[tuple[Path, Path]]:
    """The writer and the reader, running; stopped at exit. Yields their output files, filled
    once the context has exited."""
    ctx = multiprocessing.get_context("spawn")
    stop, ready_w, ready_r = ctx.Event(), ctx.Event(), ctx.Event()
    w_out, r_out = work / "writer.json", work / "reader.json"
    for path in (w_out, r_out):
        path.unlink(missing_ok=True)
    procs = [ctx.Process(target=writer_main, args=(dsn, rows, stop, ready_w, str(w_out))),
             ctx.Process(target=reader_main, args=(dsn, stop, ready_r, str(r_out)))]
    for p in procs:
        p.start()
    try:
        for ready in (ready_w, ready_r):
            if not ready.wait(60):
                raise RuntimeError("the writer or the reader did not start")
        yield w_out, r_out
    finally:
        stop.set()
        for p in procs:
            p.join(timeout=600)  # a write blocked on a lock ends when the lock is released
            if p.is_alive():
                p.kill()
                p.join()
    if any(p.exitcode != 0 for p in procs):
        raise RuntimeError(f"the writer or the reader failed: exit codes "
                           f"{[p.exitcode for p in procs]}")


# ---- the two methods -------------------------------------------------------------------------


def plain_way(dsn: str, timeout: float) -> list[dict[str, object]]:
    """One transaction: drop the dependents (top first), alter, recreate them, commit
    (``timeout``: its ``statement_timeout``)."""
    with psycopg.connect(dsn) as conn:  # not autocommit: committed when the block ends
        conn.execute(f"SET statement_timeout = {int(timeout * 1000)}")
        for dep in reversed(DEPENDENTS):
            conn.execute(f"DROP {dep.kind} {dep.name}")
        conn.execute(f"ALTER TABLE t {ACTION}")
        for dep in DEPENDENTS:
            for stmt in dep.create:
                conn.execute(stmt)
    return []


def mvgraph_env() -> dict[str, str]:
    """This tree's mvgraph (``python -m mvgraph`` from the repository root), whatever the
    virtual environment's editable install points at."""
    path = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=str(REPO) + (os.pathsep + path if path else ""))


def mvgraph_cmd(*args: str, check: bool = True,
                timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m mvgraph ARGS`` (a new process, as a user runs it), killed after
    ``timeout`` seconds."""
    shown = [("..." if i and args[i - 1] == "--dsn" else a) for i, a in enumerate(args)]
    try:
        proc = subprocess.run([sys.executable, "-m", "mvgraph", *args], cwd=REPO,
                              env=mvgraph_env(), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"mvgraph {' '.join(shown)}: killed after {timeout:.0f} s") from exc
    if check and proc.returncode != 0:
        raise RuntimeError(f"mvgraph {' '.join(shown)} exited {proc.returncode}:\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc


def rebuild_available() -> bool:
    """True when this mvgraph has the ``rebuild`` command."""
    return mvgraph_cmd("rebuild", "--help", check=False).returncode == 0


def mvgraph_way(dsn: str, timeout: float) -> list[dict[str, object]]:
    """``mvgraph rebuild public.t --action "ALTER COLUMN v TYPE bigint"``, which runs the
    rebuild in its own process and waits for its end; returns the rebuild's steps (its
    ``--json``: step, status, start_time, end_time, ...); killed after ``timeout`` s."""
    proc = mvgraph_cmd("rebuild", TABLE, "--action", ACTION, "--json", "--dsn", dsn,
                       timeout=timeout)
    report = json.loads(proc.stdout)
    if report.get("status") != "ok":
        raise RuntimeError(f"mvgraph rebuild ended {report.get('status')}: {proc.stdout[-2000:]}")
    return list(report.get("steps") or [])


@dataclass(frozen=True)
class Method:
    """One way of making the change."""

    key: str  # "plain" or "rebuild"
    label: str
    run: Callable[[str, float], list[dict[str, object]]]  # (dsn, timeout): its steps, if any


METHODS = {
    "plain": Method("plain", "plain way (drop, ALTER, recreate, one transaction)", plain_way),
    "rebuild": Method("rebuild", "mvgraph rebuild", mvgraph_way),
}


# ---- one measured run ------------------------------------------------------------------------


@dataclass
class Measured:
    """One method's run."""

    method: str
    total_s: float
    write_stall_s: float  # longest interval without an acknowledged write
    max_write_latency_s: float
    blocked_s: float  # sum of write latencies above BLOCKED_MS
    writes: int
    writes_acknowledged: int
    writes_refused: int
    writes_unknown: int
    updates_no_row: int
    writes_per_s_before: float
    writes_per_s_during: float
    reads: int
    reader_errors: int
    reader_stall_s: float  # longest interval without a successful read
    lost_writes: int
    ambiguous_writes: int  # a write whose outcome was unknown is what the table holds
    phantom_writes: int  # a write the server refused is in the table
    problems: list[str]  # what the check after the run found wrong (type, dependents, ...)
    write_errors: dict[str, int]
    reader_error_messages: dict[str, int]
    steps: list[dict[str, object]]  # the method's own report of its steps (mvgraph rebuild's)


def reset(dsn: str, rows: int, work: Path) -> None:
    """Drop every relation of schema public, build the table and its dependents from scratch
    (not measured), vacuum, checkpoint."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS t CASCADE")
        rels = conn.execute(
            "SELECT c.oid::regclass::text, c.relkind::text FROM pg_class c "
            "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r','p','v','m') "
            "AND NOT EXISTS (SELECT FROM pg_inherits i WHERE i.inhrelid = c.oid)").fetchall()
        for name, kind in rels:
            what = {"v": "VIEW", "m": "MATERIALIZED VIEW"}.get(str(kind), "TABLE")
            conn.execute(f"DROP {what} IF EXISTS {name} CASCADE")
    path = work / "setup.sql"
    path.write_text(schema_sql(rows), encoding="utf-8")
    psql(dsn, file=path, single_transaction=True)
    psql(dsn, command="VACUUM ANALYZE")
    psql(dsn, command="CHECKPOINT")


def longest_gap(lo: float, hi: float, ends: Sequence[float]) -> float:
    """The longest interval in [lo, hi] without one of ``ends``."""
    points = [lo, *sorted(e for e in ends if lo <= e <= hi), hi]
    return max(b - a for a, b in pairwise(points))


def check_writes(conn: Conn, ops: Ops, rows: int) -> tuple[int, int, int, list[str]]:
    """Lost, ambiguous and phantom writes, and problems with the row count."""
    expect: dict[int, int] = {}  # key: the last acknowledged value
    maybe: dict[int, set[int]] = {}  # key: values written after it whose outcome is unknown
    refused_inserts: set[int] = set()
    unknown_inserts = acked_inserts = no_row = 0
    for kind, key, value, status in zip(ops.kind, ops.key, ops.value, ops.status, strict=True):
        if status == OK:
            expect[key] = value
            maybe.pop(key, None)
            acked_inserts += kind == INSERT
        elif status == UNKNOWN:
            maybe.setdefault(key, set()).add(value)
            unknown_inserts += kind == INSERT
        elif status == REFUSED and kind == INSERT:
            refused_inserts.add(key)
        elif status == NO_ROW:
            no_row += 1  # an original key the UPDATE did not find: counted as lost
    keys = sorted({*expect, *maybe, *refused_inserts})
    present = {int(str(k)): int(str(v)) for k, v in conn.execute(
        "SELECT id, v FROM t WHERE id = ANY(%s)", [keys]).fetchall()}
    lost, ambiguous = no_row, 0
    for key, value in expect.items():
        if present.get(key) == value:
            continue
        if present.get(key) in maybe.get(key, ()):
            ambiguous += 1
        else:
            lost += 1
    phantom = sum(k in present for k in refused_inserts)
    problems = []
    row = conn.execute("SELECT count(*) FROM t").fetchone()
    count = int(str(row[0])) if row else -1
    if not rows + acked_inserts <= count <= rows + acked_inserts + unknown_inserts:
        problems.append(f"t holds {count:,} rows, expected {rows + acked_inserts:,}"
                        + (f" (+ up to {unknown_inserts} unknown)" if unknown_inserts else ""))
    return lost, ambiguous, phantom, problems


def check_result(conn: Conn) -> list[str]:
    """What is wrong after the change: ``v``'s type, a missing dependent, index or primary key,
    an unpopulated materialized view."""
    problems = []
    row = conn.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                       "WHERE attrelid = 'public.t'::regclass AND attname = 'v'").fetchone()
    if not row or row[0] != "bigint":
        problems.append(f"t.v is {row[0] if row else 'missing'}, not bigint")
    found = {str(name): str(kind) for name, kind in conn.execute(
        "SELECT relname::text, relkind::text || CASE WHEN relispopulated THEN '' ELSE '-' END "
        "FROM pg_class WHERE relnamespace = 'public'::regnamespace").fetchall()}
    for dep in DEPENDENTS:
        want = "v" if dep.kind == "VIEW" else "m"
        if found.get(dep.name) != want:
            problems.append(f"{dep.name}: {found.get(dep.name) or 'missing'}, want {want}")
        if dep.index and found.get(dep.index) != "i":
            problems.append(f"index {dep.index} missing")
    if not conn.execute("SELECT 1 FROM pg_constraint WHERE conrelid = 'public.t'::regclass "
                        "AND contype = 'p'").fetchone():
        problems.append("t has no primary key")
    return problems


def measure(method: Method, dsn: str, rows: int, work: Path, timeout: float) -> Measured:
    """Reset the data, start the writer and the reader, run the method, stop them, check."""
    progress(f"{method.key}: building {rows:,} rows and the dependents (not measured)")
    reset(dsn, rows, work)
    progress(f"{method.key}: writer and reader running; the method starts in {LEAD_S:.0f} s")
    with load(dsn, rows, work) as (w_out, r_out):
        time.sleep(LEAD_S)
        failure = None
        steps: list[dict[str, object]] = []
        t0 = time.monotonic()
        try:
            steps = method.run(dsn, timeout)
        except (RuntimeError, psycopg.Error) as exc:  # still measured and checked: say so
            failure = f"{method.key} failed: {' '.join(str(exc).split())[-600:]}"
        t1 = time.monotonic()
        total = t1 - t0
        progress(failure or f"{method.key}: done in {total:.2f} s")
        time.sleep(TAIL_S)
    w, r = Ops.load(w_out), Ops.load(r_out)
    with psycopg.connect(dsn, autocommit=True) as conn:
        lost, ambiguous, phantom, problems = check_writes(conn, w, rows)
        problems += check_result(conn)
    if failure:
        problems.insert(0, failure)
    latencies = [e - s for s, e in zip(w.start, w.end, strict=True)]
    acked = [e for e, st in zip(w.end, w.status, strict=True) if st == OK]
    read_ok = [e for e, st in zip(r.end, r.status, strict=True) if st == OK]
    before = sum(1 for e in acked if e < t0)
    during = sum(1 for e in acked if t0 <= e <= t1)
    lead = t0 - w.start[0] if w.start else 0.0
    return Measured(
        method=method.key,
        total_s=total,
        write_stall_s=longest_gap(w.start[0], w.end[-1], acked) if w.start else 0.0,
        max_write_latency_s=max(latencies, default=0.0),
        blocked_s=sum(x for x in latencies if x * 1000 > BLOCKED_MS),
        writes=len(w.status),
        writes_acknowledged=len(acked),
        writes_refused=w.status.count(REFUSED),
        writes_unknown=w.status.count(UNKNOWN),
        updates_no_row=w.status.count(NO_ROW),
        writes_per_s_before=before / lead if lead > 0 else 0.0,
        writes_per_s_during=during / (t1 - t0) if t1 > t0 else 0.0,
        reads=len(r.status),
        reader_errors=sum(st != OK for st in r.status),
        reader_stall_s=longest_gap(r.start[0], r.end[-1], read_ok) if r.start else 0.0,
        lost_writes=lost,
        ambiguous_writes=ambiguous,
        phantom_writes=phantom,
        problems=problems,
        write_errors=w.errors,
        reader_error_messages=r.errors,
        steps=steps,
    )


def step_times(steps: Sequence[dict[str, object]]) -> str:
    """``step 1.234 s, ...`` from a rebuild's steps (``start_time``, ``end_time``: ISO)."""
    out = []
    for st in steps:
        start, end = st.get("start_time"), st.get("end_time")
        took = (datetime.fromisoformat(str(end)) - datetime.fromisoformat(str(start))
                ).total_seconds() if start and end else None
        out.append(f"{st.get('step')} " + (f"{took:.3f} s" if took is not None
                                            else str(st.get("status") or "-")))
    return ", ".join(out)


# ---- report ----------------------------------------------------------------------------------


class Goal(Result):
    """A results row judged met / missed (the issue's words)."""

    @property
    def verdict(self) -> str:
        return "" if self.passed is None else ("met" if self.passed else "missed")


def seconds(samples: Sequence[float]) -> str:
    """One sample, or the median and range of several."""
    if len(samples) == 1:
        return fmt_s(samples[0])
    return f"{fmt_s(median(samples))} ({min(samples):.3f}-{max(samples):.3f})"


def both(runs: dict[str, list[Measured]], fmt: Callable[[list[Measured]], str]) -> str:
    """``plain / rebuild`` of one metric (rebuild: n/a when it did not run)."""
    return " / ".join(fmt(runs[k]) if runs.get(k) else "n/a" for k in METHODS)


def report(runs: dict[str, list[Measured]], rounds: int, quick: bool, available: bool,
           notes: list[str]) -> tuple[list[Result], list[str], dict[str, object]]:
    """The table's rows, its notes, and the goals as data (for ``--json``)."""
    plain, rebuilt = runs.get("plain", []), runs.get("rebuild", [])

    def secs(attr: str) -> Callable[[list[Measured]], str]:
        return lambda ms: seconds([float(getattr(m, attr)) for m in ms])

    def total(attr: str) -> Callable[[list[Measured]], str]:
        return lambda ms: f"{sum(int(getattr(m, attr)) for m in ms):,}"

    def rate(attr: str) -> Callable[[list[Measured]], str]:
        return lambda ms: f"{median([float(getattr(m, attr)) for m in ms]):.0f}"

    out: list[Result] = [
        Result("total time, plain way / mvgraph rebuild", both(runs, secs("total_s"))),
        Result("longest write stall (no write acknowledged)", both(runs, secs("write_stall_s"))),
        Result("longest write latency", both(runs, secs("max_write_latency_s"))),
        Result(f"time writers were blocked (writes > {BLOCKED_MS:.0f} ms, summed)",
               both(runs, secs("blocked_s"))),
        Result("writes acknowledged, refused, unknown outcome",
               both(runs, lambda ms: f"{sum(m.writes_acknowledged for m in ms):,}, "
                                     f"{sum(m.writes_refused for m in ms):,}, "
                                     f"{sum(m.writes_unknown for m in ms):,}")),
        Result("writes per second, before, during the change",
               both(runs, lambda ms: f"{rate('writes_per_s_before')(ms)}, "
                                     f"{rate('writes_per_s_during')(ms)}")),
        Result("reader: reads, errors", both(runs, lambda ms: f"{total('reads')(ms)}, "
                                                               f"{total('reader_errors')(ms)}")),
        Result("reader: longest stall (no successful read)", both(runs, secs("reader_stall_s"))),
        Result("lost writes (ambiguous, phantom)",
               both(runs, lambda ms: f"{total('lost_writes')(ms)} ({total('ambiguous_writes')(ms)}"
                                     f", {total('phantom_writes')(ms)})")),
    ]
    goals: dict[str, object] = {}
    if not rebuilt or not plain:
        out.append(Result("goals", "not judged: only one method measured" if available
                          else "not judged: this mvgraph has no `rebuild` command"))
        return out, notes, goals

    broken = sum(len(m.problems) for m in rebuilt)  # a failed or wrong run meets no goal

    def judged(passed: bool) -> bool | None:
        return None if quick else passed and not broken

    ratios = [r.write_stall_s / p.write_stall_s if p.write_stall_s > 0 else float("inf")
              for p, r in zip(plain, rebuilt, strict=True)]
    worst = max(m.write_stall_s for m in rebuilt)
    ratio = median(ratios)
    errors = sum(m.reader_errors for m in rebuilt)
    lost = sum(m.lost_writes for m in rebuilt)
    time_ratios = [r.total_s / p.total_s for p, r in zip(plain, rebuilt, strict=True)]
    blocked = [r.blocked_s / p.blocked_s if p.blocked_s > 0 else float("inf")
               for p, r in zip(plain, rebuilt, strict=True)]
    r_stalls = [r.reader_stall_s / p.reader_stall_s if p.reader_stall_s > 0 else float("inf")
                for p, r in zip(plain, rebuilt, strict=True)]

    def spread3(xs: list[float]) -> str:
        return f"{median(xs):.3f}" + (f" ({min(xs):.3f}-{max(xs):.3f})" if len(xs) > 1 else "")

    out += [
        Goal("rebuild: done, and the result checked (v bigint, dependents, indexes, rows)",
             "yes" if not broken else f"no: {broken} problem(s), see below", "yes",
             judged(True)),
        Goal("ratio: rebuild's longest write stall / plain way's", spread3(ratios),
             f"<= {STALL_RATIO_GOAL}", judged(ratio <= STALL_RATIO_GOAL)),
        Goal("rebuild's longest write stall" + (" (worst round)" if rounds > 1 else ""),
             fmt_s(worst), f"<= {STALL_GOAL_S:.0f} s", judged(worst <= STALL_GOAL_S)),
        Goal("rebuild: reader errors", f"{errors:,}", "0", judged(errors == 0)),
        Goal("rebuild: lost writes", f"{lost:,}", "0", judged(lost == 0)),
        Result("ratio: rebuild's total time / plain way's", spread3(time_ratios)),
        Result("ratio: rebuild's blocked time / plain way's", spread3(blocked)),
        Result("ratio: rebuild's reader stall / plain way's", spread3(r_stalls)),
    ]
    goals = {"stall_ratio": {"measured": ratio, "per_round": ratios, "goal": STALL_RATIO_GOAL,
                             "met": ratio <= STALL_RATIO_GOAL},
             "stall_s": {"measured": worst, "goal": STALL_GOAL_S, "met": worst <= STALL_GOAL_S},
             "reader_errors": {"measured": errors, "goal": 0, "met": errors == 0},
             "lost_writes": {"measured": lost, "goal": 0, "met": lost == 0},
             "problems": broken, "judged": not quick}
    return out, notes, goals


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_ROWS:,} rows, for a smoke check (no verdicts)")
    parser.add_argument("--rows", type=int, default=None,
                        help=f"rows in the table (default {ROWS:,}; --quick {QUICK_ROWS:,})")
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds of both methods, the order alternating (default 1)")
    parser.add_argument("--only", choices=sorted(METHODS), action="append",
                        help="measure this method alone (repeatable; goals need both)")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds a method may take before it is stopped (and reported "
                             "failed); default 1800")
    parser.add_argument("--json", metavar="FILE", default=None,
                        help="also write every measurement and the goals to FILE as JSON")
    return parser.parse_args(argv)


def main() -> None:
    args = parse()
    rows = args.rows or (QUICK_ROWS if args.quick else ROWS)
    available = rebuild_available()
    if not available:
        progress("this mvgraph has no `rebuild` command: measuring the plain way only")
    keys = [k for k in METHODS if k in (args.only or METHODS) and (available or k != "rebuild")]
    if not keys:
        raise SystemExit("nothing to measure: this mvgraph has no `rebuild` command")
    runs: dict[str, list[Measured]] = {k: [] for k in keys}
    started = time.monotonic()
    with scratch_dir("mvgraph-rebuild-") as work, server() as srv, \
            database(srv, "rebuild", init=False) as dsn:
        mvgraph_cmd("init", "--dsn", dsn)
        settings = server_note(srv)
        for rnd in range(args.rounds):
            for key in keys if rnd % 2 == 0 else keys[::-1]:
                runs[key].append(measure(METHODS[key], dsn, rows, work, args.timeout))
                m = runs[key][-1]
                progress(f"round {rnd + 1} {key}: total {m.total_s:.2f} s, write stall "
                         f"{m.write_stall_s:.3f} s, reader errors {m.reader_errors}, lost "
                         f"writes {m.lost_writes}")
    notes = [
        f"{rows:,} rows; dependents l1_v, l1_mv (+ unique index), l2_mv (+ unique index), "
        f"l3_v; change: {ACTION}; {args.rounds} round(s), each method on a fresh copy"
        + (", the order alternating; median (range) over rounds" if args.rounds > 1 else ""),
        "writer: one process, UPDATE and INSERT alternately, one row per autocommit "
        f"transaction, never pausing; reader: one process, {READ} every "
        f"{READER_PAUSE_S * 1000:.0f} ms; both from {LEAD_S:.0f} s before the method to "
        f"{TAIL_S:.0f} s after it",
        "write stall: the longest interval without an acknowledged write (= the longest write "
        "latency when none fails); lost: acknowledged writes missing from the table afterwards",
        "mvgraph rebuild: `python -m mvgraph rebuild public.t --action ... --json` (a new "
        "process; it runs the rebuild itself and waits for its end)",
    ]
    for key, ms in runs.items():
        for i, m in enumerate(ms, 1):
            if m.problems:
                notes.append(f"PROBLEM {key} round {i}: " + "; ".join(m.problems))
            if m.steps:
                notes.append(f"{key} round {i} steps: {step_times(m.steps)}")
            for what, errs in (("write", m.write_errors), ("reader", m.reader_error_messages)):
                for msg, n in sorted(errs.items(), key=lambda e: -e[1])[:3]:
                    notes.append(f"{key} round {i} {what} error x{n}: {msg}")
    notes += [settings, f"whole run {time.monotonic() - started:.0f} s"]
    table, notes, goals = report(runs, args.rounds, args.quick, available, notes)
    print_table(f"rebuild: {ACTION} under writes, {rows:,} rows, plain way vs mvgraph rebuild",
                table, notes, quick=args.quick)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"rows": rows, "rounds": args.rounds, "quick": args.quick, "action": ACTION,
             "rebuild_available": available, "notes": notes, "goals": goals,
             "runs": {k: [asdict(m) for m in ms] for k, ms in runs.items()}}, indent=1) + "\n",
            encoding="utf-8")


if __name__ == "__main__":
    main()
