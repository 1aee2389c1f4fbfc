"""``mvgraph schedule ...`` against a real database: add, list, alter, pause, resume, run-now,
history, remove, sync, and the exit codes of mistakes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mvgraph.db.connect import connect
from tests.conftest import cli


def test_schedule_lifecycle(gauss_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    d = ("--dsn", gauss_dsn)
    code, out, err = cli(capsys, "schedule", "add", "mv5", "--every", "1 hour",
                         "--cascade", "backward", *d)
    assert code == 0, err
    assert "REFRESH MATERIALIZED VIEW public.mv5 CASCADE BACKWARD" in out
    code, out, err = cli(capsys, "schedule", "add", "mv6", "--cron", "*/5 * * * *",
                         "--tz", "Europe/Berlin", "--restrict", *d)
    assert code == 0, err
    code, out, err = cli(capsys, "schedule", "list", "--json", *d)
    assert code == 0, err
    listed = {s["view"]: s for s in json.loads(out)}
    assert set(listed) == {"public.mv5", "public.mv6"}
    now = datetime.now(UTC)
    nxt5 = datetime.fromisoformat(listed["public.mv5"]["next_run"])
    assert now < nxt5 <= now + timedelta(hours=1)
    assert (nxt5.minute, nxt5.second) == (0, 0)  # aligned: every hour on the hour
    nxt6 = datetime.fromisoformat(listed["public.mv6"]["next_run"])
    assert now < nxt6 <= now + timedelta(minutes=5) and nxt6.minute % 5 == 0
    assert listed["public.mv6"]["behavior"] == "RESTRICT"
    code, out, _ = cli(capsys, "schedule", "list", *d)
    assert code == 0 and "2 schedules" in out

    # alter: only what is given changes
    code, _, err = cli(capsys, "schedule", "alter", "mv5", "--overlap", "queue", *d)
    assert code == 0, err
    code, out, _ = cli(capsys, "schedule", "list", "--json", *d)
    mv5 = next(s for s in json.loads(out) if s["view"] == "public.mv5")
    assert (mv5["overlap"], mv5["every"], mv5["behavior"]) == ("queue", "1 hour",
                                                             "CASCADE BACKWARD")

    # pause / resume (resume clears is_broken and the failure count)
    with connect(gauss_dsn) as conn:
        conn.execute("UPDATE mvgraph.schedule SET is_broken = true, failure_count = 16")
    assert cli(capsys, "schedule", "pause", "mv5", *d)[0] == 0
    code, out, _ = cli(capsys, "schedule", "list", "--json", *d)
    mv5 = next(s for s in json.loads(out) if s["view"] == "public.mv5")
    assert mv5["enabled"] is False and mv5["next_run"] is None
    assert cli(capsys, "schedule", "resume", "mv5", *d)[0] == 0
    with connect(gauss_dsn) as conn:
        row = conn.execute("SELECT enabled, is_broken, failure_count FROM mvgraph.schedule "
                           "WHERE view_name = 'public.mv5'").fetchone()
    assert row == (True, False, 0)

    # run-now submits a job linked to the schedule; history shows it
    code, out, err = cli(capsys, "schedule", "run-now", "mv5", *d)
    assert code == 0, err
    job = int(out.split()[1])
    code, out, _ = cli(capsys, "schedule", "history", "mv5", "--json", *d)
    history = json.loads(out)
    assert [(h["job_id"], h["status"], h["manual"]) for h in history] == [(job, "fired", True)]
    assert set(history[0]) >= {"slot", "job_id", "status", "start", "end"}
    code, out, _ = cli(capsys, "jobs", "--json", *d)
    assert any(j["id"] == job and "mv5" in j["statement"] for j in json.loads(out))

    code, out, _ = cli(capsys, "schedule", "remove", "mv6", *d)
    assert code == 0 and "public.mv6 removed" in out


@pytest.mark.parametrize(("args", "code", "message"), [
    (("add", "nope", "--every", "1 hour"), 4, "no materialized view nope"),
    (("add", "test_table", "--every", "1 hour"), 4, "not a materialized view"),
    (("add", "mv5", "--every", "soon"), 2, "not a valid interval"),
    (("add", "mv5", "--every", "1 month"), 2, "months or years"),
    (("add", "mv5", "--cron", "61 * * * *"), 2, "not a valid cron expression"),
    (("add", "mv5", "--cron", "* * * * *", "--tz", "Mars/Base"), 2, "unknown time zone"),
    (("add", "mv5", "--every", "1 hour", "--cron", "* * * * *"), 2, "one of"),
    (("add", "mv5"), 2, "give one of"),
    (("add", "mv5", "--every", "1 hour", "--overlap", "maybe"), 2, "skip or queue"),
    (("remove", "mv1"), 4, "no schedule for mv1"),
    (("history", "mv1"), 4, "no schedule for mv1"),
])
def test_schedule_errors_are_one_line_with_exit_codes(
        gauss_dsn: str, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], code: int,
        message: str) -> None:
    got, _, err = cli(capsys, "schedule", *args, "--dsn", gauss_dsn)
    assert got == code, err
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_second_schedule_for_a_view_is_an_error(
        gauss_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "schedule", "add", "mv5", "--every", "1 hour", "--dsn", gauss_dsn)[0] == 0
    code, _, err = cli(capsys, "schedule", "add", "mv5", "--cron", "0 * * * *",
                       "--dsn", gauss_dsn)
    assert code == 1
    assert "already has a schedule" in err


def test_sync_from_sql_adds_alters_and_removes(
        gauss_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = ("--dsn", gauss_dsn)
    assert cli(capsys, "schedule", "add", "mv6", "--every", "1 day", *d)[0] == 0
    files = tmp_path / "sql"
    files.mkdir()
    (files / "a.sql").write_text(
        "CREATE TABLE test_table (a int, b int);\n"
        "CREATE MATERIALIZED VIEW mv1 REFRESH cascade forward START WITH "
        "('2024-01-01 00:00:00+00'::timestamptz) EVERY (interval '10 minutes') AS "
        "SELECT a FROM test_table;\n"
        "CREATE MATERIALIZED VIEW mv5 AS SELECT a FROM mv1;\n"
        "ALTER MATERIALIZED VIEW mv5 REFRESH EVERY (interval '1 hour');\n")
    code, out, err = cli(capsys, "schedule", "sync", "--from-sql", str(files), *d)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert any(line.startswith("added public.mv1: CASCADE FORWARD every interval '10 minutes'")
               for line in lines), out
    assert any(line.startswith("added public.mv5") for line in lines)
    assert any(line.startswith("removed public.mv6") for line in lines)
    code, out, _ = cli(capsys, "schedule", "sync", "--from-sql", str(files), *d)
    assert code == 0 and "already match" in out  # idempotent
    (files / "a.sql").write_text((files / "a.sql").read_text().replace("'10 minutes'",
                                                                       "'20 minutes'"))
    code, out, _ = cli(capsys, "schedule", "sync", "--from-sql", str(files), "--json", *d)
    assert [(c["action"], c["name"]) for c in json.loads(out)] == [("altered", "public.mv1")]
