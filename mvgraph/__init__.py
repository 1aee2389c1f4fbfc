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
    from mvgraph.api import load_graph
    from mvgraph.definitions import Definition, Kind, Schedule
    from mvgraph.errors import (
        ConnectionFailed,
        CycleError,
        DatabaseError,
        LockTimeout,
        MvgraphError,
        NotFound,
        PermissionDenied,
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
    from mvgraph.names import RelationName
    from mvgraph.refresh.behavior import Action, Plan, RefreshBehavior, Step
    from mvgraph.refresh.executor import RefreshReport, StepResult
    from mvgraph.refresh.service import (
        StatusReport,
        configure,
        plan,
        refresh,
        status,
        track,
        untrack,
    )

#: Where each public name lives.
_HOMES: dict[str, str] = {
    "load_graph": "mvgraph.api",
    **dict.fromkeys(("Definition", "Kind", "Schedule"), "mvgraph.definitions"),
    **dict.fromkeys(("ConnectionFailed", "CycleError", "DatabaseError", "LockTimeout",
                     "MvgraphError", "NotFound", "PermissionDenied", "SelectorError",
                     "SqlCycleError", "SqlEncodingError", "SqlLoadErrors", "SqlParseError",
                     "StatementTimeout", "UndefinedReference", "UnknownRelation", "UsageError"),
                    "mvgraph.errors"),
    **dict.fromkeys(("GraphDiff", "MVGraph", "diff"), "mvgraph.graph"),
    "RelationName": "mvgraph.names",
    **dict.fromkeys(("Action", "Plan", "RefreshBehavior", "Step"), "mvgraph.refresh.behavior"),
    **dict.fromkeys(("RefreshReport", "StepResult"), "mvgraph.refresh.executor"),
    **dict.fromkeys(("StatusReport", "configure", "plan", "refresh", "status", "track",
                     "untrack"), "mvgraph.refresh.service"),
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
    "Kind",
    "LockTimeout",
    "MVGraph",
    "MvgraphError",
    "NotFound",
    "PermissionDenied",
    "Plan",
    "RefreshBehavior",
    "RefreshReport",
    "RelationName",
    "Schedule",
    "SelectorError",
    "SqlCycleError",
    "SqlEncodingError",
    "SqlLoadErrors",
    "SqlParseError",
    "StatementTimeout",
    "StatusReport",
    "Step",
    "StepResult",
    "UndefinedReference",
    "UnknownRelation",
    "UsageError",
    "__version__",
    "configure",
    "diff",
    "load_graph",
    "plan",
    "refresh",
    "status",
    "track",
    "untrack",
]
