"""``mvgraph sql``: GaussDB REFRESH forms through the engine, other SQL passed through."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mvgraph.cli import run
from mvgraph.db.connect import connect
from mvgraph.db.scripts import run_files
from mvgraph.errors import SqlParseError
from mvgraph.frontend import parse_refresh
from mvgraph.refresh.behavior import RefreshBehavior
from tests.conftest import FIXTURES


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(("text", "name", "behavior", "concurrently"), [
    ("REFRESH MATERIALIZED VIEW mv5", "mv5", RefreshBehavior.DEFAULT, False),
    ("refresh materialized view mv5 cascade all;", "mv5", RefreshBehavior.CASCADE_ALL, False),
    ("REFRESH MATERIALIZED VIEW CONCURRENTLY s.mv5 RESTRICT", "s.mv5",
     RefreshBehavior.RESTRICT, True),
    ('REFRESH MATERIALIZED VIEW "Rep"."Big One" CASCADE BACKWARD', '"Rep"."Big One"',
     RefreshBehavior.CASCADE_BACKWARD, False),
    ("/* c */ REFRESH MATERIALIZED VIEW mv5 -- x\n CASCADE FORWARD", "mv5",
     RefreshBehavior.CASCADE_FORWARD, False),
])
def test_parse_refresh_forms(text: str, name: str, behavior: RefreshBehavior,
                             concurrently: bool) -> None:
    stmt = parse_refresh(text)
    assert stmt is not None
    assert (stmt.name, stmt.behavior, stmt.concurrently) == (name, behavior, concurrently)


@pytest.mark.parametrize("text", ["REFRESH MATERIALIZED VIEW mv5 WITH NO DATA", "SELECT 1",
                                  "REFRESH MATERIALIZED VIEW CONCURRENTLY mv5 WITH DATA"])
def test_other_statements_are_not_engine_refreshes(text: str) -> None:
    assert parse_refresh(text) is None


@pytest.mark.parametrize(("text", "message"), [
    ("REFRESH MATERIALIZED VIEW 'mv5'", "string literal"),
    ("REFRESH MATERIALIZED VIEW CONCURRENTLY public.'mv5' CASCADE ALL", "string literal"),
    ("REFRESH MATERIALIZED VIEW mv5 CASCADE", "use CASCADE FORWARD, CASCADE BACKWARD or "
                                              "CASCADE ALL"),
    ("REFRESH MATERIALIZED VIEW mv5 CASCADE SIDEWAYS", "use CASCADE FORWARD"),
    ("REFRESH MATERIALIZED VIEW mv5 FORWARD", "use CASCADE FORWARD"),
    ("REFRESH MATERIALIZED VIEW mv5 RESTRICT CASCADE ALL", "use CASCADE FORWARD"),
])
def test_malformed_gaussdb_refresh_is_a_syntax_error(text: str, message: str) -> None:
    with pytest.raises(SqlParseError, match=message):
        parse_refresh(text)


def test_bad_refresh_names_its_line_and_runs_nothing(capsys: pytest.CaptureFixture[str],
                                                     db_dsn: str, tmp_path: Path) -> None:
    with connect(db_dsn) as conn:
        run_files(conn, [FIXTURES / "gaussdb_nested" / "schema.sql"])
    script = tmp_path / "s.sql"
    script.write_text("INSERT INTO test_table VALUES (300, 1, 1);\n"
                      "REFRESH MATERIALIZED VIEW 'mv5';\n")
    code, _, err = cli(capsys, "--dsn", db_dsn, "sql", "-f", str(script))
    assert code == 1 and "s.sql:2: syntax error" in err and "Traceback" not in err
    code, _, err = cli(capsys, "--dsn", db_dsn, "sql", "REFRESH MATERIALIZED VIEW mv5 CASCADE")
    assert code == 1 and "use CASCADE FORWARD, CASCADE BACKWARD or CASCADE ALL" in err
    with connect(db_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM test_table WHERE id = 300").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM mvgraph.job").fetchone() == (0,)


def test_cli_cascade_needs_a_direction(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("refresh", "plan"):
        code, _, err = cli(capsys, command, "mv5", "--cascade", "cascade")
        assert code == 2 and "use CASCADE FORWARD, CASCADE BACKWARD or CASCADE ALL" in err


def test_script_runs_statement_by_statement(capsys: pytest.CaptureFixture[str], db_dsn: str,
                                            tmp_path: Path) -> None:
    with connect(db_dsn) as conn:
        run_files(conn, [FIXTURES / "gaussdb_nested" / "schema.sql"])
    script = tmp_path / "s.sql"
    script.write_text("""
        INSERT INTO test_table VALUES (200, 1, 1);
        REFRESH MATERIALIZED VIEW mv5 CASCADE ALL;
        SELECT grp, total_val FROM mv5 ORDER BY grp;
        DO $$ BEGIN PERFORM 1; END $$;
    """)
    code, out, _ = cli(capsys, "--dsn", db_dsn, "sql", "-f", str(script), "--json")
    assert code == 0
    results = json.loads(out)
    assert [r["status"] for r in results] == ["INSERT 0 1", "REFRESH MATERIALIZED VIEW",
                                              "SELECT 3", "DO"]
    refresh = results[1]["refresh"]
    assert [s["name"] for s in refresh["steps"]] == ["public.mv1", "public.mv5", "public.mv6"]
    assert results[2]["columns"] == ["grp", "total_val"]
    code, out, _ = cli(capsys, "--dsn", db_dsn, "sql", "SELECT 1 AS one")
    assert code == 0 and "(1 row)" in out and "one" in out


def test_failing_statement_names_its_line(capsys: pytest.CaptureFixture[str],
                                          db_dsn: str) -> None:
    code, _, err = cli(capsys, "--dsn", db_dsn, "sql", "SELECT 1;\nSELECT * FROM nowhere;")
    assert code == 1
    assert "<command line>:2" in err and "nowhere" in err and "Traceback" not in err


def test_script_in_another_encoding_is_a_clear_error(capsys: pytest.CaptureFixture[str],
                                                     tmp_path: Path) -> None:
    script = tmp_path / "l.sql"
    script.write_bytes(b"SELECT 'caf\xe9';\n")
    code, _, err = cli(capsys, "sql", "-f", str(script))
    assert code == 1 and "internal error" not in err
    assert f"{script}:1: byte 0xe9 at offset 11 is not utf-8; pass --encoding latin-1" in err
