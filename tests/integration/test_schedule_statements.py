"""GaussDB's scheduled materialized views (seed 003, section 2) through ``mvgraph sql -f``:
the vendor's example statements, verbatim, and what they must do to the schedules table."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from mvgraph.db.connect import connect
from tests.conftest import cli

Conn = psycopg.Connection[tuple[object, ...]]

CREATE = """\
CREATE TABLE test_table(a int2, b int, c int8, d int) WITH (ORIENTATION = COLUMN, COLVERSION = 2.0) DISTRIBUTE BY hash(c);
create materialized view mv_test_sync_default REFRESH START WITH('2020-01-01 12:12:12'::timestamptz) EVERY (interval '1 s')  ENABLE QUERY REWRITE as
select  a,sum(b) b from test_table group by a;
create materialized view mv_test_sync_restrict REFRESH restrict START WITH('2020-01-01 12:12:12'::timestamptz) EVERY (interval '1 s') ENABLE QUERY REWRITE as
select  a,sum(b) b from test_table group by a;
create materialized view mv_test_sync_forward REFRESH cascade forward START WITH('2020-01-01 12:12:12'::timestamptz) EVERY (interval '1 s') ENABLE QUERY REWRITE as
select  a,sum(b) b from test_table group by a;
create materialized view mv_test_sync_backward REFRESH cascade backward START WITH('2020-01-01 12:12:12'::timestamptz) EVERY (interval '1 s') ENABLE QUERY REWRITE as
select  a,sum(b) b from test_table group by a;
create materialized view mv_test_sync_all REFRESH cascade all START WITH('2020-01-01 12:12:12'::timestamptz) EVERY (interval '1 s') ENABLE QUERY REWRITE as
select  a,sum(b) b from test_table group by a;
"""  # noqa: E501
SELECT = """\
SELECT what, category_id, is_broken, interval FROM scheduler.pg_task WHERE what LIKE '%mv_test%' ORDER BY 1;
"""  # noqa: E501
ALTER = """\
ALTER MATERIALIZED VIEW mv_test_sync_backward REFRESH START WITH('2020-01-01 15:15:15'::timestamptz) EVERY (interval '10 s') ;
ALTER MATERIALIZED VIEW mv_test_sync_restrict REFRESH cascade all START WITH('2020-01-01 12:12:12'::timestamptz) EVERY (interval '20 s') ;
ALTER MATERIALIZED VIEW mv_test_sync_all REFRESH  default;
ALTER MATERIALIZED VIEW mv_test_sync_forward REFRESH default START WITH('2020-01-01 12:12:12'::timestamptz) EVERY (interval '50 s') ;
"""  # noqa: E501
START = datetime(2020, 1, 1, 12, 12, 12, tzinfo=UTC)


def rows(conn: Conn) -> dict[str, tuple[object, ...]]:
    """Each schedule; its next run is a current slot (a start in 2020 gives the next future
    slot, not a burst of catch-up), allowing for a slow machine between write and read."""
    found = conn.execute(
        "SELECT view_name, behavior, start_at, extract(epoch FROM every)::int, every_text, "
        "what, next_run > now() - interval '5 minutes' FROM mvgraph.schedule").fetchall()
    return {str(r[0]): tuple(r[1:]) for r in found}


def run_sql(capsys: pytest.CaptureFixture[str], tmp_path: Path, dsn: str, text: str,
            *extra: str) -> tuple[int, str, str]:
    script = tmp_path / "script.sql"
    script.write_text(text)
    return cli(capsys, "sql", "-f", str(script), "--dsn", dsn, *extra)


def test_the_seed_examples_run_verbatim_and_do_what_the_document_says(
        db_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with connect(db_dsn) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute("ALTER DATABASE " + conn.info.dbname + " SET TimeZone = 'UTC'")
    code, out, err = run_sql(capsys, tmp_path, db_dsn, CREATE)
    assert code == 0, err
    assert "ORIENTATION = COLUMN, COLVERSION = 2.0 dropped" in err
    assert "DISTRIBUTE BY hash(c) dropped" in err
    assert "ENABLE QUERY REWRITE accepted and ignored" in err
    assert out.count("CREATE MATERIALIZED VIEW") == 5
    with connect(db_dsn) as conn:
        kinds = dict(conn.execute("SELECT relname, relkind::text FROM pg_class WHERE relname "
                                  "LIKE 'mv_test%' OR relname = 'test_table'").fetchall())
        assert kinds == {"test_table": "r", **{f"mv_test_sync_{b}": "m" for b in
                         ("default", "restrict", "forward", "backward", "all")}}
        got = rows(conn)
    assert got == {
        f"public.mv_test_sync_{name}": (
            behavior, START, 1, "interval '1 s'",
            f"REFRESH MATERIALIZED VIEW public.mv_test_sync_{name} {behavior}", True)
        for name, behavior in (("default", "DEFAULT"), ("restrict", "RESTRICT"),
                               ("forward", "CASCADE FORWARD"), ("backward", "CASCADE BACKWARD"),
                               ("all", "CASCADE ALL"))}

    code, out, err = run_sql(capsys, tmp_path, db_dsn, SELECT, "--json")
    assert code == 0, err
    import json

    result = json.loads(out)[0]
    assert result["columns"] == ["what", "category_id", "is_broken", "interval"]
    assert [r[0] for r in result["rows"]] == sorted(r[0] for r in result["rows"])
    assert result["rows"][0] == ["REFRESH MATERIALIZED VIEW public.mv_test_sync_all CASCADE ALL",
                                 "materialized_view", False, "interval '1 s'"]
    assert len(result["rows"]) == 5

    code, out, err = run_sql(capsys, tmp_path, db_dsn, ALTER)
    assert code == 0, err
    with connect(db_dsn) as conn:
        got = rows(conn)
    # behaviour kept, schedule changed
    assert got["public.mv_test_sync_backward"][:4] == (
        "CASCADE BACKWARD", datetime(2020, 1, 1, 15, 15, 15, tzinfo=UTC), 10, "interval '10 s'")
    # behaviour and schedule changed
    assert got["public.mv_test_sync_restrict"][:4] == ("CASCADE ALL", START, 20,
                                                       "interval '20 s'")
    # behaviour only: schedule kept
    assert got["public.mv_test_sync_all"][:4] == ("DEFAULT", START, 1, "interval '1 s'")
    assert got["public.mv_test_sync_forward"][:4] == ("DEFAULT", START, 50, "interval '50 s'")


def test_every_without_start_keeps_the_start_and_drop_removes_the_schedule(
        db_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_sql(capsys, tmp_path, db_dsn, CREATE)
    assert code == 0, err
    code, _, err = run_sql(capsys, tmp_path, db_dsn, "ALTER MATERIALIZED VIEW "
                           "mv_test_sync_all REFRESH cascade forward EVERY (interval '5 min');")
    assert code == 0, err
    with connect(db_dsn) as conn:
        got = rows(conn)["public.mv_test_sync_all"]
        assert got[:4] == ("CASCADE FORWARD", START, 300, "interval '5 min'")
    code, _, err = run_sql(capsys, tmp_path, db_dsn, "DROP MATERIALIZED VIEW mv_test_sync_all;")
    assert code == 0, err
    with connect(db_dsn) as conn:
        assert "public.mv_test_sync_all" not in rows(conn)
        assert len(rows(conn)) == 4
    # a plain psql drop (not through mvgraph): the sql_drop event trigger removes it
    with connect(db_dsn) as conn:
        conn.execute("DROP MATERIALIZED VIEW mv_test_sync_default")
        assert "public.mv_test_sync_default" not in rows(conn)
        conn.execute("DROP TABLE test_table CASCADE")
        assert rows(conn) == {}


def test_a_failing_schedule_clause_leaves_no_view_behind(
        db_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = ("CREATE TABLE t (a int);\n"
            "CREATE MATERIALIZED VIEW mv REFRESH EVERY (interval '1 month') AS SELECT a FROM t;")
    code, _, err = run_sql(capsys, tmp_path, db_dsn, text)
    assert code == 2
    assert "script.sql:2" in err and "months or years" in err
    with connect(db_dsn) as conn:
        assert conn.execute("SELECT to_regclass('mv')").fetchone() == (None,)


def test_status_enums_cover_the_schedule_checks(conn: Conn) -> None:
    from mvgraph.refresh.behavior import RefreshBehavior
    from tests.integration.test_status_enums import check_values

    assert check_values(conn, "schedule", "behavior") == {b.value for b in RefreshBehavior}


def test_schedules_are_not_open_to_public(conn: Conn) -> None:
    for rel in ("mvgraph.schedule", "mvgraph.schedule_slot", "scheduler.pg_task"):
        row = conn.execute("SELECT has_table_privilege('public', %s, 'SELECT')", [rel]
                           ).fetchone()
        assert row == (False,), rel


def test_schedule_changes_are_announced_and_slots_are_claimed_once(db_dsn: str) -> None:
    from mvgraph.model.status import SlotStatus
    from mvgraph.scheduler import service, store

    with connect(db_dsn) as listener, connect(db_dsn) as conn:
        store.listen(listener)
        conn.execute("CREATE TABLE t (a int); CREATE MATERIALIZED VIEW mv AS SELECT a FROM t")
        s = service.add(conn, "mv", service.Clock(every="1 minute"))
        service.alter(conn, "mv", service.Clock(), behavior="restrict")
        slot = datetime(2030, 1, 1, tzinfo=UTC)
        assert store.claim_slot(conn, s.id, slot, SlotStatus.FIRED)
        assert not store.claim_slot(conn, s.id, slot, SlotStatus.SKIPPED)  # taken
        service.remove(conn, "mv")
        got = [n.payload for n in listener.notifies(timeout=1.0, stop_after=3)]
    assert got == [f"insert:{s.id}", f"update:{s.id}", f"delete:{s.id}"]
