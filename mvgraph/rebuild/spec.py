"""What a rebuild is asked to do: the parsed form of ``[ASYNC] REBUILD TABLE ...`` and
``[ASYNC] REBUILD MATERIALIZED VIEW ... AS query`` (and of ``mvgraph rebuild``'s options).

Identifiers are folded as PostgreSQL folds them (unquoted: lower case; quoted: exact). Types,
expressions, defaults and queries are kept as the caller's SQL text, unchanged: they run in the
rebuild's session, with the submitter's rights, exactly as ALTER TABLE would run them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True, slots=True)
class AddColumn:
    """``ADD [COLUMN] name <definition>``: ``definition`` is the type and constraints as
    written (``text NOT NULL DEFAULT 'a'``)."""

    column: str
    definition: str


@dataclass(frozen=True, slots=True)
class AlterType:
    """``ALTER [COLUMN] c [SET DATA] TYPE <type> [USING <expression>]``."""

    column: str
    type_sql: str
    using_sql: str | None = None


@dataclass(frozen=True, slots=True)
class SetDefault:
    """``ALTER [COLUMN] c SET DEFAULT <expression>`` (existing NULLs stay NULL)."""

    column: str
    expression_sql: str


@dataclass(frozen=True, slots=True)
class DropDefault:
    """``ALTER [COLUMN] c DROP DEFAULT``."""

    column: str


@dataclass(frozen=True, slots=True)
class SetNotNull:
    """``ALTER [COLUMN] c SET NOT NULL``."""

    column: str


@dataclass(frozen=True, slots=True)
class DropNotNull:
    """``ALTER [COLUMN] c DROP NOT NULL``."""

    column: str


@dataclass(frozen=True, slots=True)
class AlterPrimaryKey:
    """``ALTER PRIMARY KEY (a, b)``."""

    columns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PartitionBy:
    """``TO [LOGICAL] PARTITION [BY LIST|RANGE|HASH (c, ...)]`` (``LOGICAL`` is accepted and
    means the same: PostgreSQL has one kind of partitioning). Without ``BY``: LIST."""

    method: Literal["list", "range", "hash"]
    columns: tuple[str, ...]
    logical: bool = False


@dataclass(frozen=True, slots=True)
class SetStorage:
    """``SET (param [= value], ...)``: storage parameters; values as written (None: no
    value given)."""

    params: tuple[tuple[str, str | None], ...]


Action = AddColumn | AlterType | SetDefault | DropDefault | SetNotNull | DropNotNull \
    | AlterPrimaryKey | PartitionBy | SetStorage


@dataclass(frozen=True, slots=True)
class RebuildParams:
    """The ``WITH (...)`` of a rebuild. ``gucs``: ``rebuild_guc_<name> = 'value'`` pairs as
    (name, value). ``extra``: any other parameter (e.g. ``hash_partitions = 8``,
    ``partition_interval = 'month'``), name folded, value as written without quotes."""

    keep_source: bool = False
    binlog_mode: bool = False
    gucs: tuple[tuple[str, str], ...] = ()
    extra: tuple[tuple[str, str | None], ...] = ()


@dataclass(frozen=True, slots=True)
class RebuildStatement:
    """One rebuild: of a table (``actions``) or of a materialized view (``query``)."""

    kind: Literal["table", "materialized view"]
    schema: str | None  # None: resolved through the search path
    name: str
    params: RebuildParams = field(default_factory=RebuildParams)
    actions: tuple[Action, ...] = ()
    query: str | None = None
    if_exists: bool = False
    asynchronous: bool = True  # ASYNC: returns the job id at once; else waits for the end
