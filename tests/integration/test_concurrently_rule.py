"""CONCURRENTLY asked for on a cascade (issue 18, item 8): used where the view allows it
(populated, a usable unique index), a plain refresh elsewhere with a reason saying so, and no
step failing because of it."""

from __future__ import annotations

import json

import psycopg
import pytest

import mvgraph
from mvgraph.db.scripts import run_files
from tests.conftest import FIXTURES, cli

Conn = psycopg.Connection[tuple[object, ...]]
PLAIN = "refreshed plainly, not CONCURRENTLY (no unique index on plain columns without WHERE)"


@pytest.fixture
def gauss(conn: Conn) -> Conn:
    """mv1 -> mv5 (unique index) -> mv6 (none), tracked, refreshed once."""
    run_files(conn, [FIXTURES / "gaussdb_nested" / "schema.sql"])
    mvgraph.track(conn, every=True)
    assert mvgraph.refresh(conn, "+mv6 mv2").status == "ok"
    return conn


@pytest.mark.parametrize("parallel", [1, 2])
def test_cascade_refreshes_a_view_without_unique_index_plainly(gauss: Conn,
                                                               parallel: int) -> None:
    gauss.execute("INSERT INTO test_table VALUES (60, 9, 1)")
    report = mvgraph.refresh(gauss, "mv1", "cascade forward", concurrently="always",
                             parallel=parallel)
    assert report.status == "ok"
    got = {str(s.name): s for s in report.steps}
    assert [n for n, s in got.items() if s.action == "refreshed"] == [
        "public.mv1", "public.mv5", "public.mv6"]
    assert got["public.mv5"].concurrently is True
    assert PLAIN not in got["public.mv5"].reason
    for name in ("public.mv1", "public.mv6"):
        assert got[name].concurrently is False
        assert PLAIN in got[name].reason, got[name].reason
    assert got["public.mv6"].reason.startswith("input public.mv5 was refreshed earlier")
    recorded = dict(gauss.execute("SELECT name, reason FROM mvgraph.job_step WHERE job_id = %s",
                                  (report.job_id,)).fetchall())
    assert PLAIN in str(recorded["public.mv6"])


def test_concurrently_not_populated_is_plain_with_reason(conn: Conn) -> None:
    conn.execute("CREATE TABLE t (id int PRIMARY KEY)")
    conn.execute("CREATE MATERIALIZED VIEW m AS SELECT id FROM t WITH NO DATA")
    conn.execute("CREATE UNIQUE INDEX ON m (id)")
    report = mvgraph.refresh(conn, "m", concurrently="always")
    assert report.status == "ok" and report.steps[0].concurrently is False
    assert "refreshed plainly, not CONCURRENTLY (not populated)" in report.steps[0].reason
    report = mvgraph.refresh(conn, "m", "restrict", concurrently="always")
    assert report.steps[0].concurrently is True
    assert "plainly" not in report.steps[0].reason


def test_sql_refresh_concurrently_cascade_forward(gauss: Conn, db_dsn: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    gauss.execute("INSERT INTO test_table VALUES (61, 9, 1)")
    code, out, err = cli(capsys, "--dsn", db_dsn, "sql", "--json",
                         "REFRESH MATERIALIZED VIEW CONCURRENTLY mv5 CASCADE FORWARD")
    assert code == 0, err
    assert "plainly" in out and "public.mv6" in out
    code, out, err = cli(capsys, "--dsn", db_dsn, "jobs", "--all", "--json")
    assert code == 0, err
    assert all(j["status"] == "done" for j in json.loads(out))
