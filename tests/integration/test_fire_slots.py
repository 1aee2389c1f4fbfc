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


def test_purge_deletes_old_slots_whose_run_is_over_keeping_each_schedules_newest(
        conn: Conn, ids: list[int]) -> None:
    """Slot rows do not pile up: past the retention a worker's purge deletes those whose run
    is over (ended, skipped, missed; run-now ones too), never a run still going or waiting,
    nor a schedule's newest clock slot (a daemon catches up from it); a role that sees only
    its own jobs purges no slot row."""
    s1, s2, s3 = ids
    old = datetime.now(UTC).replace(microsecond=0) - timedelta(days=30)
    fire(conn, [s1, s2, s3], old)  # three jobs queued
    conn.execute("UPDATE mvgraph.job_data j SET status = 'done', finished_at = now() "
                 "FROM mvgraph.schedule_slot_data ss WHERE ss.job_id = j.id "
                 "AND ss.schedule_id = %s", [s1])
    conn.execute("UPDATE mvgraph.schedule_slot_data SET ended = true WHERE schedule_id = %s",
                 [s1])  # s1's run is over and closed; s2's job still queued
    assert fire(conn, [s3], old + timedelta(minutes=1))[s3].outcome == "waits"  # s3 waits
    store.record_slots(conn, [(s1, old + timedelta(minutes=1)), (s1, old + timedelta(minutes=3))],
                       SlotStatus.MISSED, "test", "t")
    conn.execute("INSERT INTO mvgraph.schedule_slot_data (schedule_id, slot, status, reason) "
                 "VALUES (%s, %s, 'skipped', 'test')", [s1, old + timedelta(minutes=2)])
    conn.execute("INSERT INTO mvgraph.schedule_slot_data (schedule_id, slot, status, manual, "
                 "ended) VALUES (%s, %s, 'fired', true, true)", [s1, old + timedelta(minutes=4)])
    before = conn.execute("SELECT count(*) FROM mvgraph.schedule_slot_data").fetchone()

    def slots() -> set[tuple[int, timedelta]]:
        return {(int(str(r[0])), r[1] - old) for r in conn.execute(  # type: ignore[operator]
            "SELECT schedule_id, slot FROM mvgraph.schedule_slot_data").fetchall()}

    viewer = f"v_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {viewer}")
    try:
        conn.execute("SELECT mvgraph.grant_privileges(%s, 'operator')", [viewer])
        conn.execute(f"SET ROLE {viewer}")
        purged = conn.execute("SELECT mvgraph.purge_jobs(7)").fetchone()
        conn.execute("RESET ROLE")
        assert purged == (0,)
        assert conn.execute("SELECT count(*) FROM mvgraph.schedule_slot_data").fetchone() \
            == before, "an operator purges no slot row"
        conn.execute("SELECT mvgraph.purge_jobs(7)")
        assert slots() == {(s1, timedelta(minutes=3)),  # s1's newest clock slot
                           (s2, timedelta(0)),  # its job is still queued
                           (s3, timedelta(0)), (s3, timedelta(minutes=1))}  # queued, waiting
    finally:
        conn.execute("RESET ROLE")
        conn.execute("DELETE FROM mvgraph.job_data")
        conn.execute("SELECT mvgraph.revoke_privileges(%s)", [viewer])
        conn.execute(f"DROP OWNED BY {viewer}")
        conn.execute(f"DROP ROLE {viewer}")
