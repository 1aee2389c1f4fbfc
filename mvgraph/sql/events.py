"""What a SQL script does, as events: :class:`Define`, :class:`Rename`, :class:`Drop`,
:class:`AlterSchedule`, and a script's :class:`ScriptResult`.

Plain data, apart from the parser (``mvgraph.sql.dialect`` makes them, and re-exports them): a warm
parse cache rebuilds them without importing sqlglot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from mvgraph.errors import SqlParseError
from mvgraph.model.definitions import Definition, Schedule
from mvgraph.model.names import RelationName

__all__ = ["AlterSchedule", "Define", "Drop", "Event", "Rename", "ScriptResult"]


@dataclass(frozen=True, slots=True)
class Define:
    """A relation was created.

    ``unqualified`` lists the bare names read by the definition that were resolved through
    ``search_path`` (the search path in force at that statement); a loader that knows every
    definition re-resolves them.
    """

    definition: Definition
    unqualified: frozenset[str] = frozenset()
    search_path: tuple[str, ...] = ("public",)


@dataclass(frozen=True, slots=True)
class Rename:
    """``ALTER ... RENAME TO`` or ``ALTER ... SET SCHEMA``."""

    old: RelationName
    new: RelationName


@dataclass(frozen=True, slots=True)
class Drop:
    """``DROP TABLE / VIEW / MATERIALIZED VIEW``: one event per name."""

    name: RelationName


@dataclass(frozen=True, slots=True)
class AlterSchedule:
    """``ALTER MATERIALIZED VIEW ... REFRESH ...`` or ``... QUERY REWRITE``.

    Fields of ``schedule`` left None were not mentioned by the statement.
    """

    name: RelationName
    schedule: Schedule


Event: TypeAlias = Define | Rename | Drop | AlterSchedule


@dataclass(frozen=True, slots=True)
class ScriptResult:
    """The events of a script, in order, how many statements were skipped as irrelevant, and
    the relevant statements that could not be parsed (left out of the events).

    ``error_at`` holds, for each error, how many events came before its statement (where a
    definition resolved some other way belongs in ``events``)."""

    events: tuple[Event, ...]
    ignored: int
    errors: tuple[SqlParseError, ...] = ()
    error_at: tuple[int, ...] = ()
