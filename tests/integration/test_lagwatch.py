"""The daemon's freshness tick (TargetWatch): one probe while nothing changed, and every kind
of change still seen at the next tick."""

from __future__ import annotations

import psycopg

import mvgraph
from mvgraph.scheduler.lag import Verdict
from mvgraph.scheduler.lagwatch import TargetWatch
from tests.integration.test_lag import setup, slots

Conn = psycopg.Connection[tuple[object, ...]]


def verdicts(watch: TargetWatch, conn: Conn) -> dict[str, Verdict]:
    return {str(d.target.view): d.verdict for d in watch.tick(conn).decisions}


def test_an_unchanged_database_is_not_read_again_and_each_change_is_seen(
        conn: Conn, db_dsn: str) -> None:
    setup(conn, db_dsn)
    watch = TargetWatch()
    fresh = {"public.t1": Verdict.FRESH, "public.t2": Verdict.FRESH}
    assert verdicts(watch, conn) == fresh and watch.full_reads == 1
    # the first reading found the views to watch: the next one reads with the probe for them
    assert verdicts(watch, conn) == fresh and watch.full_reads == 2
    assert verdicts(watch, conn) == fresh and watch.full_reads == 2  # the probe alone
    # a write under the targets: stale (not due within 10 minutes)
    conn.execute("INSERT INTO raw VALUES (2)")
    stale = {"public.t1": Verdict.WAIT, "public.t2": Verdict.WAIT}
    assert verdicts(watch, conn) == stale and watch.full_reads == 3
    first = {str(d.target.view): d.lag_s for d in watch.tick(conn).decisions}
    assert watch.full_reads == 3 and all(v is not None and v >= 0 for v in first.values())
    # a refresh of one target (its refresh record) and of the other one's input
    mvgraph.refresh(conn, ["t1"], "cascade backward")
    assert verdicts(watch, conn) == {"public.t1": Verdict.FRESH, "public.t2": Verdict.WAIT}
    assert watch.full_reads == 4
    # DDL (the catalog's fingerprint), then the tracking trigger disabled
    conn.execute("CREATE TABLE unrelated (x int)")
    verdicts(watch, conn)
    assert watch.full_reads == 5
    conn.execute("ALTER TABLE raw DISABLE TRIGGER USER")
    verdicts(watch, conn)
    assert watch.full_reads == 6
    assert verdicts(watch, conn)["public.t1"] is Verdict.WAIT  # untracked: changed, undated
    assert watch.full_reads == 6


def test_a_due_target_is_submitted_from_the_probe(conn: Conn, db_dsn: str) -> None:
    setup(conn, db_dsn, lag="1 second")  # due as soon as something changed (the margin)
    watch = TargetWatch()
    assert watch.tick(conn).firings == ()
    conn.execute("INSERT INTO raw VALUES (2)")
    result = watch.tick(conn)
    assert len(result.firings) == 1 and len(slots(conn)) == 2
    again = watch.tick(conn)  # its job waits for a worker: busy, nothing more
    assert again.firings == () and {d.verdict for d in again.decisions} == {Verdict.BUSY}


def test_a_tick_that_asks_for_a_longer_period_gets_it(db_dsn: str) -> None:
    """A daemon's tick returning a number is next due that many seconds after it ran (the
    freshness tick asks for 2 s while every target's margin allows it), never sooner than
    its own period."""
    import threading
    import time

    from mvgraph.scheduler.daemon import Daemon, DaemonConfig

    daemon = Daemon(DaemonConfig(db_dsn, workers=0, name="tick-period"))
    calls: dict[str, list[float]] = {"asks": [], "plain": []}

    def asks(_conn: Conn) -> float:
        calls["asks"].append(time.monotonic())
        return 0.6

    def plain(_conn: Conn) -> None:
        calls["plain"].append(time.monotonic())

    daemon.add_tick(asks, 0.1, "asks")
    daemon.add_tick(plain, 0.1, "plain")
    runner = threading.Thread(target=daemon.run, daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while len(calls["asks"]) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        daemon.stop()
        runner.join(30)
    assert len(calls["asks"]) >= 4, "the tick ran"
    gaps = [b - a for a, b in zip(calls["asks"], calls["asks"][1:], strict=False)]
    assert min(gaps) >= 0.55, gaps
    assert len(calls["plain"]) > 2 * len(calls["asks"]), "the other tick kept its period"
