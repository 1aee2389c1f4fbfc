"""Goals and verdicts, the JSON record, the chart (matplotlib) and the README table."""

from __future__ import annotations

import json
import re
import statistics
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BEGIN, END = "<!-- peers:begin -->", "<!-- peers:end -->"


@dataclass(frozen=True)
class Goal:
    """One row of the issue's table: where its per-round ratios live, the goal, the figure
    measured by hand when the issue was filed."""

    key: str
    workload: str
    ratio: str
    goal: float
    issue: float | None
    path: tuple[str, str]  # (workload key, ratio key)


GOALS = (
    Goal("force_dbt",
         "{dag_views} trivial views ({dag_tables} tables, depth 8), all forced, 2 threads",
         "mvgraph / dbt run", 0.05, 0.059, ("dag", "force_mvgraph_dbt")),
    Goal("cascade_dbt", "the same, one base table changed ({downstream} views downstream)",
         "mvgraph cascade / dbt run --select source+", 0.05, 0.084,
         ("dag", "cascade_mvgraph_dbt")),
    Goal("force_psql", "the same forced run", "mvgraph -j 2 / hand-kept psql script",
         1.0, 2.65, ("dag", "force_mvgraph_psql")),
    Goal("parse_cold", "{parse_views} views, one model per file",
         "graph from files, cold / dbt parse --no-partial-parse", 0.10, 0.20,
         ("parse", "cold_mvgraph_dbt")),
    Goal("parse_warm", "the same, warm parse cache", "mvgraph / dbt parse --no-partial-parse",
         0.05, 0.10, ("parse", "warm_mvgraph_dbt")),
    Goal("startup", "start-up", "mvgraph --version / dbt --version", 0.10, 0.27,
         ("startup", "mvgraph_dbt")),
    Goal("skip_dbt", "{skip_views} views over {skip_tables} tables of {skip_rows} rows, "
         "one table changed", "mvgraph default / dbt run (everything)", 0.15, None,
         ("skip", "mvgraph_dbt")),
    Goal("skip_psql", "the same", "mvgraph default / hand-kept psql script (everything)",
         0.15, None, ("skip", "mvgraph_psql")),
)


def _fmt(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def judge(results: dict[str, Any], quick: bool) -> list[dict[str, Any]]:
    """Every goal: median, range, rounds and verdict (PASS / FAIL; 'n/a' when a peer is
    missing; in a quick run the verdict is only indicative)."""
    w = results["workloads"]
    names = {
        "dag_views": w.get("dag", {}).get("views", "?"),
        "dag_tables": w.get("dag", {}).get("tables", "?"),
        "downstream": w.get("dag", {}).get("cascade_downstream", "?"),
        "parse_views": f"{w.get('parse', {}).get('views', 0):,}",
        "skip_views": w.get("skip", {}).get("views", "?"),
        "skip_tables": w.get("skip", {}).get("tables", "?"),
        "skip_rows": f"{w.get('skip', {}).get('rows', 0):,}",
    }
    out = []
    for g in GOALS:
        samples: Sequence[float] = w.get(g.path[0], {}).get("ratios", {}).get(g.path[1], [])
        row: dict[str, Any] = {"key": g.key, "workload": g.workload.format(**names),
                               "ratio": g.ratio, "goal": f"<= {g.goal:g}", "goal_value": g.goal,
                               "issue_figure": g.issue, "samples": list(samples)}
        if samples:
            med = float(statistics.median(samples))
            row.update(median=med, min=min(samples), max=max(samples), rounds=len(samples),
                       verdict="PASS" if med <= g.goal else "FAIL")
        else:
            row.update(median=None, verdict="n/a (peer missing)")
        if quick and samples:
            row["verdict"] += " (quick)"
        out.append(row)
    sched = w.get("schedules", {})
    for label, part in (("every second", sched.get("per_second")),
                        ("every minute", sched.get("per_minute"))):
        if not part:
            continue
        mv, pc = part.get("mvgraph", {}), part.get("pg_cron", {})
        row = {"key": f"schedule_{label.split()[1]}",
               "workload": f"{sched.get('views')} views each refreshed {label} for "
               + (f"{part['seconds']} s" if "seconds" in part else f"{part['minutes']} min"),
               "ratio": "lateness p99, missed, duplicates: mvgraph daemon vs pg_cron",
               "goal": "p99 <= pg_cron's; 0 missed, 0 duplicates", "issue_figure": None,
               "mvgraph": {k: v for k, v in mv.items() if k != "lateness_s"},
               "pg_cron": {k: v for k, v in pc.items() if k != "lateness_s"}}
        clean = mv.get("missed") == 0 and mv.get("duplicates") == 0
        if "unsupported" in pc or not pc:
            row["verdict"] = ("n/a (pg_cron cannot)" + (
                "; mvgraph 0 missed, 0 dup" if clean else "; mvgraph FAIL (missed/dup)"))
        else:
            ok = (clean and mv.get("lateness_p99_s") is not None
                  and pc.get("lateness_p99_s") is not None
                  and mv["lateness_p99_s"] <= pc["lateness_p99_s"])
            row["verdict"] = "PASS" if ok else "FAIL"
        if quick:
            row["verdict"] += " (quick)"
        out.append(row)
    return out


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.0f} ms"


def markdown(results: dict[str, Any]) -> str:
    """The README table (and its notes)."""
    lines = ["| workload | ratio | goal | [issue] | measured: median (range), rounds | verdict |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in results["goals"]:
        if row["key"].startswith("schedule_"):
            mv, pc = row["mvgraph"], row["pg_cron"]
            m = (f"mvgraph p50 {_ms(mv.get('lateness_p50_s'))}, p99 "
                 f"{_ms(mv.get('lateness_p99_s'))}, missed {mv.get('missed')}/"
                 f"{mv.get('expected')}, dup {mv.get('duplicates')}")
            p = (f"pg_cron: {pc['unsupported']}" if "unsupported" in pc else
                 f"pg_cron p50 {_ms(pc.get('lateness_p50_s'))}, p99 "
                 f"{_ms(pc.get('lateness_p99_s'))}, missed {pc.get('missed')}/"
                 f"{pc.get('expected')}, dup {pc.get('duplicates')}")
            measured = f"{m}; {p}"
        elif row.get("median") is None:
            measured = "peer not installed"
        else:
            measured = (f"{_fmt(row['median'])} ({_fmt(row['min'])}-{_fmt(row['max'])}), "
                        f"{row['rounds']}")
        issue = "" if row.get("issue_figure") is None else f"[{row['issue_figure']:g}]"
        lines.append(f"| {row['workload']} | {row['ratio']} | {row['goal']} | {issue} | "
                     f"{measured} | {row['verdict']} |")
    notes = results.get("notes", [])
    return "\n".join(lines) + "\n\n" + "".join(f"- {n}\n" for n in notes)


def chart(results: dict[str, Any], path: Path) -> str | None:
    """A PNG: each ratio's median with its range against the goal (log scale). None when
    written, else why not (matplotlib is the ``bench`` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed (pip install -e '.[bench]')"
    rows = [r for r in results["goals"] if r.get("median") is not None]
    if not rows:
        return "no ratios measured"
    fig, ax = plt.subplots(figsize=(11, 0.7 * len(rows) + 1.4))
    for i, r in enumerate(rows):
        color = "tab:green" if r["verdict"].startswith("PASS") else "tab:red"
        ax.plot([r["min"], r["max"]], [i, i], color=color, linewidth=2)
        ax.plot([r["median"]], [i], "o", color=color)
        ax.plot([r["goal_value"]], [i], "|", color="black", markersize=16, markeredgewidth=2)
        if r.get("issue_figure"):
            ax.plot([r["issue_figure"]], [i], "x", color="grey")
    ax.set_yticks(range(len(rows)), [textwrap.fill(r["ratio"], 40) + "\n"
                                     + textwrap.fill(r["workload"], 40) for r in rows],
                  fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("ratio (mvgraph / peer), log scale: dot median, line range, "
                  "| goal, x figure in the issue")
    ax.set_title(f"mvgraph vs dbt and a hand-kept psql script ({results['date']}"
                 f"{', quick' if results['quick'] else ''})", fontsize=10)
    ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def write_readme(readme: Path, results: dict[str, Any], png: Path | None) -> bool:
    """Rewrite the README between the markers; False when the markers are missing or the
    results are a quick run's (smoke numbers never replace the published table)."""
    if results.get("quick"):
        return False
    text = readme.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        return False
    body = [BEGIN, "",
            f"Measured by `python -m benchmarks.peers{' --quick' if results['quick'] else ''}` "
            f"on {results['date']} ({results['machine']}; PostgreSQL "
            f"{results['versions'].get('postgresql', '?')}; dbt-core "
            f"{results['versions'].get('dbt-core', 'not installed')}, dbt-postgres "
            f"{results['versions'].get('dbt-postgres', '-')}; pg_cron "
            f"{results['versions'].get('pg_cron', 'not installed')}). Raw numbers: "
            f"`{results['json']}`.", "", markdown(results).rstrip(), ""]
    if png is not None:
        body += [f"![mvgraph vs peers]({png.as_posix()})", ""]
    body.append(END)
    new = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: "\n".join(body), text,
                 flags=re.S)
    readme.write_text(new, encoding="utf-8")
    return True


def write_json(path: Path, results: dict[str, Any]) -> None:
    """All raw numbers, indented."""
    path.write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
