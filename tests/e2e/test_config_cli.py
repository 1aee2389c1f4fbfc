"""The configuration reaching the processes: ``mvgraph worker`` and ``mvgraph daemon`` run with
values from ``mvgraph.toml``, environment variables overriding the file, options overriding
both; a real daemon started from a directory holding only its configuration file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, cli
from tests.integration.test_jobs import wait_for
from tests.unit.test_config import setting_variables


@pytest.fixture(autouse=True)
def private(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in setting_variables() | {"DATABASE_URL"}:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What ``mvgraph worker`` / ``mvgraph daemon`` would run with, caught instead of run (no
    database: the schema check is skipped)."""
    from mvgraph.db import connect
    from mvgraph.jobs import worker
    from mvgraph.scheduler import run

    seen: dict[str, Any] = {}

    class Worker:
        def __init__(self, config: Any) -> None:
            seen["worker"] = config

        def run(self) -> None:
            pass

    def daemon(config: Any, metrics_port: int | None, metrics_host: str,
               http: Any = None) -> None:
        seen["daemon"] = (config, metrics_port, metrics_host)

    monkeypatch.setattr(connect, "check_before_start", lambda dsn: None)
    monkeypatch.setattr(worker, "Worker", Worker)
    monkeypatch.setattr(run, "run", daemon)
    monkeypatch.setattr("logging.basicConfig", lambda **kw: None)  # the test's logging stays
    return seen


FILE = """
dsn = "postgresql://app@db.example/app"

[worker]
concurrency = 4
poll = 2.5
owner_dsn = "postgresql://{role}@db.example/app"

[daemon]
workers = 3
misfire_grace = 90
metrics_port = 9187
metrics_host = "0.0.0.0"
"""


def test_the_files_values_reach_the_worker_and_the_daemon(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, started: dict[str, Any]) -> None:
    (tmp_path / "mvgraph.toml").write_text(FILE)
    code, _, err = cli(capsys, "worker")
    assert code == 0, err
    config = started["worker"]
    assert (config.dsn, config.concurrency, config.poll_s, config.lease_s, config.owner_dsn) == (
        "postgresql://app@db.example/app", 4, 2.5, 30.0, "postgresql://{role}@db.example/app")
    code, _, err = cli(capsys, "daemon")
    assert code == 0, err
    config, port, host = started["daemon"]
    assert (config.dsn, config.workers, config.misfire_grace_s, port, host) == (
        "postgresql://app@db.example/app", 3, 90.0, 9187, "0.0.0.0")
    code, out, _ = cli(capsys, "config", "show")
    assert code == 0
    lines = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert lines["worker.concurrency"] == ["worker.concurrency", "=", "4", "#",
                                           str(tmp_path / "mvgraph.toml")]
    assert lines["daemon.metrics_host"][2] == '"0.0.0.0"'


def test_environment_overrides_the_file_and_options_override_both(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        started: dict[str, Any]) -> None:
    (tmp_path / "mvgraph.toml").write_text(FILE)
    monkeypatch.setenv("MVGRAPH_WORKER_CONCURRENCY", "6")
    monkeypatch.setenv("MVGRAPH_DAEMON_WORKERS", "5")
    monkeypatch.setenv("MVGRAPH_DAEMON_LOG_JSON", "yes")
    monkeypatch.setenv("MVGRAPH_DSN", "postgresql://env@db.example/app")
    assert cli(capsys, "worker")[0] == 0
    assert (started["worker"].concurrency, started["worker"].poll_s) == (6, 2.5)
    assert started["worker"].dsn == "postgresql://env@db.example/app"
    assert cli(capsys, "daemon")[0] == 0
    assert started["daemon"][0].workers == 5

    code, _, err = cli(capsys, "--dsn", "postgresql://cli@db.example/app", "worker",
                       "--concurrency", "8", "--poll", "1")
    assert code == 0, err
    config = started["worker"]
    assert (config.concurrency, config.poll_s, config.dsn) == (
        8, 1.0, "postgresql://cli@db.example/app")
    assert cli(capsys, "daemon", "-w", "0", "--dsn", "postgresql://own@db.example/app")[0] == 0
    config, port, _ = started["daemon"]
    assert (config.workers, config.dsn, port) == (0, "postgresql://own@db.example/app", 9187)


def test_config_after_the_command_and_a_section_dsn(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, started: dict[str, Any]) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "mvgraph.toml").write_text(
        'dsn = "dbname=app"\n[worker]\ndsn = "dbname=app user=worker"\n')
    (tmp_path / "mvgraph.toml").write_text("[worker]\nconcurrency = 0\n")  # not read
    code, _, err = cli(capsys, "worker", "--config", str(etc / "mvgraph.toml"))
    assert code == 0, err
    assert started["worker"].dsn == "dbname=app user=worker"
    assert cli(capsys, f"--config={etc / 'mvgraph.toml'}", "daemon")[0] == 0
    assert started["daemon"][0].dsn == "dbname=app"


def test_embedded_in_the_file_gives_way_to_a_dsn_on_the_command_line(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        started: dict[str, Any]) -> None:
    from mvgraph.db import embedded

    def no_server() -> str:
        raise AssertionError("the embedded server was started")

    monkeypatch.setattr(embedded, "start", no_server)
    (tmp_path / "mvgraph.toml").write_text("embedded = true\n")
    assert cli(capsys, "--dsn", "dbname=given", "worker")[0] == 0
    assert started["worker"].dsn == "dbname=given"


def test_a_bad_setting_stops_the_worker_in_one_line(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, started: dict[str, Any]) -> None:
    (tmp_path / "mvgraph.toml").write_text("[worker]\nconcurency = 4\n")
    code, out, err = cli(capsys, "worker")
    assert code == 2 and out == "" and "worker" not in started
    assert err.strip() == (
        f"error: {tmp_path / 'mvgraph.toml'}: unknown key concurency in [worker] (did you mean "
        "concurrency?); its keys: concurrency, lease, heartbeat, poll, shutdown_timeout, "
        "owner_dsn, name, dsn")


def test_a_daemon_runs_from_its_configuration_file(db_dsn: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A real daemon: the DSN, its worker count and JSON logs come from the file alone."""
    (tmp_path / "mvgraph.toml").write_text(
        f"dsn = {json.dumps(db_dsn)}\n[daemon]\nworkers = 3\nlog_json = true\nresync = 5\n")
    env = {k: v for k, v in os.environ.items()
           if k not in setting_variables() | {"DATABASE_URL"} and not k.startswith("PG")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.Popen([sys.executable, "-m", "mvgraph", "daemon"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def live() -> list[dict[str, Any]]:
            """the daemon in `mvgraph daemon status`"""
            code, out, err = cli(capsys, "daemon", "status", "--json")
            assert code == 0, err
            return [d for d in json.loads(out) if d["pid"] == proc.pid]

        found = wait_for(live, timeout=60)
        assert isinstance(found, list) and found[0]["workers"] == 3
        proc.send_signal(signal.SIGTERM)
        _, log = proc.communicate(timeout=60)
        assert proc.returncode == 0, log[-3000:]
        assert log.strip() and all(json.loads(line)["level"] for line in log.splitlines())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
