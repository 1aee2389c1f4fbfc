"""The side-by-side benchmark harness (``benchmarks/peers``): its pure logic, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.peers import report, tools, workloads


def test_dag_workload_matches_the_fixture_generator() -> None:
    work = workloads.dag(300, 20)
    assert len(work.views) == 300 and len(work.tables) == 20
    # The cascade: one base table with 102 views downstream (seed 0).
    assert 102 in {len(work.downstream(t)) for t in work.tables}
    sql = work.sql()
    assert sql.count("CREATE MATERIALIZED VIEW") == 300
    assert "{0}" not in sql and "public.t0" in sql


def test_downstream_is_transitive() -> None:
    work = tools.Workload(["t"], "", [tools.View("a", "SELECT * FROM {0}", ("t",)),
                                      tools.View("b", "SELECT * FROM {0}", ("a",)),
                                      tools.View("c", "SELECT 1", ())])
    assert work.downstream("t") == {"a", "b"}


def test_heavy_workload_shape() -> None:
    work = workloads.heavy(20, 10)
    assert len(work.views) == 200
    # family 0's ten views plus the two d19 views reading c0_0
    assert len(work.downstream("b0")) == 12


def test_dbt_models_use_ref_and_source(tmp_path: Path) -> None:
    work = workloads.dag(10, 2)
    project = tools.write_dbt_project(tmp_path, work, host="/tmp/x", dbname="d")
    models = sorted((project / "models").glob("v*.sql"))
    assert len(models) == 10
    bodies = [m.read_text() for m in models]
    assert all(b.startswith("{{ config(materialized='materialized_view') }}") for b in bodies)
    assert any("{{ source('bench', 't" in b for b in bodies)
    assert any("{{ ref('v" in b for b in bodies)
    assert "send_anonymous_usage_stats: false" in (project / "dbt_project.yml").read_text()


def test_relfilenode_counts() -> None:
    before = {"a": (1, 10), "b": (2, 20), "c": (3, 30)}
    after = {"a": (1, 11), "b": (2, 20), "c": (4, 40), "d": (5, 50)}
    assert tools.changed(before, after) == 1
    assert tools.recreated(before, after) == 2


def test_percentile_and_rotation() -> None:
    assert workloads.percentile([], 99) is None
    assert workloads.percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert workloads.percentile([float(i) for i in range(100)], 99) == 98.0
    assert [workloads.rotate(["m", "d", "p"], r) for r in range(3)] == [
        ["m", "d", "p"], ["d", "p", "m"], ["p", "m", "d"]]


def test_slots_and_ceiling() -> None:
    t = datetime(2026, 1, 1, 0, 0, 0, 300_000, tzinfo=UTC)
    assert workloads._ceil(t, timedelta(seconds=1)) == t.replace(second=1, microsecond=0)
    assert workloads._ceil(t.replace(microsecond=0), timedelta(minutes=1)) == t.replace(
        microsecond=0)
    assert len(workloads._slots(t, t + timedelta(seconds=5), timedelta(seconds=1))) == 5


def _results(**ratios: list[float]) -> dict[str, Any]:
    return {"date": "2026-01-01 00:00 UTC", "quick": False, "machine": "m", "json": "r.json",
            "versions": {"postgresql": "15"}, "notes": ["a note"],
            "workloads": {"dag": {"views": 300, "tables": 20, "cascade_downstream": 102,
                                  "ratios": ratios},
                          "schedules": {"views": 20, "per_second": {
                              "seconds": 60,
                              "mvgraph": {"missed": 0, "duplicates": 0, "expected": 1200,
                                          "lateness_p50_s": 0.01, "lateness_p99_s": 0.05},
                              "pg_cron": {"unsupported": "pg_cron 1.4"}}}}}


def test_verdicts_judge_the_median() -> None:
    results = _results(force_mvgraph_dbt=[0.01, 0.04, 0.9], force_mvgraph_psql=[1.2, 1.5])
    goals = {g["key"]: g for g in report.judge(results, quick=False)}
    assert goals["force_dbt"]["verdict"] == "PASS" and goals["force_dbt"]["median"] == 0.04
    assert goals["force_psql"]["verdict"] == "FAIL"
    assert goals["parse_cold"]["verdict"].startswith("n/a")
    assert goals["schedule_second"]["verdict"].startswith("n/a (pg_cron cannot)")
    assert "(quick)" in report.judge(results, quick=True)[0]["verdict"]


def test_readme_is_rewritten_between_the_markers(tmp_path: Path) -> None:
    results = _results(force_mvgraph_dbt=[0.02])
    results["goals"] = report.judge(results, quick=False)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.BEGIN}\nOLD-CONTENT\n{report.END}\ntail\n")
    assert report.write_readme(readme, results, None)
    text = readme.read_text()
    assert "OLD-CONTENT" not in text and text.startswith("intro\n") and text.endswith("tail\n")
    assert "| mvgraph / dbt run | <= 0.05 | [0.059] | 0.020 (0.020-0.020), 1 | PASS |" in text
    assert "pg_cron: pg_cron 1.4" in text and "- a note" in text
    readme.write_text("no markers\n")
    assert not report.write_readme(readme, results, None)


def test_quick_run_never_rewrites_the_readme(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    text = f"x\n{report.BEGIN}\npublished\n{report.END}\n"
    readme.write_text(text, encoding="utf-8")
    results = {"quick": True, "date": "d", "machine": "m", "versions": {}, "json": "j",
               "workloads": {}, "goals": [], "notes": []}
    assert report.write_readme(readme, results, None) is False
    assert readme.read_text(encoding="utf-8") == text
