"""mvgraph: keep PostgreSQL materialized views fresh.

The public library API. Nothing here prints; the CLI renders what these functions return.

A thin facade: each name is imported from its module on first use (module ``__getattr__``), so
``import mvgraph`` and ``mvgraph --version`` load no driver, graph library or SQL parser.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mvgraph.version import __version__

# The subpackage is imported first (cheaply: its __init__ is empty), which binds it here as
# ``refresh``; that binding is dropped so that ``mvgraph.refresh`` is the library call, found by
# __getattr__ below, while ``mvgraph.refresh.executor`` and the like stay importable.
importlib.import_module("mvgraph.refresh")
globals().pop("refresh", None)

if TYPE_CHECKING:
    from mvgraph.api import (
        add_schedule,
        alter_schedule,
        cancel_job,
        grant,
        init,
        job_result,
        list_jobs,
        list_schedules,
        load_graph,
        pause_schedule,
        prune_jobs,
        rebuild_relation,
        remove_schedule,
        resume_job,
        resume_schedule,
        revoke,
        run_schedule_now,
        schedule_history,
        submit,
        submit_refresh,
        suspend_job,
        sync_schedules,
    )
    from mvgraph.errors import (
        ConnectionFailed,
        CycleError,
        DatabaseError,
        JobTimeout,
        LockTimeout,
        MvgraphError,
        NoJobRunner,
        NotFound,
        PermissionDenied,
        SchemaError,
        SelectorError,
        SqlCycleError,
        SqlEncodingError,
        SqlLoadErrors,
        SqlParseError,
        StatementTimeout,
        UndefinedReference,
        UnknownRelation,
        UsageError,
    )
    from mvgraph.graph import GraphDiff, MVGraph, diff
    from mvgraph.jobs.handle import Job, Progress
    from mvgraph.jobs.store import JobInfo, StepInfo
    from mvgraph.model.definitions import Definition, Kind, Schedule
    from mvgraph.model.events import JobFinished, JobStarted, StepFinished, StepStarted
    from mvgraph.model.names import RelationName
    from mvgraph.model.results import StepResult
    from mvgraph.model.status import Action, JobStatus, RunStatus, StepStatus
    from mvgraph.rebuild.control import RebuildFailed
    from mvgraph.refresh.behavior import Plan, RefreshBehavior, Step
    from mvgraph.refresh.executor import RefreshReport
    from mvgraph.refresh.service import configure, plan, refresh, track, untrack
    from mvgraph.scheduler.status import StatusReport, status
    from mvgraph.scheduler.store import ScheduleInfo, SlotRecord

#: Where each public name lives.
_HOMES: dict[str, str] = {
    **dict.fromkeys(("init", "grant", "revoke", "load_graph", "submit", "submit_refresh",
                     "rebuild_relation", "list_jobs", "cancel_job",
                     "suspend_job", "resume_job", "prune_jobs", "job_result"), "mvgraph.api"),
    **dict.fromkeys(("Definition", "Kind", "Schedule"), "mvgraph.model.definitions"),
    **dict.fromkeys(("ConnectionFailed", "CycleError", "DatabaseError", "JobTimeout",
                     "LockTimeout", "MvgraphError", "NoJobRunner", "NotFound",
                     "PermissionDenied", "SchemaError", "SelectorError",
                     "SqlCycleError", "SqlEncodingError", "SqlLoadErrors", "SqlParseError",
                     "StatementTimeout", "UndefinedReference", "UnknownRelation", "UsageError"),
                    "mvgraph.errors"),
    "RebuildFailed": "mvgraph.rebuild.control",
    **dict.fromkeys(("GraphDiff", "MVGraph", "diff"), "mvgraph.graph"),
    "RelationName": "mvgraph.model.names",
    **dict.fromkeys(("Job", "Progress"), "mvgraph.jobs.handle"),
    **dict.fromkeys(("JobInfo", "StepInfo"), "mvgraph.jobs.store"),
    **dict.fromkeys(("Plan", "RefreshBehavior", "Step"), "mvgraph.refresh.behavior"),
    **dict.fromkeys(("Action", "JobStatus", "RunStatus", "StepStatus"), "mvgraph.model.status"),
    **dict.fromkeys(("JobFinished", "JobStarted", "StepFinished", "StepStarted"),
                    "mvgraph.model.events"),
    "StepResult": "mvgraph.model.results",
    "RefreshReport": "mvgraph.refresh.executor",
    **dict.fromkeys(("add_schedule", "alter_schedule", "list_schedules", "pause_schedule",
                     "remove_schedule", "resume_schedule", "run_schedule_now",
                     "schedule_history", "sync_schedules"), "mvgraph.api"),
    **dict.fromkeys(("ScheduleInfo", "SlotRecord"), "mvgraph.scheduler.store"),
    **dict.fromkeys(("configure", "plan", "refresh", "track", "untrack"),
                    "mvgraph.refresh.service"),
    **dict.fromkeys(("StatusReport", "status"), "mvgraph.scheduler.status"),
}


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use, then keep it here."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'mvgraph' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "Action",
    "ConnectionFailed",
    "CycleError",
    "DatabaseError",
    "Definition",
    "GraphDiff",
    "Job",
    "JobFinished",
    "JobInfo",
    "JobStarted",
    "JobStatus",
    "JobTimeout",
    "Kind",
    "LockTimeout",
    "MVGraph",
    "MvgraphError",
    "NoJobRunner",
    "NotFound",
    "PermissionDenied",
    "Plan",
    "Progress",
    "RebuildFailed",
    "RefreshBehavior",
    "RefreshReport",
    "RelationName",
    "RunStatus",
    "Schedule",
    "ScheduleInfo",
    "SchemaError",
    "SelectorError",
    "SlotRecord",
    "SqlCycleError",
    "SqlEncodingError",
    "SqlLoadErrors",
    "SqlParseError",
    "StatementTimeout",
    "StatusReport",
    "Step",
    "StepFinished",
    "StepInfo",
    "StepResult",
    "StepStarted",
    "StepStatus",
    "UndefinedReference",
    "UnknownRelation",
    "UsageError",
    "__version__",
    "add_schedule",
    "alter_schedule",
    "cancel_job",
    "configure",
    "diff",
    "grant",
    "init",
    "job_result",
    "list_jobs",
    "list_schedules",
    "load_graph",
    "pause_schedule",
    "plan",
    "prune_jobs",
    "rebuild_relation",
    "refresh",
    "remove_schedule",
    "resume_job",
    "resume_schedule",
    "revoke",
    "run_schedule_now",
    "schedule_history",
    "status",
    "submit",
    "submit_refresh",
    "suspend_job",
    "sync_schedules",
    "track",
    "untrack",
]
