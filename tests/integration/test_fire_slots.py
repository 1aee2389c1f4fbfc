"""The daemon's one-statement firing (mvgraph.fire_slots, 0022) against a real database: each
slot once however many daemons fire it, the overlap rule, the job owned by the schedule's owner,
removed schedules left out; and the batch helpers of the catch-up and of run ends."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from mvgraph.model.status import SlotStatus
from mvgraph.scheduler import store
from mvgraph.scheduler.store import Firing

Conn = psycopg.Connection[tuple[object, ...]]
SLOT = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
OPTIONS = {"search_path": ["public"]}


@pytest.fixture
def ids(conn: Conn) -> Iterator[list[int]]:
    """Three one-minute schedules (s1 and s2 overlap = skip, s3 overlap = queue)."""
    for k in (1, 2, 3):
        conn.execute(f"CREATE MATERIALIZED VIEW s{k} AS SELECT {k} AS k")
    conn.execute("""
        INSERT INTO mvgraph.schedule (name, what, view_oid, view_name, kind, start_at, every,
                                      every_text, tz, overlap, source)
        SELECT c.relname, '', c.oid, '', 'interval', '2030-01-01', interval '1 minute',
               '1 minute', 'UTC', CASE WHEN c.relname = 's3' THEN 'queue' ELSE 'skip' END, 't'
          FROM pg_class c WHERE c.relname IN ('s1', 's2', 's3') AND c.relkind = 'm'""")
    yield [int(str(r[0])) for r in
           conn.execute("SELECT id FROM mvgraph.schedule ORDER BY name").fetchall()]


def fire(conn: Conn, ids: list[int], at: datetime, by: str = "a") -> dict[int, store.FireResult]:
    firings = [Firing(i, at, None, at + timedelta(minutes=1)) for i in ids]
    return {r.schedule_id: r for r in store.fire_slots(conn, firings, by, OPTIONS)}


def test_each_slot_fires_once_with_a_job_owned_by_the_schedule_owner(conn: Conn,
                                                                       ids: list[int]) -> None:
    role = f"r_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {role}")
    try:
        conn.execute("UPDATE mvgraph.schedule_data SET owner = %s, login = %s WHERE id = %s",
                     [role, role, ids[0]])
        got = fire(conn, ids, SLOT)
        assert {i: r.outcome for i, r in got.items()} == dict.fromkeys(ids, "fired")
        again = fire(conn, ids, SLOT, by="b")  # a second daemon: nothing more
        assert {r.outcome for r in again.values()} == {"taken"}
        assert all(r.job_id is None for r in again.values())
        rows = conn.execute("""
            SELECT ss.schedule_id, j.id, j.owner::text, j.login::text, j.statement, j.status,
                   s.owner::text, s.login::text, s.what, s.last_job, s.next_run, ss.claimed_by
              FROM mvgraph.schedule_slot_data ss JOIN mvgraph.job_data j ON j.id = ss.job_id
              JOIN mvgraph.schedule_data s ON s.id = ss.schedule_id
             WHERE ss.slot = %s ORDER BY 1""", [SLOT]).fetchall()
        assert len(rows) == 3
        assert conn.execute("SELECT count(*) FROM mvgraph.job_data").fetchone() == (3,)
        for sid, job, owner, login, what, status, s_owner, s_login, s_what, last, nxt, by in rows:
            assert job == got[int(str(sid))].job_id == last
            assert (owner, login, what, status) == (s_owner, s_login, s_what, "queued")
            assert nxt == SLOT + timedelta(minutes=1) and by == "a"
        assert rows[0][2] == role, "the job runs with the schedule owner's rights"
    finally:
        conn.execute("DELETE FROM mvgraph.job_data")
        conn.execute(f"DROP ROLE {role}")


def test_the_overlap_rule(conn: Conn, ids: list[int]) -> None:
    fire(conn, ids, SLOT)  # three jobs queued
    nxt = fire(conn, ids, SLOT + timedelta(minutes=1))
    assert [nxt[i].outcome for i in ids] == ["skipped", "skipped", "waits"]
    assert nxt[ids[0]].reason == "the previous run was still going"
    third = fire(conn, ids, SLOT + timedelta(minutes=2))
    assert third[ids[2]].outcome == "skipped"
    assert third[ids[2]].reason == "one run already waits (overlap queue)"
    conn.execute("UPDATE mvgraph.job_data SET status = 'done', finished_at = now()")
    free = fire(conn, ids[:2], SLOT + timedelta(minutes=3))
    assert {r.outcome for r in free.values()} == {"fired"}


def test_a_removed_schedule_is_left_out_and_one_slot_per_schedule_a_call(
        conn: Conn, ids: list[int]) -> None:
    conn.execute("DELETE FROM mvgraph.schedule_data WHERE id = %s", [ids[1]])
    got = fire(conn, ids, SLOT)
    assert [got[i].outcome for i in ids] == ["fired", "gone", "fired"]
    with pytest.raises(Exception, match="one slot per schedule"):
        store.fire_slots(conn, [Firing(ids[0], SLOT, None, None),
                                Firing(ids[0], SLOT + timedelta(minutes=1), None, None)],
                         "a", OPTIONS)


def test_missed_slots_are_recorded_once_and_ends_closed_once(conn: Conn,
                                                              ids: list[int]) -> None:
    wanted = [(i, SLOT - timedelta(minutes=m)) for i in ids for m in (1, 2)]
    first = store.record_slots(conn, wanted, SlotStatus.MISSED, "down", "a")
    assert first == set(wanted)
    assert store.record_slots(conn, wanted, SlotStatus.MISSED, "down", "b") == set()
    assert store.last_clock_slots(conn, ids) == dict.fromkeys(ids, SLOT - timedelta(minutes=1))
    got = fire(conn, ids, SLOT)
    conn.execute("UPDATE mvgraph.job_data SET status = 'failed', error = 'boom', "
                 "finished_at = now() WHERE id = %s", [got[ids[0]].job_id])
    rows = conn.execute("SELECT schedule_id, status, error, failure_count, broke "
                        "FROM mvgraph.close_schedule_ends()").fetchall()
    assert rows == [(ids[0], "failed", "boom", 1, False)]
    assert conn.execute("SELECT count(*) FROM mvgraph.close_schedule_ends()").fetchone() == (0,)
    row = conn.execute("SELECT last_status, last_error, failure_count FROM mvgraph.schedule_data "
                       "WHERE id = %s", [ids[0]]).fetchone()
    assert row == ("failed", "boom", 1)
