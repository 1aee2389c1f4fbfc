"""`mvgraph embedded`: the embedded server starts on first use, is reused, reports and stops."""

from __future__ import annotations

import json
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
        assert run(["--embedded", "init"]) == 0
        assert "applied migration" in capsys.readouterr().out
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
