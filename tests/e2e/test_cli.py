"""The command line as a user runs it: output, --json shapes, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mvgraph.db.connect import connect
from mvgraph.db.scripts import run_files
from tests.conftest import FIXTURES, cli

GAUSS = str(FIXTURES / "gaussdb_nested")



def load(dsn: str, fixture: str) -> None:
    with connect(dsn) as conn:
        run_files(conn, sorted((FIXTURES / fixture).glob("*.sql")))


def test_graph_json_from_files(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "graph", "--from-sql", GAUSS, "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert {"from": "public.mv5", "to": "public.mv6"} in data["edges"]
    assert {n["name"]: n["kind"] for n in data["nodes"]}["public.mv1"] == "matview"


def test_graph_select_and_formats(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "graph", "--from-sql", GAUSS, "--select", "+mv5", "-f", "json")
    assert code == 0
    assert "public.mv6" not in {n["name"] for n in json.loads(out)["nodes"]}
    code, out, _ = cli(capsys, "graph", "--from-sql", GAUSS, "-f", "dot")
    assert code == 0 and out.startswith("digraph")
    code, out, _ = cli(capsys, "graph", "--from-sql", GAUSS, "-f", "mermaid")
    assert code == 0 and out.startswith("flowchart LR")
    code, out, _ = cli(capsys, "graph", "--from-sql", GAUSS)
    assert code == 0 and "public.mv6" in out


def test_dsn_before_and_after_the_command(capsys: pytest.CaptureFixture[str], db_dsn: str) -> None:
    load(db_dsn, "gaussdb_nested")
    code1, out1, _ = cli(capsys, "--dsn", db_dsn, "graph", "-f", "json")
    code2, out2, _ = cli(capsys, "graph", "--dsn", db_dsn, "-f", "json")
    assert code1 == code2 == 0
    assert out1 == out2
    assert "public.mv6" in out1


def test_dsn_from_environment(capsys: pytest.CaptureFixture[str], db_dsn: str,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    load(db_dsn, "gaussdb_nested")
    monkeypatch.setenv("MVGRAPH_DSN", db_dsn)
    code, out, _ = cli(capsys, "deps", "mv5", "--up", "-f", "json")
    assert code == 0
    assert sorted(n["name"] for n in json.loads(out)["nodes"]) == [
        "public.mv1", "public.mv5", "public.test_table"]


def test_deps_tree(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "deps", "mv5", "--from-sql", GAUSS)
    assert code == 0
    assert "reads (upstream)" in out and "read by (downstream)" in out and "public.mv6" in out


def test_check_in_sync_and_differing(capsys: pytest.CaptureFixture[str], db_dsn: str,
                                     tmp_path: Path) -> None:
    load(db_dsn, "gaussdb_nested")
    code, out, _ = cli(capsys, "check", "--from-sql", GAUSS, "--dsn", db_dsn)
    assert code == 0, out
    assert "in sync" in out
    changed = tmp_path / "changed.sql"
    text = (FIXTURES / "gaussdb_nested" / "schema.sql").read_text()
    changed.write_text(text + "\nCREATE MATERIALIZED VIEW mv_new AS SELECT 1 AS x FROM mv6;\n")
    code, out, _ = cli(capsys, "check", "--from-sql", str(changed), "--dsn", db_dsn, "--json")
    assert code == 1
    report = json.loads(out)
    assert report["equal"] is False
    assert report["missing"] == ["public.mv_new"]


def test_bad_dsn_is_one_line_without_password(capsys: pytest.CaptureFixture[str]) -> None:
    dsn = "postgresql://bob:s3cret@/nodb?host=/nonexistent-socket-dir&connect_timeout=2"
    code, out, err = cli(capsys, "graph", "--dsn", dsn)
    assert code == 1
    assert "s3cret" not in out + err
    assert "Traceback" not in err
    assert err.count("\n") == 1 and "cannot connect" in err


def test_unknown_name_and_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "deps", "nope", "--from-sql", GAUSS)
    assert code == 4 and "public.nope" not in err and "nope" in err and "Traceback" not in err
    code, _, err = cli(capsys, "graph", "--format", "png", "--from-sql", GAUSS)
    assert code == 2
    code, _, err = cli(capsys, "graph", "--from-sql", "/no/such/file.sql")
    assert code == 2 and "no such file" in err


def test_cycle_and_parse_errors_name_the_problem(capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path) -> None:
    cyc = tmp_path / "cycle.sql"
    cyc.write_text("CREATE VIEW a AS SELECT * FROM b;\nCREATE VIEW b AS SELECT * FROM a;\n")
    code, _, err = cli(capsys, "graph", "--from-sql", str(cyc))
    assert code == 1 and "cycle" in err and "public.a" in err and "public.b" in err
    bad = tmp_path / "bad.sql"
    bad.write_text("CREATE TABLE t (id int);\n\n"
                   "CREATE MATERIALIZED VIEW m AS SELECT FROM WHERE (;\n")
    code, _, err = cli(capsys, "graph", "--from-sql", str(bad))
    assert code == 1 and "bad.sql:3" in err and "Traceback" not in err


def test_debug_shows_traceback(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = cli(capsys, "--debug", "graph", "--from-sql", str(tmp_path / "none.sql"))
    assert code == 2 and "Traceback" in err


def test_strict_turns_undefined_reference_into_error(capsys: pytest.CaptureFixture[str],
                                                     tmp_path: Path) -> None:
    f = tmp_path / "ext.sql"
    f.write_text("CREATE MATERIALIZED VIEW m AS SELECT * FROM elsewhere.t;\n")
    code, out, err = cli(capsys, "graph", "--from-sql", str(f), "-f", "json")
    assert code == 0 and "warning" in err and "elsewhere.t" in err
    first = json.loads(out)["nodes"][0]
    assert {"name": "elsewhere.t", "kind": "external"}.items() <= first.items()
    code, _, err = cli(capsys, "graph", "--from-sql", str(f), "--strict")
    assert code == 1 and "elsewhere.t" in err


def test_stdin_source(db_dsn: str) -> None:
    text = (FIXTURES / "gaussdb_nested" / "schema.sql").read_text()
    proc = subprocess.run([sys.executable, "-m", "mvgraph", "graph", "--from-sql", "-", "-f",
                           "json"], input=text, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "public.mv6" in proc.stdout


def test_init_installs_schema(capsys: pytest.CaptureFixture[str], empty_db_dsn: str) -> None:
    code, out, _ = cli(capsys, "init", "--dsn", empty_db_dsn)
    assert code == 0 and "applied migration 0001" in out
    code, out, _ = cli(capsys, "init", "--dsn", empty_db_dsn)
    assert code == 0 and "up to date" in out


def test_graph_selects_every_quoted_name_refresh_accepts(capsys: pytest.CaptureFixture[str],
                                                         db_dsn: str) -> None:
    with connect(db_dsn) as conn:
        conn.execute('CREATE TABLE t (id int); '
                     'CREATE MATERIALIZED VIEW "x; DROP TABLE t; --" AS SELECT id FROM t; '
                     'CREATE MATERIALIZED VIEW "Sales Q1+" AS SELECT id FROM "x; DROP TABLE t; --"')
    name = '"x; DROP TABLE t; --"'
    code, _, err = cli(capsys, "--dsn", db_dsn, "refresh", name, "--json")
    assert code == 0, err
    code, out, err = cli(capsys, "--dsn", db_dsn, "graph", "-s", name, "-f", "json")
    assert code == 0, err
    assert [n["name"] for n in json.loads(out)["nodes"]] == ['public."x; DROP TABLE t; --"']
    code, out, err = cli(capsys, "--dsn", db_dsn, "graph", "-s", f'+{name}+', "-f", "json")
    assert code == 0, err
    assert {n["name"] for n in json.loads(out)["nodes"]} == {
        "public.t", 'public."x; DROP TABLE t; --"', 'public."Sales Q1+"'}


def broken_folder(tmp_path: Path) -> Path:
    """Good views next to two bad statements, a cycle, a Latin-1 file and a binary file."""
    folder = tmp_path / "schema"
    folder.mkdir()
    (folder / "1.sql").write_text("CREATE TABLE test_table (id int);\n"
                                  "CREATE VIEW good AS SELECT id FROM test_table;\n")
    (folder / "2.sql").write_text("\nCREATE VIEW bad AS SELECT FROM WHERE (;\n")
    (folder / "3.sql").write_text("CREATE VIEW v1 AS SELECT * FROM v2;\n"
                                  "CREATE VIEW v2 AS SELECT * FROM v1;\n")
    (folder / "4.sql").write_bytes(b"CREATE VIEW caf AS SELECT 1 AS caf\xe9;\n")
    (folder / "5.sql").write_bytes(b"\x00\x01binary")
    return folder


def test_every_failing_file_is_reported_then_keep_going_prints_the_rest(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    folder = str(broken_folder(tmp_path))
    code, out, err = cli(capsys, "graph", "--from-sql", folder, "-f", "json")
    assert code == 1 and out == "" and "Traceback" not in err and "internal error" not in err
    assert f"error: {folder}/2.sql:2:" in err and f"{folder}/3.sql:1: dependency cycle" in err
    assert f"error: {folder}/4.sql:1: byte 0xe9 at offset 34 is not utf-8; pass --encoding " \
           "latin-1" in err
    assert f"warning: skipped {folder}/5.sql: binary file" in err
    assert "3 of 5 files failed to load; fix them, or pass --keep-going" in err
    code, out, err = cli(capsys, "graph", "--from-sql", folder, "-f", "json", "--keep-going",
                         "--encoding", "latin-1")
    assert code == 1
    assert {n["name"] for n in json.loads(out)["nodes"]} == {
        "public.test_table", "public.good", "public.caf"}
    assert f"{folder}/2.sql:2:" in err and "dependency cycle" in err and "0xe9" not in err
    code, out, err = cli(capsys, "deps", "good", "--from-sql", folder, "--keep-going", "-f",
                         "json")
    assert code == 1 and "public.test_table" in out and f"{folder}/2.sql:2:" in err
    code, _, err = cli(capsys, "graph", "--from-sql", folder, "--encoding", "martian")
    assert code == 2 and "unknown encoding 'martian'" in err


def test_check_keep_going_compares_what_loads_and_fails(capsys: pytest.CaptureFixture[str],
                                                        db_dsn: str, tmp_path: Path) -> None:
    folder = broken_folder(tmp_path)
    with connect(db_dsn) as conn:
        conn.execute("CREATE TABLE test_table (id int); "
                     "CREATE VIEW good AS SELECT id FROM test_table")
    code, out, err = cli(capsys, "--dsn", db_dsn, "check", "--from-sql", str(folder))
    assert code == 1 and out == "" and "--keep-going" in err
    (folder / "4.sql").unlink()
    code, out, err = cli(capsys, "--dsn", db_dsn, "check", "--from-sql", str(folder),
                         "--keep-going")
    assert code == 1 and "in sync: 2 relations" in out
    assert f"{folder}/2.sql:2:" in err and "2 failures in 2 files left out" in err
