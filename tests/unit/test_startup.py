"""Start-up stays light: ``--version`` and ``--help`` import no driver, graph library, SQL
parser or rich; the library facade is lazy and still exposes every public name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("psycopg", "networkx", "sqlglot", "rich")

PROBE = """
import json, sys
sys.argv = ["mvgraph", *sys.argv[1:]]
try:
    from mvgraph.entry import main
    main()
except SystemExit:
    pass
finally:
    sys.stderr.write("LOADED " + json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def loaded(*args: str, env: dict[str, str] | None = None) -> tuple[str, set[str]]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                          timeout=60, env=env)
    line = proc.stderr.rsplit("LOADED ", 1)[1]
    return proc.stdout, set(json.loads(line))


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["refresh", "--help"],
                                  ["embedded", "--help"]])
def test_version_and_help_import_nothing_heavy(args: list[str]) -> None:
    out, modules = loaded(*args)
    assert out.strip()
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


def test_version_needs_no_typer() -> None:
    out, modules = loaded("--version")
    assert out.startswith("mvgraph ")
    assert "typer" not in modules


def test_import_mvgraph_is_lazy_and_complete() -> None:
    code = (f"import sys, mvgraph; before = sorted(set({HEAVY!r}) & set(sys.modules)); "
            "from mvgraph import *; import mvgraph as m; "
            "missing = [n for n in m.__all__ if not hasattr(m, n)]; "
            "print(before, missing, callable(m.refresh), m.refresh.__module__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert proc.stdout.split() == ["[]", "[]", "True", "mvgraph.refresh.service"]


def test_a_warm_graph_from_sql_files_imports_no_parser_or_driver(
        tmp_path: Path) -> None:
    """With the parse cache filled, ``graph --from-sql`` needs neither sqlglot nor psycopg (the
    graph itself is networkx's); the cold run does parse (sqlglot), and both print the same
    graph."""
    sql = tmp_path / "sql"
    sql.mkdir()
    (sql / "0_tables.sql").write_text("CREATE TABLE t (id int);\nCREATE TABLE u (id int);\n")
    for i in range(3):
        (sql / f"{i + 1}_view.sql").write_text(
            f"CREATE MATERIALIZED VIEW v{i} AS SELECT id FROM t JOIN u USING (id);\n")
    env = {**os.environ, "MVGRAPH_CACHE_DIR": str(tmp_path / "cache")}
    args = ("graph", "--from-sql", str(sql), "-f", "json")
    cold_out, cold = loaded(*args, env=env)
    assert "sqlglot" in cold
    warm_out, warm = loaded(*args, env=env)
    assert warm_out == cold_out and len(json.loads(warm_out)["nodes"]) == 5
    heavy = {"sqlglot", "psycopg", "rich"}
    assert not warm & heavy, sorted(warm & heavy)
    _, tree = loaded("graph", "--from-sql", str(sql), env=env)
    assert not tree & heavy - {"rich"}, sorted(tree & heavy)
