"""DSNs and passwords never reach a message, a log line, a ``--json`` output, a traceback, the
``mvgraph.daemon`` table or the metrics endpoint (SPEC section 7): every command is run with a
DSN carrying a distinctive password, failing and succeeding, and its output searched for it.

The test server trusts its local connections, so a password in the DSN is carried along and
ignored: commands succeed with it, and fail for other reasons (no server there, an unparsable
DSN, a role that may not log in).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from urllib.parse import quote

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import mvgraph
from mvgraph.db.connect import connect
from mvgraph.scheduler.health import Health
from mvgraph.scheduler.metrics import Metrics, MetricsServer
from tests.conftest import ROOT, cli
from tests.processes import DrainedProcess

PW = "S3cr3t-canary"
SPELLINGS = (PW, quote(PW), "S3cr3t")  # also no part of it


def clean(*texts: str) -> bool:
    """None of ``texts`` holds the password, in any spelling."""
    return not any(s in t for s in SPELLINGS for t in texts)


def as_uri(dsn: str) -> str:
    """The same target as a URI with the password in its user info."""
    p = conninfo_to_dict(dsn)
    return (f"postgresql://{p.get('user', 'postgres')}:{PW}@/{p['dbname']}"
            f"?host={quote(str(p['host']), safe='')}")


@pytest.fixture(params=["conninfo", "uri"])
def secret_dsn(request: pytest.FixtureRequest, gauss_dsn: str) -> str:
    """The GaussDB example database, through a DSN with a password (both spellings)."""
    return make_conninfo(gauss_dsn, password=PW) if request.param == "conninfo" \
        else as_uri(gauss_dsn)


SUCCEEDING = [
    ["status", "--json"],
    ["status"],
    ["graph", "-f", "json"],
    ["deps", "mv5"],
    ["plan", "mv5", "--json"],
    ["refresh", "mv1", "--json"],
    ["refresh", "mv5", "--cascade", "backward", "-j", "2"],
    ["jobs", "--json"],
    ["settings", "--json"],
    ["schedule", "list", "--json"],
    ["daemon", "status", "--json"],
    ["init"],
    ["sql", "SELECT application_name FROM pg_stat_activity", "--json"],
]


@pytest.mark.parametrize("args", SUCCEEDING, ids=lambda a: " ".join(a))
def test_succeeding_commands_show_no_password(secret_dsn: str, args: list[str],
                                              capsys: pytest.CaptureFixture[str],
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    code, out, err = cli(capsys, "--dsn", secret_dsn, *args)
    assert code == 0, err
    assert clean(out, err, caplog.text), (out, err, caplog.text)


def test_the_environment_dsn_shows_no_password(gauss_dsn: str, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MVGRAPH_DSN", as_uri(gauss_dsn))
    code, out, err = cli(capsys, "status", "--json")
    assert code == 0 and clean(out, err)
    monkeypatch.setenv("MVGRAPH_DSN", f"postgresql://bob:{PW}@[h/db")
    code, out, err = cli(capsys, "--debug", "status", "--json")
    assert code == 1 and "invalid DSN" in err and clean(out, err), err


FAILING = [
    f"postgresql://bob:{PW}@127.0.0.1:1/app",      # nothing listens there
    f"host=127.0.0.1 port=1 user=bob password={PW} sslpassword={PW}",
    f"postgresql://bob:{PW}@[h/db",                # libpq quotes the whole URI back
    f"postgresql://bob:{PW}%zz@h/db",              # ... or the password
    f"postgresql://bob:{PW} x@h/db",
    f"host=h password={PW} bogus=1",
    f"host=h password='{PW}",
    f"password={PW} host",
]


@pytest.mark.parametrize("dsn", FAILING)
@pytest.mark.parametrize("args", [["status"], ["status", "--json"], ["--debug", "status"],
                                  ["sql", "SELECT 1"], ["daemon", "status", "--json"]],
                         ids=lambda a: " ".join(a))
def test_failing_connections_show_no_password(dsn: str, args: list[str],
                                              capsys: pytest.CaptureFixture[str],
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    code, out, err = cli(capsys, "--dsn", dsn, *args)
    assert code == 1, err
    assert "cannot connect" in err or "invalid DSN" in err, err
    assert ("Traceback" in err) == ("--debug" in args)
    assert clean(out, err, caplog.text), err


def test_roles_that_cannot_log_in_show_no_password(server_dsn: str, db_dsn: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    with connect(server_dsn) as admin:
        admin.execute("DROP ROLE IF EXISTS mvgraph_nologin")
        admin.execute(f"CREATE ROLE mvgraph_nologin NOLOGIN PASSWORD '{PW}'")
    try:
        for user in ("mvgraph_nologin", "mvgraph_nobody_here"):
            dsn = make_conninfo(db_dsn, user=user, password=PW)
            for args in (["status"], ["--debug", "refresh", "mv1"]):
                code, out, err = cli(capsys, "--dsn", dsn, *args)
                assert code == 1 and user in err and clean(out, err), err
    finally:
        with connect(server_dsn) as admin:
            admin.execute("DROP ROLE mvgraph_nologin")


def test_usage_errors_quoting_a_dsn_show_no_password(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["status", f"postgresql://u:{PW}@h/db"], ["cancel", f"host=h password={PW}"]):
        code, out, err = cli(capsys, *args)
        assert code == 2 and "Error:" in err and clean(out, err), err


def test_internal_errors_and_their_tracebacks_show_no_password(
        secret_dsn: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    def broken(dsn: str, *args: object, **kwargs: object) -> None:
        raise RuntimeError(f"bug while using {dsn}")

    monkeypatch.setattr(mvgraph, "status", broken)
    for args in (["status"], ["--debug", "status"]):
        code, out, err = cli(capsys, "--dsn", secret_dsn, *args)
        assert code == 3 and "internal error" in err and clean(out, err), err
        assert ("Traceback" in err) == ("--debug" in args)


def test_a_subprocess_debug_error_shows_no_password() -> None:
    env = {**os.environ, "MVGRAPH_DSN": f"postgresql://bob:{PW}@[h/db"}
    proc = subprocess.run([sys.executable, "-m", "mvgraph", "--debug", "graph"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "Traceback" in proc.stderr
    assert clean(proc.stdout, proc.stderr), proc.stderr


@pytest.fixture
def daemon_proc(gauss_dsn: str) -> Iterator[subprocess.Popen[str]]:
    env = {**os.environ, "MVGRAPH_DSN": as_uri(gauss_dsn)}
    proc = DrainedProcess([sys.executable, "-m", "mvgraph", "daemon", "--workers", "1",
                           "--log-json"], env, cwd=ROOT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)


def test_the_daemon_its_table_row_and_logs_show_no_password(
        gauss_dsn: str, daemon_proc: subprocess.Popen[str],
        capsys: pytest.CaptureFixture[str]) -> None:
    deadline = time.monotonic() + 30
    found: list[object] = []
    while not found and time.monotonic() < deadline:
        time.sleep(0.3)
        code, out, err = cli(capsys, "--dsn", as_uri(gauss_dsn), "daemon", "status", "--json")
        assert code == 0 and clean(out, err)
        found = json.loads(out)
    assert found, "the daemon never registered"
    with connect(gauss_dsn) as conn:
        rows = conn.execute("SELECT d::text FROM mvgraph.daemon d UNION ALL "
                            "SELECT application_name FROM pg_stat_activity").fetchall()
    assert clean(*(str(r[0]) for r in rows))
    daemon_proc.send_signal(signal.SIGTERM)
    out, err = daemon_proc.communicate(timeout=40)
    assert "started" in err and clean(out, err), err


def test_the_daemon_logs_a_bad_dsn_without_its_password() -> None:
    env = {**os.environ, "MVGRAPH_DSN": f"postgresql://bob:{PW}@127.0.0.1:1/app"}
    for log_json in ([], ["--log-json"]):
        proc = subprocess.Popen([sys.executable, "-m", "mvgraph", "daemon", "--workers", "0",
                                 *log_json], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        time.sleep(2.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=40)
        assert "database unavailable" in err and clean(out, err), err


def test_the_metrics_endpoint_shows_no_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    health = Health()  # a daemon whose DSN never connected (it logs the scrubbed error)
    health.lost()
    server = MetricsServer(Metrics(), health, 0, "127.0.0.1").start()
    try:
        bodies = []
        for path in ("/healthz", "/metrics", "/nope"):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}",
                                            timeout=10) as r:
                    bodies.append(r.read().decode())
            except urllib.error.HTTPError as exc:
                bodies.append(exc.read().decode())
    finally:
        server.stop()
    assert bodies[0] == "database unreachable: no contact yet\n"
    assert clean(*bodies, caplog.text), caplog.text


def test_the_metrics_server_listens_on_localhost_by_default() -> None:
    server = MetricsServer(Metrics(), lambda: True, 0).start()
    try:
        assert server._server.server_address[0] == "127.0.0.1"
    finally:
        server.stop()


def test_psycopg_texts_that_quote_the_dsn_are_scrubbed_by_translate() -> None:
    from mvgraph.errors import translate

    try:
        psycopg.connect(f"postgresql://bob:{PW}@[h/db")
    except psycopg.Error as exc:
        assert clean(str(translate(exc)))
    else:  # pragma: no cover
        raise AssertionError("the DSN parsed")
