"""Several processes refreshing overlapping cascades while others write: how mvgraph is used."""

from __future__ import annotations

import multiprocessing
import random
import time
import traceback
from multiprocessing.synchronize import Event

from psycopg import sql

import mvgraph
from mvgraph.db.connect import connect
from mvgraph.db.scripts import run_script

SCHEMA = """
CREATE TABLE a (k int PRIMARY KEY, v int NOT NULL);
CREATE TABLE b (k int PRIMARY KEY, v int NOT NULL);
INSERT INTO a SELECT g, g FROM generate_series(1, 50) g;
INSERT INTO b SELECT g, g % 7 FROM generate_series(1, 50) g;
CREATE MATERIALIZED VIEW m1 AS SELECT k % 10 AS k, sum(v) AS s FROM a GROUP BY 1;
CREATE UNIQUE INDEX ON m1 (k);
CREATE MATERIALIZED VIEW m2 AS SELECT v AS k, count(*) AS n FROM b GROUP BY 1;
CREATE UNIQUE INDEX ON m2 (k);
CREATE MATERIALIZED VIEW m3 AS
    SELECT m1.k, m1.s + coalesce(m2.n, 0) AS total FROM m1 LEFT JOIN m2 USING (k);
CREATE UNIQUE INDEX ON m3 (k);
CREATE MATERIALIZED VIEW m4 AS SELECT k, s FROM m1 WHERE s % 2 = 0;
CREATE MATERIALIZED VIEW m5 AS SELECT count(*) AS n, sum(total) AS t FROM m3 JOIN m4 USING (k);
CREATE MATERIALIZED VIEW m6 AS
    SELECT b.k, b.v + coalesce(m2.n, 0) AS w FROM b JOIN m2 ON m2.k = b.v;
CREATE UNIQUE INDEX ON m6 (k);
"""
VIEWS = ["m1", "m2", "m3", "m4", "m5", "m6"]
BEHAVIORS = ["cascade all", "cascade forward", "cascade backward", "default", "restrict"]
RUNS_PER_PROCESS = 12


def refresher(dsn: str, seed: int, out: multiprocessing.Queue[str]) -> None:
    """Random overlapping cascades: serial, parallel, and about 3 in 10 atomic."""
    rng = random.Random(seed)
    for i in range(RUNS_PER_PROCESS):
        target, behavior = rng.choice(VIEWS), rng.choice(BEHAVIORS)
        atomic = rng.random() < 0.3
        parallel = 1 if atomic else rng.choice([1, 2, 3])
        try:
            report = mvgraph.refresh(dsn, target, behavior, parallel=parallel, atomic=atomic,
                                     lock_timeout="30s")
            bad = [f"{s.name}: {s.action} {s.error}" for s in report.steps
                   if s.action not in ("refreshed", "skipped")]
            out.put(f"error: run {i} {target} {behavior} atomic={atomic}: {bad}" if bad
                    else "ok")
        except Exception:  # reported to the test
            out.put(f"error: run {i} {target} {behavior} atomic={atomic}: "
                    f"{traceback.format_exc()}")


def writer(dsn: str, seed: int, stop: Event, out: multiprocessing.Queue[str]) -> None:
    """Small writing transactions on both base tables until told to stop."""
    rng = random.Random(seed)
    try:
        with connect(dsn) as conn:
            while not stop.is_set():
                table = sql.Identifier(rng.choice(["a", "b"]))
                k = rng.randint(1, 80)
                conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, %s) ON CONFLICT (k) "
                                     "DO UPDATE SET v = EXCLUDED.v").format(table),
                             [k, rng.randint(0, 20)])
                time.sleep(0.005)
        out.put("ok")
    except Exception:  # reported to the test
        out.put(f"error: writer {traceback.format_exc()}")


def differences(dsn: str, view: str) -> int:
    """Rows in which a view and a fresh run of its query differ."""
    with connect(dsn) as conn:
        row = conn.execute("SELECT pg_get_viewdef(%s::regclass)", [view]).fetchone()
        assert row is not None
        query = sql.SQL(str(row[0]).rstrip().rstrip(";"))
        name = sql.Identifier(view)
        diff = conn.execute(sql.SQL(
            "SELECT count(*) FROM ((TABLE {v} EXCEPT ALL ({q})) UNION ALL "
            "(({q}) EXCEPT ALL TABLE {v})) d").format(v=name, q=query)).fetchone()
        return int(str(diff[0])) if diff else -1


def test_overlapping_runs_in_several_processes_with_writers(db_dsn: str) -> None:
    with connect(db_dsn) as conn:
        run_script(conn, SCHEMA)
        mvgraph.track(conn, every=True)
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[str] = ctx.Queue()
    stop = ctx.Event()
    writers = [ctx.Process(target=writer, args=(db_dsn, 100 + i, stop, out)) for i in range(2)]
    refreshers = [ctx.Process(target=refresher, args=(db_dsn, i, out)) for i in range(3)]
    for p in writers + refreshers:
        p.start()
    for p in refreshers:
        p.join(120)
    stop.set()
    for p in writers:
        p.join(30)
    outcomes = [out.get(timeout=10) for _ in range(len(refreshers) * RUNS_PER_PROCESS + 2)]
    errors = [o for o in outcomes if o != "ok"]
    assert errors == []
    assert len(outcomes) == 3 * RUNS_PER_PROCESS + 2
    final = mvgraph.refresh(db_dsn, "*")  # refreshes only what changed since the last runs
    assert final.status == "ok"
    assert {v: differences(db_dsn, v) for v in VIEWS} == dict.fromkeys(VIEWS, 0)
