"""One exit code per kind of failure, one line per error, the cause kept (README's table)."""

from __future__ import annotations

import pytest

from mvgraph.db.scripts import with_dbname
from tests.conftest import cli


@pytest.mark.parametrize("args", [
    ["refresh", "nope"],                       # unknown view
    ["plan", "nope", "--cascade", "all"],
    ["refresh", "t2"],                         # a table where a materialized view is needed
    ["configure", "t2", "--early-cutoff"],
    ["refresh", "zz*"],                        # a selector matching no materialized view
    ["graph", "-s", "zz*"],                    # a selector matching nothing
    ["graph", "-s", "nope+"],
    ["deps", "nope"],
    ["track", "mv1"],                          # a view where a table is needed
])
def test_no_such_object_is_exit_4(capsys: pytest.CaptureFixture[str], gauss_dsn: str,
                                  args: list[str]) -> None:
    code, _, err = cli(capsys, "--dsn", gauss_dsn, *args)
    assert code == 4, err
    assert err.startswith("error: ") and err.count("\n") == 1


@pytest.mark.parametrize(("args", "message"), [
    (["refresh", "mv5", "--cascade", "sideways"], "unknown refresh behaviour"),
    (["settings", "retention_days", "-5"], "whole number of days"),
    (["settings", "lock_timeout", "soon"], "not a valid lock_timeout"),
    (["settings", "nope"], "unknown setting"),
])
def test_bad_values_are_usage_errors(capsys: pytest.CaptureFixture[str], gauss_dsn: str,
                                     args: list[str], message: str) -> None:
    code, _, err = cli(capsys, "--dsn", gauss_dsn, *args)
    assert code == 2 and message in err and err.count("\n") == 1


def test_settings_key_prints_its_value(capsys: pytest.CaptureFixture[str],
                                       gauss_dsn: str) -> None:
    assert cli(capsys, "--dsn", gauss_dsn, "settings", "retention_days", "7")[0] == 0
    code, out, _ = cli(capsys, "--dsn", gauss_dsn, "settings", "retention_days")
    assert (code, out) == (0, "7\n")


def test_connection_failures_keep_their_cause(capsys: pytest.CaptureFixture[str],
                                              server_dsn: str) -> None:
    code, _, err = cli(capsys, "graph", "--dsn", "postgresql://u:pw@127.0.0.1:1/x")
    assert code == 1 and "Connection refused" in err and "\t" not in err
    assert err.count("\n") == 1 and "pw" not in err
    code, _, err = cli(capsys, "graph", "--dsn", "postgresql://u@no-such-host.invalid/x")
    assert code == 1 and "no-such-host.invalid" in err and err.count("\n") == 1
    nobody = with_dbname(server_dsn, "postgres") + " user=nobody_here"
    code, _, err = cli(capsys, "graph", "--dsn", nobody)
    assert code == 1 and 'role "nobody_here" does not exist' in err and "FATAL" not in err
    assert err.count("\n") == 1


def test_help_names_the_dsn_variables(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["--help"], ["refresh", "--help"]):
        code, out, _ = cli(capsys, *args)
        flat = " ".join(out.split())
        assert code == 0 and "MVGRAPH_DSN" in flat and "DATABASE_URL" in flat
