"""deploy/: the Prometheus rules and the Grafana dashboard name only metrics the daemon
exports (and cover the alert events); the systemd units have what a production setup needs,
and pass ``systemd-analyze verify`` where it exists."""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mvgraph.jobs.worker import WorkerConfig
from mvgraph.scheduler.alerts import KINDS
from mvgraph.scheduler.daemon import DaemonConfig
from mvgraph.scheduler.metrics import Metrics
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "mvgraph.json"
UNITS = DEPLOY / "systemd"
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
            "and", "or", "unless", "inf", "nan"}


def exported() -> dict[str, set[str]]:
    """Each metric family of the daemon's registry with the series names it exports."""
    out: dict[str, set[str]] = {}
    for family in Metrics().registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}.get(
            family.type, [""])
        out[family.name] = {family.name + s for s in suffixes}
    return out


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers outside strings, label
    matchers, ranges and grouping lists that are no function, keyword or number."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        after = text[m.end():].lstrip()
        if m.group() in KEYWORDS or after.startswith("("):
            continue
        if m.start() > 0 and text[m.start() - 1].isdigit():  # 2m, 1e3
            continue
        names.add(m.group())
    return names


def test_metric_names_of_an_expression() -> None:
    assert metric_names('sum by (le) (rate(a_bucket{x="y(z)"}[5m])) / on (v) b > 2') == \
        {"a_bucket", "b"}
    assert metric_names("absent(up) or vector(0)") == {"up"}


def load_rules() -> dict[str, Any]:
    text = RULES.read_text(encoding="utf-8")
    try:
        import yaml
    except ImportError:  # a small reading of what this file uses: rules' alert and expr
        return {"groups": [{"rules": _rules_without_yaml(text)}]}
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def _rules_without_yaml(text: str) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("- alert:"):
            rules.append({"alert": stripped.split(":", 1)[1].strip(), "labels": {},
                          "annotations": {"summary": "?"}})
        elif stripped.startswith("expr:") and rules:
            value = stripped.split(":", 1)[1].strip()
            if value in (">-", ">", "|"):
                indent = len(line) - len(line.lstrip())
                block = []
                for more in lines[i + 1:]:
                    if more.strip() and len(more) - len(more.lstrip()) <= indent:
                        break
                    block.append(more.strip())
                value = " ".join(block)
            rules[-1]["expr"] = value
        elif stripped.startswith("severity:") and rules:
            rules[-1]["labels"]["severity"] = stripped.split(":", 1)[1].strip()
    return rules


def test_the_small_reading_of_the_rules_agrees_with_yaml() -> None:
    small = _rules_without_yaml(RULES.read_text(encoding="utf-8"))
    assert len(small) >= len(KINDS) and all(r.get("expr") for r in small)
    try:
        import yaml  # noqa: F401
    except ImportError:
        return
    full = [r for g in load_rules()["groups"] for r in g["rules"]]
    assert [(r["alert"], " ".join(str(r["expr"]).split()), r["labels"]["severity"])
            for r in small] == [(r["alert"], " ".join(str(r["expr"]).split()),
                                 r["labels"]["severity"]) for r in full]


def dashboard_exprs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [str(node["expr"])] if "expr" in node else []
        return found + [e for v in node.values() for e in dashboard_exprs(v)]
    if isinstance(node, list):
        return [e for v in node for e in dashboard_exprs(v)]
    return []


def test_alert_rules_name_only_exported_metrics_and_cover_every_event() -> None:
    series = set().union(*exported().values())
    rules = [r for g in load_rules()["groups"] for r in g["rules"]]
    assert len(rules) >= len(KINDS)
    for rule in rules:
        assert rule["alert"].startswith("Mvgraph") and rule["expr"]
        assert rule["labels"]["severity"] in ("page", "warning"), rule
        assert rule["annotations"]["summary"], rule
        unknown = metric_names(str(rule["expr"])) - series
        assert not unknown, f"{rule['alert']} reads metrics the daemon does not export: {unknown}"
    text = " ".join(str(r["expr"]) for r in rules)
    for marker in ("mvgraph_schedule_broken", "mvgraph_target_lag_seconds",
                   'kind="job_failed"', 'kind="daemon_silent"', 'kind="worker_silent"'):
        assert marker in text, f"no rule for {marker}"


def test_the_dashboard_shows_every_exported_metric_and_nothing_else() -> None:
    families = exported()
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert board["title"] == "mvgraph" and board["panels"]
    exprs = dashboard_exprs(board["panels"])
    assert exprs
    used = set().union(*(metric_names(e) for e in exprs))
    unknown = used - set().union(*families.values())
    assert not unknown, f"the dashboard reads metrics the daemon does not export: {unknown}"
    shown = {name for name, series in families.items() if series & used}
    assert shown == set(families), f"no panel for {set(families) - shown}"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


def read_unit(path: Path) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case
    unit.read(path, encoding="utf-8")
    return unit


def seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+)(s|min)?", value.strip())
    assert m, value
    return float(m[1]) * (60 if m[2] == "min" else 1)


@pytest.mark.parametrize("name", ["mvgraph-daemon.service", "mvgraph-worker@.service"])
def test_a_unit_restarts_stops_gracefully_reads_the_config_and_is_hardened(name: str) -> None:
    unit = read_unit(UNITS / name)
    service = unit["Service"]
    command = "daemon" if "daemon" in name else "worker"
    assert service["ExecStart"].startswith(
        f"/opt/mvgraph/bin/mvgraph --config /etc/mvgraph/mvgraph.toml {command}")
    assert service["Restart"] == "on-failure" and seconds(service["RestartSec"]) > 0
    assert service["KillSignal"] == "SIGTERM"
    grace = max(WorkerConfig().shutdown_s, DaemonConfig().shutdown_s)
    assert seconds(service["TimeoutStopSec"]) > grace + 30, "the drain fits in the stop"
    assert service["User"] == "mvgraph" and service["Group"] == "mvgraph"
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict",
                       "ProtectHome": "yes", "PrivateTmp": "yes",
                       "CapabilityBoundingSet": ""}.items():
        assert service[key] == value, key
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    if command == "worker":
        assert "%i" in service["ExecStart"] and "%i" in unit["Unit"]["Description"]


def verify(folder: Path, unit: str) -> str:
    out = subprocess.run(["systemd-analyze", "verify", str(folder / unit)],
                         capture_output=True, text=True, timeout=60)
    lines = [line for line in (out.stdout + out.stderr).splitlines()
             if "mvgraph" in line or out.returncode != 0]
    return "\n".join(lines) if lines or out.returncode == 0 else f"exit {out.returncode}"


def test_systemd_analyze_verify_finds_nothing(tmp_path: Path) -> None:
    """Where systemd-analyze exists (the other checks of the units run everywhere). It wants
    the command to exist: the copies run this Python instead of /opt/mvgraph/bin/mvgraph."""
    if shutil.which("systemd-analyze") is None:
        for name in ("mvgraph-daemon.service", "mvgraph-worker@.service"):
            assert read_unit(UNITS / name)["Service"]["ExecStart"]
        return
    for unit in UNITS.glob("*.service"):
        text = unit.read_text(encoding="utf-8")
        (tmp_path / unit.name).write_text(text.replace("/opt/mvgraph/bin/mvgraph",
                                                       sys.executable), encoding="utf-8")
    (tmp_path / "mvgraph-worker@1.service").symlink_to(tmp_path / "mvgraph-worker@.service")
    for name in ("mvgraph-daemon.service", "mvgraph-worker@1.service"):
        assert verify(tmp_path, name) == "", name
    broken = tmp_path / "mvgraph-daemon.service"
    broken.write_text(broken.read_text(encoding="utf-8").replace(
        "Restart=on-failure", "Restart=sometimes"), encoding="utf-8")
    assert "sometimes" in verify(tmp_path, "mvgraph-daemon.service"), "the check sees errors"
