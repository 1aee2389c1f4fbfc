"""A refresh planned before by this process reads its facts in one statement (prefetch): it
still sees every write, DDL, tracking change and lost change log, and with nothing to refresh
it runs that one statement and nothing else."""

from __future__ import annotations

from typing import Any, ClassVar

import psycopg
import pytest

import mvgraph
from mvgraph.refresh import prefetch
from mvgraph.refresh.service import build_plan
from tests.integration.test_refresh import gauss, load_gauss

__all__ = ["gauss"]  # the fixture

Conn = psycopg.Connection[tuple[object, ...]]


class Counting(psycopg.Cursor[Any]):
    """A cursor that counts the statements sent through it."""

    sent: ClassVar[list[str]] = []

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Counting:
        Counting.sent.append(str(query)[:80])
        super().execute(query, params, **kwargs)
        return self


@pytest.fixture
def counted(db_dsn: str) -> Any:
    with psycopg.connect(db_dsn, autocommit=True, cursor_factory=Counting) as c:
        load_gauss(c)  # type: ignore[arg-type]
        Counting.sent = []
        yield c


def refreshed(report: Any) -> list[str]:
    return [str(n) for n in report.refreshed]


def test_a_refresh_with_nothing_stale_on_a_passed_connection_is_one_statement(
        counted: Conn) -> None:
    mvgraph.refresh(counted, "+mv6")  # first plan of this request: query by query, recorded
    Counting.sent = []
    report = mvgraph.refresh(counted, "+mv6")
    assert report.job_id is None and refreshed(report) == []
    assert len(Counting.sent) == 1, Counting.sent
    counted.execute("INSERT INTO test_table VALUES (100, 1, 1)")
    Counting.sent = []
    report = mvgraph.refresh(counted, "+mv6")
    assert refreshed(report) == ["public.mv1", "public.mv5", "public.mv6"]
    assert "SELECT (SELECT coalesce(json_agg" in Counting.sent[0], Counting.sent
    assert not any("hashtextextended(c.relname" in s or "to_regclass(u.name)" in s
                   for s in Counting.sent[1:])  # the plan came from that statement


def test_a_replayed_plan_sees_ddl_tracking_changes_and_a_lost_change_log(gauss: Conn) -> None:
    assert refreshed(mvgraph.refresh(gauss, "*")) == []
    assert refreshed(mvgraph.refresh(gauss, "*")) == []  # replayed
    gauss.execute("CREATE MATERIALIZED VIEW mv9 AS SELECT count(*) AS n FROM public.t2 "
                  "WITH NO DATA")
    assert refreshed(mvgraph.refresh(gauss, "*")) == ["public.mv9"]  # a new graph
    assert refreshed(mvgraph.refresh(gauss, "*")) == []
    mvgraph.untrack(gauss, ["t2"])  # readers of an untracked table are refreshed every run
    first = refreshed(mvgraph.refresh(gauss, "*"))
    assert "public.mv9" in first and refreshed(mvgraph.refresh(gauss, "*")) == first
    mvgraph.track(gauss, ["t2"])
    mvgraph.refresh(gauss, "*")
    assert refreshed(mvgraph.refresh(gauss, "*")) == []
    every = sorted(str(s.name) for s in mvgraph.plan(gauss, "*", force=True).steps)
    gauss.execute("TRUNCATE mvgraph.change_log_intact")  # as crash recovery empties it
    assert sorted(refreshed(mvgraph.refresh(gauss, "*"))) == every
    assert refreshed(mvgraph.refresh(gauss, "*")) == []


def test_the_one_statement_answers_as_the_queries_do(gauss: Conn) -> None:
    """Values read back through the statement's text are those the queries return."""
    gauss.execute("INSERT INTO test_table VALUES (100, 1, 1)")  # some changes to count
    recording, recorder = prefetch.recorder(gauss)
    direct = build_plan(recording, ["+mv6"])[1]
    answers = prefetch.fetch(gauss, recorder.recorded)
    assert len(answers) >= 5
    for r in recorder.recorded:
        assert answers[r.key] == [tuple(row) for row in gauss.execute(r.sql, r.params)], r.sql
    replay = prefetch.Replay(gauss, recorder.recorded, prefetch.fetch_raw(gauss, recorder.recorded))
    replayed = build_plan(replay, ["+mv6"])  # type: ignore[arg-type]
    assert replayed[1] == direct and [s.action.value for s in direct.steps] == ["refresh"] * 3
