"""The README's tour runs as written, line by line, against the demo database."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def tour_lines() -> list[str]:
    """The commands of the README's tour code block (comments and blank lines dropped)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## A tour"):]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block is not None, "the tour has no ```sh block"
    return [line for line in block[1].splitlines() if line.strip()]


def test_the_tour_has_the_commands_users_copy() -> None:
    lines = tour_lines()
    assert lines[0].startswith("mvgraph demo")
    assert any("refresh" in line for line in lines) and any("--from-sql" in line for line in lines)


def test_every_tour_line_runs_against_the_demo_database(tmp_path: Path) -> None:
    bindir = Path(sys.executable).parent
    assert (bindir / "mvgraph").exists(), "run the tests from the virtual environment"
    env = {k: v for k, v in os.environ.items()
           if k not in ("MVGRAPH_DSN", "DATABASE_URL") and not k.startswith("PG")}
    env.update(PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}",
               MVGRAPH_EMBEDDED_DIR=str(tmp_path / "embedded"),
               MVGRAPH_CACHE_DIR=str(tmp_path / "cache"))
    script = "\n".join([
        "set -euo pipefail",
        "trap 'echo \"TOUR LINE FAILED (exit $?): $BASH_COMMAND\" >&2' ERR",
        *tour_lines(),
    ])
    work = tmp_path / "elsewhere"  # a user's own directory, not the checkout
    work.mkdir()
    try:
        done = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "TOUR LINE FAILED" not in done.stderr
        assert "in sync" in done.stdout  # `check` compared the files with the demo database
        assert "marts.fct_orders" in done.stdout
    finally:
        subprocess.run(["mvgraph", "embedded", "stop"], env=env, capture_output=True,
                       timeout=120, check=False)
