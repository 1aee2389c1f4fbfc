"""Issue 18, the command line: values as PostgreSQL prints them, output that fits 80 columns,
settings with their defaults, usage messages, signals and the library's argument order."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, cli

VALUES = ("SELECT true AS yes, false AS no, NULL::int AS nothing, ARRAY[1,2] AS ints, "
          "'{\"a\":null}'::jsonb AS doc, ARRAY['a b', NULL] AS texts, 1.50::numeric AS n")


# ---- item 9: mvgraph sql prints values as PostgreSQL does; --json gives JSON values ----------

def test_sql_prints_values_as_postgresql(capsys: pytest.CaptureFixture[str], db_dsn: str
                                         ) -> None:
    code, out, err = cli(capsys, "sql", "--dsn", db_dsn, VALUES)
    assert code == 0, err
    row = out.splitlines()[2]
    assert [c.strip() for c in row.split("|")] == [
        "t", "f", "", "{1,2}", '{"a": null}', '{"a b",NULL}', "1.50"]
    assert "True" not in out and "None" not in out


def test_sql_json_gives_json_values(capsys: pytest.CaptureFixture[str], db_dsn: str) -> None:
    code, out, err = cli(capsys, "sql", "--json", "--dsn", db_dsn, VALUES)
    assert code == 0, err
    assert json.loads(out)[0]["rows"] == [[True, False, None, [1, 2], {"a": None},
                                           ["a b", None], 1.5]]


def test_sql_json_of_a_job_result_is_an_object(capsys: pytest.CaptureFixture[str],
                                               db_dsn: str) -> None:
    code, out, err = cli(capsys, "sql", "--background", "--dsn", db_dsn, "SELECT 1")
    assert code == 0, err
    job = int(out.strip())
    code, out, err = cli(capsys, "sql", "--json", "--dsn", db_dsn,
                         f"SELECT mvgraph.job_result({job}) AS r")
    assert code == 0, err
    assert isinstance(json.loads(out)[0]["rows"][0][0], dict)


def test_sql_ctrl_c_says_what_was_cancelled(db_dsn: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mvgraph", "sql", "--dsn", db_dsn,
         "SELECT 1;\nSELECT pg_sleep(30);\nSELECT 2"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # wait for the sleep to be running
            time.sleep(0.3)
            from mvgraph.db.connect import connect

            with connect(db_dsn) as c:
                if c.execute("SELECT 1 FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'"
                             " AND state = 'active'").fetchone():
                    break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "cancelled <command line>:2 (SELECT pg_sleep(30))" in err
    assert "1 statement before it completed" in err and "1 later statement not run" in err


def test_job_result_keeps_json_values(capsys: pytest.CaptureFixture[str], db_dsn: str) -> None:
    import mvgraph
    from mvgraph.jobs.worker import Worker, WorkerConfig

    job = mvgraph.submit(db_dsn, "SELECT '{\"a\":null}'::jsonb AS doc, true AS ok")
    worker = Worker(WorkerConfig(db_dsn, poll_s=0.2))
    import threading

    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        job.wait(timeout=30)
    finally:
        worker.stop()
        thread.join(10)
    assert mvgraph.job_result(db_dsn, job)["result"]["rows"] == [[{"a": None}, True]]
    code, out, err = cli(capsys, "job", "result", str(job), "--dsn", db_dsn)
    assert code == 0, err
    assert [c.strip() for c in out.splitlines()[2].split("|")] == ['{"a": null}', "t"]


# ---- item 14: settings shows every key with its default ------------------------------------

def test_settings_lists_every_key_with_its_default(capsys: pytest.CaptureFixture[str],
                                                   db_dsn: str) -> None:
    from mvgraph.settingkeys import SETTINGS

    code, out, err = cli(capsys, "settings", "--dsn", db_dsn)
    assert code == 0, err
    shown = {line.split(" = ")[0] for line in out.splitlines()}
    assert set(SETTINGS) <= shown
    assert "wal_slot_max_lag = 1GB (default)" in out
    assert "schedule_max_failures = 16 (default)" in out
    assert "global_lock_timeout = 10s (default)" in out
    code, out, _ = cli(capsys, "settings", "wal_slot_max_lag", "--dsn", db_dsn)
    assert (code, out) == (0, "1GB\n")
    code, out, _ = cli(capsys, "settings", "--json", "--dsn", db_dsn)
    assert list(json.loads(out))[:len(SETTINGS)] == list(SETTINGS)


def test_settings_keys_in_help_and_errors(capsys: pytest.CaptureFixture[str], db_dsn: str
                                          ) -> None:
    from mvgraph.settingkeys import help_list

    code, out, _ = cli(capsys, "settings", "--help")
    assert code == 0 and "schedule_max_failures" in " ".join(out.split())
    code, _, err = cli(capsys, "settings", "nosuch", "--dsn", db_dsn)
    assert code == 2 and help_list() in err


# ---- item 15: the command line's usage ------------------------------------------------------

def test_embedded_flag_after_the_command() -> None:
    from mvgraph.cli import _global_flags_first

    assert _global_flags_first(["status", "--json", "--embedded"]) == [
        "--embedded", "status", "--json"]


def test_embedded_after_the_command_is_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "plan", "--help", "--embedded")
    assert code == 0 and "No such option" not in err


def test_job_usage(capsys: pytest.CaptureFixture[str], db_dsn: str) -> None:
    code, out, _ = cli(capsys, "job", "--help")
    assert code == 0 and "mvgraph job result ID" in " ".join(out.split())
    code, out, _ = cli(capsys, "--help")
    assert "job result ID" in out
    code, _, err = cli(capsys, "job", "5", "6", "--dsn", db_dsn)
    assert code == 2 and "takes one job id" in err and "mvgraph job result ID" in err


def test_configure_without_an_option_is_a_usage_error(capsys: pytest.CaptureFixture[str],
                                                       gauss_dsn: str) -> None:
    code, _, err = cli(capsys, "configure", "mv5", "--dsn", gauss_dsn)
    assert code == 2 and "--early-cutoff" in err


def test_schedule_add_target_lag_shows_what_runs(capsys: pytest.CaptureFixture[str],
                                                 gauss_dsn: str) -> None:
    code, out, err = cli(capsys, "schedule", "add", "mv5", "--target-lag", "10 minutes",
                         "--dsn", gauss_dsn)
    assert code == 0, err
    assert "CASCADE BACKWARD" in out and "freshness target 10 minutes" in out
    code, _, err = cli(capsys, "schedule", "add", "mv6", "--target-lag", "10 minutes",
                       "--cascade", "forward", "--dsn", gauss_dsn)
    assert code == 2 and "CASCADE BACKWARD" in err


def test_idle_worker_stops_within_a_second_of_sigterm(db_dsn: str) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "mvgraph", "worker", "--dsn", db_dsn],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        assert proc.stderr is not None
        while time.monotonic() < deadline:  # "worker ... started" is logged at start
            if "started" in proc.stderr.readline():
                break
        time.sleep(1.0)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and took < 1.5, took


def test_a_reconnect_warning_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from mvgraph.retrylog import Outage

    outage = Outage(logging.getLogger("mvgraph.test"))
    with caplog.at_level(logging.DEBUG, "mvgraph.test"):
        for _ in range(5):
            outage.failed("database unavailable (%s)", "x")
        outage.ok()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "available again" in caplog.records[-1].getMessage()


# ---- item 17: the DSN comes first in the library ---------------------------------------------

def test_submit_takes_the_dsn_first(db_dsn: str) -> None:
    import mvgraph

    first = mvgraph.submit(db_dsn, "SELECT 1")
    keyword = mvgraph.submit("SELECT 2", dsn=db_dsn)
    assert int(keyword) > int(first)
    assert mvgraph.job_result(db_dsn, first)["status"] == mvgraph.job_result(
        first, dsn=db_dsn)["status"]
    assert mvgraph.cancel_job(db_dsn, keyword) in ("cancelled", "cancelling")


def test_grant_takes_the_dsn_first(db_dsn: str, conn: object) -> None:
    import uuid

    import mvgraph
    from mvgraph.db.connect import connect

    role = f"r_{uuid.uuid4().hex[:8]}"
    with connect(db_dsn) as c:
        c.execute(f"CREATE ROLE {role}")
    try:
        assert mvgraph.grant(db_dsn, role, "viewer")
        assert mvgraph.grant(role=role, level="operator", dsn=db_dsn)
        with pytest.warns(DeprecationWarning):
            assert mvgraph.grant(role, "viewer", db_dsn)
        assert mvgraph.revoke(db_dsn, role)
        with pytest.warns(DeprecationWarning):
            mvgraph.revoke(role, db_dsn)
    finally:
        with connect(db_dsn) as c:
            c.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")


# ---- item 13: output fits 80 columns and never cuts a name ----------------------------------

@pytest.fixture
def analytics_dsn(db_dsn: str) -> str:
    """The demo's analytics example: long, schema-qualified and quoted names."""
    from mvgraph.db.connect import connect
    from mvgraph.db.scripts import run_files
    from tests.conftest import FIXTURES

    with connect(db_dsn) as c:
        run_files(c, sorted((FIXTURES / "analytics").glob("*.sql")))
    return db_dsn


def _names(dsn: str, *kinds: str) -> list[str]:
    import mvgraph

    g = mvgraph.load_graph(dsn=dsn)
    return sorted(str(n) for n in g.nodes() if not kinds or g.kind(n).value in kinds)


def _at_80(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from mvgraph.commands import common

    monkeypatch.setattr(common, "out", Console(width=80, highlight=False, soft_wrap=True))


def test_tables_fit_80_columns_and_keep_every_name(capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   analytics_dsn: str) -> None:
    import mvgraph

    names = _names(analytics_dsn)
    status_names = _names(analytics_dsn, "matview", "table")
    mvgraph.add_schedule("staging.known_customers", every="1 hour", dsn=analytics_dsn)
    code, _, err = cli(capsys, "refresh", "+marts.fct_orders", "--dsn", analytics_dsn)
    assert code == 0, err
    _at_80(monkeypatch)
    for args, expected in (
            (["status"], status_names),
            (["schedule", "list"], ["staging.known_customers"]),
            (["jobs", "--all"], ["marts.fct_orders"]),
            (["graph"], names),
            (["plan", "+marts.fct_orders"], ["marts.fct_orders", "staging.stg_customers"])):
        code, out, err = cli(capsys, *args, "--dsn", analytics_dsn)
        assert code == 0, (args, err)
        too_wide = [line for line in out.splitlines() if len(line) > 80]
        assert not too_wide, (args, too_wide)
        missing = [n for n in expected if n not in out]
        assert not missing, (args, missing, out)
        assert "…" not in out, (args, out)
