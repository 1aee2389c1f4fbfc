"""Every status a report or a job list can show has a style (rich markup needs one)."""

from __future__ import annotations

from mvgraph.commands.jobs import JOB_STYLE
from mvgraph.commands.render import ACTION_STYLE
from mvgraph.model.status import JobStatus, RunStatus, StepStatus


def test_every_reported_word_has_a_style() -> None:
    assert {s.word for s in StepStatus if s is not StepStatus.RUNNING} == set(ACTION_STYLE)
    assert {s.value for s in JobStatus} == set(JOB_STYLE)


def test_every_run_status_but_lost_is_a_job_status() -> None:
    assert {r for r in RunStatus if r.job_status is None} == {RunStatus.LOST}
