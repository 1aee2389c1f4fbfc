"""Start-up stays light: ``--version`` and ``--help`` import no driver, graph library, SQL
parser or rich; the library facade is lazy and still exposes every public name."""

from __future__ import annotations

import json
import subprocess
import sys

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


def loaded(*args: str) -> tuple[str, set[str]]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                          timeout=60)
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
