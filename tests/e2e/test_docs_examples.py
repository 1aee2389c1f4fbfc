"""The documentation's runnable examples run as written, against a fresh test database.

A fenced block is runnable when the line before it (blank lines aside) is ``<!-- runnable -->``.
Each page's runnable blocks run in order in one fresh database (a later block may use what an
earlier one created): a ``sh`` block line by line in bash (``set -euo pipefail``, as the
README's tour) with ``MVGRAPH_DSN`` set to the database, a ``sql`` block as one script through
``mvgraph sql -f``. Every block must exit 0.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

DOCS = ROOT / "docs"
MARKER = "<!-- runnable -->"
_BLOCK = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def runnable_blocks(text: str) -> list[tuple[str, str, int]]:
    """(language, body, line) of each block of ``text`` marked runnable, in order.

    >>> runnable_blocks("<!-- runnable -->\\n\\n```sql\\nSELECT 1;\\n```\\n```sh\\nls\\n```\\n")
    [('sql', 'SELECT 1;\\n', 3)]
    """
    found = []
    for m in _BLOCK.finditer(text):
        before = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        if before.strip() == MARKER:
            found.append((m[1], m[2], text.count("\n", 0, m.start()) + 1))
    return found


def pages() -> list[Path]:
    """The pages holding at least one runnable block."""
    return [p for p in sorted(DOCS.rglob("*.md"))
            if runnable_blocks(p.read_text(encoding="utf-8"))]


def test_the_sql_front_end_page_has_runnable_examples() -> None:
    page = DOCS / "sql.md"
    blocks = runnable_blocks(page.read_text(encoding="utf-8"))
    assert len(blocks) >= 6, "the SQL front-end's examples are meant to be runnable"
    languages = {lang for lang, _, _ in blocks}
    assert languages <= {"sh", "sql"}, f"runnable blocks are sh or sql, not {languages}"


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(DOCS)))
def test_every_runnable_block_runs(page: Path, db_dsn: str, tmp_path: Path) -> None:
    bindir = Path(sys.executable).parent
    assert (bindir / "mvgraph").exists(), "run the tests from the virtual environment"
    env = {k: v for k, v in os.environ.items()
           if k not in ("MVGRAPH_DSN", "DATABASE_URL") and not k.startswith("PG")}
    env.update(PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}", MVGRAPH_DSN=db_dsn,
               MVGRAPH_CACHE_DIR=str(tmp_path / "cache"))
    where = page.relative_to(ROOT)
    for n, (lang, body, line) in enumerate(runnable_blocks(page.read_text(encoding="utf-8"))):
        if lang == "sql":
            script = tmp_path / f"block{n}.sql"
            script.write_text(body, encoding="utf-8")
            argv = ["mvgraph", "sql", "-f", str(script)]
        elif lang == "sh":
            lines = [x for x in body.splitlines() if x.strip()]
            argv = ["bash", "-c", "\n".join([
                "set -euo pipefail",
                "trap 'echo \"LINE FAILED (exit $?): $BASH_COMMAND\" >&2' ERR", *lines])]
        else:
            pytest.fail(f"{where}:{line}: a runnable block is sh or sql, not {lang}")
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300, check=False)
        assert done.returncode == 0, (
            f"{where}:{line}: the {lang} block exited {done.returncode}\n"
            f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
