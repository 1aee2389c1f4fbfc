"""The refresh commands as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from mvgraph.db.connect import connect
from tests.conftest import ROOT, cli


def test_refresh_json_shape_and_exit_codes(capsys: pytest.CaptureFixture[str],
                                           gauss_dsn: str) -> None:
    code, out, _ = cli(capsys, "refresh", "mv5", "--cascade", "all", "--json", "--dsn", gauss_dsn)
    assert code == 0
    data = json.loads(out)
    assert data["status"] == "ok"
    assert [(s["name"], s["action"]) for s in data["steps"]] == [
        ("public.mv1", "refreshed"), ("public.mv5", "refreshed"), ("public.mv6", "refreshed")]
    assert all(isinstance(s["duration_s"], float) and s["reason"] for s in data["steps"])


def test_plan_and_dry_run_do_not_refresh(capsys: pytest.CaptureFixture[str],
                                         gauss_dsn: str) -> None:
    code, out, _ = cli(capsys, "--dsn", gauss_dsn, "plan", "mv5", "--cascade", "backward",
                       "--json")
    assert code == 0
    assert [s["name"] for s in json.loads(out)["steps"]] == ["public.mv1", "public.mv5"]
    code, out, _ = cli(capsys, "--dsn", gauss_dsn, "refresh", "+mv5+", "--dry-run")
    assert code == 0 and "never refreshed" in out
    code, out, _ = cli(capsys, "--dsn", gauss_dsn, "plan", "*")
    assert code == 0
    assert out.splitlines()[0] == "plan for '*': 4 materialized views, 4 to refresh, 0 to skip"
    with connect(gauss_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM mvgraph.job").fetchone() == (0,)


def test_failed_step_exits_1(capsys: pytest.CaptureFixture[str], gauss_dsn: str) -> None:
    with connect(gauss_dsn) as conn:  # (CONCURRENTLY without a unique index no longer fails)
        conn.execute("CREATE FUNCTION boom() RETURNS int LANGUAGE plpgsql AS "
                     "$$ BEGIN RAISE EXCEPTION 'boom'; END $$")
        conn.execute("CREATE MATERIALIZED VIEW mv_fail AS SELECT boom() AS x WITH NO DATA")
    code, out, _ = cli(capsys, "--dsn", gauss_dsn, "refresh", "mv_fail", "--restrict",
                       "--json")
    assert code == 1
    assert json.loads(out)["steps"][0]["action"] == "failed"


def test_usage_errors(capsys: pytest.CaptureFixture[str], gauss_dsn: str) -> None:
    code, _, err = cli(capsys, "--dsn", gauss_dsn, "refresh", "mv5", "--cascade", "sideways")
    assert code == 2 and "unknown refresh behaviour" in err
    code, _, err = cli(capsys, "--dsn", gauss_dsn, "refresh", "t2")
    assert code == 4 and "not a materialized view" in err
    code, _, err = cli(capsys, "--dsn", gauss_dsn, "refresh", "mv5", "--cascade", "all",
                       "--restrict")
    assert code == 2


def test_track_status_and_skip(capsys: pytest.CaptureFixture[str], gauss_dsn: str) -> None:
    code, out, _ = cli(capsys, "--dsn", gauss_dsn, "track", "--all")
    assert code == 0 and "public.test_table: triggers" in out
    cli(capsys, "--dsn", gauss_dsn, "refresh", "+mv6")
    code, out, _ = cli(capsys, "--dsn", gauss_dsn, "status", "--json")
    data = json.loads(out)
    assert {v["name"]: v["fresh"] for v in data["views"]}["public.mv6"] is True
    with connect(gauss_dsn) as conn:
        conn.execute("INSERT INTO test_table VALUES (77, 1, 1)")
    code, out, _ = cli(capsys, "--dsn", gauss_dsn, "status", "--json")
    assert {v["name"]: v["fresh"] for v in json.loads(out)["views"]}["public.mv1"] is False


@pytest.mark.parametrize("parallel", ["1", "2"])
def test_ctrl_c_cancels_and_exits_130(gauss_dsn: str, parallel: str) -> None:
    with connect(gauss_dsn) as conn:
        conn.execute("CREATE FUNCTION nap(float8) RETURNS int LANGUAGE sql "
                     "AS 'SELECT 1 FROM pg_sleep($1)'")
        conn.execute("CREATE MATERIALIZED VIEW slow AS SELECT nap(30) AS s FROM mv1 "
                     "WITH NO DATA")
    env = {**os.environ, "MVGRAPH_DSN": gauss_dsn, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "mvgraph", "refresh", "+slow", "--json",
                             "--parallel", parallel],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    # The step runs server-side in mvgraph.refresh_batch(...) (or refresh_step(...)), its
    # REFRESH inside: wait until that call is active and sleeping in the slow view's query.
    running = ("SELECT count(*) FROM pg_stat_activity WHERE query ~ "
               "'mvgraph\\.refresh_(step|batch)\\(' AND state = 'active' "
               "AND wait_event = 'PgSleep'")
    deadline = time.monotonic() + 20
    seen = False
    with connect(gauss_dsn) as conn:
        while not seen and time.monotonic() < deadline and proc.poll() is None:
            row = conn.execute(running).fetchone()
            seen = bool(row and row[0])
            time.sleep(0.05)
    assert seen, "the slow step never started running"
    proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - started < 10, "the running refresh was not cancelled at once"
    assert proc.returncode == 130, err
    data = json.loads(out)
    assert data["status"] == "cancelled"
    slow = next(s for s in data["steps"] if s["name"] == "public.slow")
    assert slow["action"] == "cancelled"
    assert slow["reason"] == "cancelled while running"  # the cancel reached the running step
    with connect(gauss_dsn) as conn:
        assert conn.execute("SELECT relispopulated FROM pg_class WHERE relname = 'slow'"
                            ).fetchone() == (False,)
        assert conn.execute(running).fetchone() == (0,)
        assert conn.execute("SELECT status FROM mvgraph.job_step WHERE name = 'public.slow'"
                            ).fetchone() == ("cancelled",)
