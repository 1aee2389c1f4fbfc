"""Batches of steps (mvgraph.refresh_batch, one CALL per connection's run of steps): a failure
or a cancel in the middle of a batch behaves as it does step by step; events and job rows are
the same."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import mvgraph
from mvgraph.db.connect import connect
from mvgraph.refresh.executor import Executor

Conn = psycopg.Connection[tuple[object, ...]]


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[list[str]]]:
    """The names sent in each CALL of mvgraph.refresh_batch, in order."""
    sent: list[list[str]] = []
    original = Executor._call_batch

    def spy(self: Executor, conn: Conn, batch: list[dict[str, Any]]) -> None:
        sent.append([b["name"] for b in batch])
        original(self, conn, batch)

    monkeypatch.setattr(Executor, "_call_batch", spy)
    yield sent


@pytest.fixture
def row(conn: Conn) -> Conn:
    """a, c and e read t; b divides by ctl.d (0 makes it fail); d reads b."""
    conn.execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
    conn.execute("CREATE TABLE ctl (d int); INSERT INTO ctl VALUES (1)")
    for name, body in [("a", "SELECT x FROM t"),
                       ("b", "SELECT x / (SELECT d FROM ctl) AS x FROM t"),
                       ("c", "SELECT x FROM t"), ("d", "SELECT x FROM b"),
                       ("e", "SELECT x FROM t")]:
        conn.execute(f"CREATE MATERIALIZED VIEW {name} AS {body}")
    return conn


def statuses(conn: Conn, job: int | None) -> dict[str, str]:
    rows = conn.execute("SELECT name, status FROM mvgraph.job_step WHERE job_id = %s",
                        [job]).fetchall()
    return {str(n): str(s) for n, s in rows}


def test_a_forced_run_is_one_batch_with_the_same_events_and_rows(
        row: Conn, batches: list[list[str]]) -> None:
    events: list[tuple[str, str]] = []
    report = mvgraph.refresh(row, "a b c d e", force=True,
                             listener=lambda e: events.append(
                                 (type(e).__name__, str(getattr(e, "name", "")))))
    assert report.status == "ok"
    assert len(batches) == 1 and len(batches[0]) == 5
    order = [str(s.name) for s in report.steps]
    assert events == ([("JobStarted", "")]
                      + [p for n in order for p in (("StepStarted", n), ("StepFinished", n))]
                      + [("JobFinished", "")])
    assert set(statuses(row, report.job_id).values()) == {"done"}
    rows = row.execute("SELECT count(*), count(DISTINCT backend_pid), bool_and(started_at <= "
                       "finished_at), bool_and(duration_s IS NOT NULL) FROM mvgraph.job_step "
                       "WHERE job_id = %s", [report.job_id]).fetchone()
    assert rows == (5, 1, True, True)


@pytest.mark.parametrize("parallel", [1, 2])
def test_a_failed_step_in_the_middle_of_a_batch_blocks_its_dependents_only(
        row: Conn, batches: list[list[str]], parallel: int) -> None:
    row.execute("UPDATE ctl SET d = 0")
    report = mvgraph.refresh(row, "a b c d e", force=True, parallel=parallel)
    steps = {str(s.name): s for s in report.steps}
    assert report.status == "failed"
    assert {n: s.action for n, s in steps.items()} == {
        "public.a": "refreshed", "public.b": "failed", "public.c": "refreshed",
        "public.d": "blocked", "public.e": "refreshed"}
    assert "division by zero" in (steps["public.b"].error or "")
    assert steps["public.d"].reason == "blocked by public.b"
    assert statuses(row, report.job_id) == {
        "public.a": "done", "public.b": "failed", "public.c": "done", "public.d": "blocked",
        "public.e": "done"}
    if parallel == 1:  # one batch, b in its middle (with two, the ready steps are shared out)
        assert batches[0] == ["public.a", "public.b", "public.c", "public.d", "public.e"]
    # b's transaction was rolled back, the others' committed
    assert row.execute("SELECT count(*) FROM mvgraph.mv_state WHERE refreshed_at IS NOT NULL "
                       "AND name IN ('public.a', 'public.c', 'public.e')").fetchone() == (3,)


def test_cancel_in_the_middle_of_a_batch(row: Conn, db_dsn: str,
                                         batches: list[list[str]]) -> None:
    row.execute("CREATE FUNCTION nap(float8) RETURNS int LANGUAGE sql "
                "AS 'SELECT 1 FROM pg_sleep($1)'")
    row.execute("CREATE MATERIALIZED VIEW slow AS SELECT nap(20) AS s, x FROM a WITH NO DATA")
    row.execute("CREATE MATERIALIZED VIEW after_slow AS SELECT s FROM slow WITH NO DATA")
    executors: list[Executor] = []

    def cancel_while_slow_runs() -> None:
        deadline = time.monotonic() + 20
        with connect(db_dsn) as watcher:
            while time.monotonic() < deadline:
                busy = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query "
                    "~ 'mvgraph\\.refresh_batch\\(' AND wait_event = 'PgSleep'").fetchone()
                if busy and busy[0]:
                    break
                time.sleep(0.05)
        executors[0].cancel()

    def on_event(event: object) -> None:
        if isinstance(event, mvgraph.StepStarted) and str(event.name) == "public.slow":
            threading.Thread(target=cancel_while_slow_runs).start()

    started = time.monotonic()
    report = mvgraph.refresh(row, "a slow after_slow", force=True,
                             executor_hook=executors.append, listener=on_event)
    assert time.monotonic() - started < 15, "the running step was not cancelled at once"
    assert report.status == "cancelled"
    assert batches == [["public.a", "public.slow", "public.after_slow"]]
    steps = {str(s.name): (s.action, s.reason) for s in report.steps}
    assert steps["public.a"][0] == "refreshed"
    assert steps["public.slow"] == ("cancelled", "cancelled while running")
    assert steps["public.after_slow"][0] == "cancelled"
    assert statuses(row, report.job_id) == {"public.a": "done", "public.slow": "cancelled",
                                            "public.after_slow": "cancelled"}
    assert row.execute("SELECT count(*) FROM pg_class WHERE relname IN ('slow', 'after_slow') "
                       "AND relispopulated").fetchone() == (0,)


def test_a_cancel_request_stops_the_batch_between_steps(
        row: Conn, db_dsn: str, batches: list[list[str]]) -> None:
    """A request written to the job (what mvgraph.cancel_job does before it cancels running
    statements) while a step runs: that step finishes, the next one does not start."""
    row.execute("CREATE FUNCTION nap(float8) RETURNS int LANGUAGE sql "
                "AS 'SELECT 1 FROM pg_sleep($1)'")
    row.execute("CREATE MATERIALIZED VIEW slow AS SELECT nap(3) AS s, x FROM a WITH NO DATA")
    row.execute("CREATE MATERIALIZED VIEW after_slow AS SELECT s FROM slow WITH NO DATA")

    def request_cancel(event: object) -> None:
        if isinstance(event, mvgraph.StepStarted) and str(event.name) == "public.slow":
            # the notice comes just before the step's own start (which reads the request):
            # write the request once the step's REFRESH is really running (its nap)
            with connect(db_dsn) as other:
                deadline = time.monotonic() + 30
                while other.execute(
                        "SELECT FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event = 'PgSleep'").fetchone() is None:
                    assert time.monotonic() < deadline, "the slow step never ran"
                    time.sleep(0.01)
                other.execute("UPDATE mvgraph.job SET request = 'cancel' WHERE id = %s",
                              [event.job_id])

    report = mvgraph.refresh(row, "a slow after_slow", force=True, listener=request_cancel)
    assert report.status == "cancelled"
    assert batches == [["public.a", "public.slow", "public.after_slow"]]
    steps = {str(s.name): s.action for s in report.steps}
    assert steps == {"public.a": "refreshed", "public.slow": "refreshed",
                     "public.after_slow": "cancelled"}
    assert statuses(row, report.job_id) == {"public.a": "done", "public.slow": "done",
                                            "public.after_slow": "cancelled"}


def test_a_step_raced_by_another_refresh_is_decided_again_by_the_client(
        row: Conn, db_dsn: str, batches: list[list[str]]) -> None:
    """A plan's verdict is checked under the view's lock: b refreshed elsewhere after the plan,
    the batch stops there and the client decides again from fresh facts (b is fresh now)."""
    mvgraph.track(row, every=True)
    assert mvgraph.refresh(row, "a b c").status == "ok"
    row.execute("INSERT INTO t VALUES (2)")
    batches.clear()

    def refresh_b_elsewhere(_: Executor) -> None:
        with connect(db_dsn) as other:
            assert mvgraph.refresh(other, "b").status == "ok"
        batches.clear()  # that refresh's own batch

    report = mvgraph.refresh(row, "a b c", executor_hook=refresh_b_elsewhere)
    steps = {str(s.name): s for s in report.steps}
    assert report.status == "ok"
    assert (steps["public.a"].action, steps["public.b"].action,
            steps["public.c"].action) == ("refreshed", "skipped", "refreshed")
    assert batches[0] == ["public.a", "public.b", "public.c"]
    assert batches[1:] == [["public.c"]]  # after b, decided by the client, the rest
    assert statuses(row, report.job_id) == {"public.a": "done", "public.b": "skipped",
                                            "public.c": "done"}


def test_steps_the_plan_skips_stay_skipped_inside_a_batch(
        row: Conn, batches: list[list[str]]) -> None:
    """A cascade: b and c (and what reads them) refreshed, a and e skipped in between without
    breaking the batch; d, after b changed, refreshed on the server."""
    mvgraph.track(row, every=True)
    row.execute("CREATE TABLE u (x int); INSERT INTO u VALUES (1)")
    row.execute("CREATE MATERIALIZED VIEW f AS SELECT x FROM u")
    mvgraph.track(row, ["u"])  # (an untracked input is never skipped)
    assert mvgraph.refresh(row, "a b c d e f").status == "ok"
    row.execute("INSERT INTO t VALUES (2)")
    batches.clear()
    events: list[str] = []
    report = mvgraph.refresh(row, "a b c d e f", listener=lambda e: events.append(
        f"{type(e).__name__} {getattr(e, 'name', '')}".strip()))
    acts = {str(s.name): s.action for s in report.steps}
    assert acts == {"public.a": "refreshed", "public.b": "refreshed", "public.c": "refreshed",
                    "public.d": "refreshed", "public.e": "refreshed", "public.f": "skipped"}
    assert len(batches) == 1 and "public.f" in batches[0]
    assert "StepStarted public.f" not in events and "StepFinished public.f" in events
    assert statuses(row, report.job_id)["public.f"] == "skipped"
