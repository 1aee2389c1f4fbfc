"""mvgraph: keep PostgreSQL materialized views fresh.

The public library API. Nothing here prints; the CLI renders what these functions return.
"""

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

# The function shadows the subpackage attribute on purpose: ``mvgraph.refresh(...)`` is the
# library call; the subpackage stays importable as ``mvgraph.refresh.executor`` and so on.
from mvgraph.refresh.service import (
    StatusReport,
    configure,
    plan,
    refresh,
    status,
    track,
    untrack,
)
from mvgraph.version import __version__

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
