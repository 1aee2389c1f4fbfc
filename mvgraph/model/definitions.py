"""Definitions: what both sources (SQL files, the catalog) produce; the graph is built of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from mvgraph.model.names import RelationName


class Kind(StrEnum):
    """What a node of the graph is."""

    TABLE = "table"
    VIEW = "view"
    MATVIEW = "matview"
    FOREIGN_TABLE = "foreign_table"
    PARTITIONED_TABLE = "partitioned_table"
    EXTERNAL = "external"  # read by a definition but defined nowhere
    SEQUENCE = "sequence"  # read by a view (FROM s, nextval('s'), 's'::regclass)
    SYSTEM = "system"  # a relation of pg_catalog or information_schema read by a view

    @property
    def is_base(self) -> bool:
        """True for relations that hold data written directly (tables of any sort): the ones
        ``track`` can give triggers (EXTERNAL ones once they exist)."""
        return self in (Kind.TABLE, Kind.FOREIGN_TABLE, Kind.PARTITIONED_TABLE, Kind.EXTERNAL)

    @property
    def always_changing(self) -> bool:
        """True for inputs whose content changes without a write mvgraph could track (a
        sequence, a system relation): their readers are always stale unless configured."""
        return self in (Kind.SEQUENCE, Kind.SYSTEM)


@dataclass(frozen=True, slots=True)
class Schedule:
    """The GaussDB ``REFRESH [behaviour] START WITH (...) EVERY (...)`` clause, as SQL text."""

    behavior: str | None = None  # e.g. "CASCADE ALL"; None means DEFAULT
    start: str | None = None  # SQL expression text, e.g. "'2020-01-01 12:12:12'::timestamptz"
    every: str | None = None  # SQL expression text, e.g. "interval '1 s'"
    query_rewrite: bool | None = None  # ENABLE (True) / DISABLE (False) QUERY REWRITE


@dataclass(frozen=True, slots=True)
class Definition:
    """One relation and the relations its query reads (empty for tables)."""

    name: RelationName
    kind: Kind
    reads: frozenset[RelationName] = frozenset()
    sql: str | None = None
    owner: str | None = None
    populated: bool | None = None
    concurrent_index: bool | None = None
    volatile_functions: tuple[str, ...] = ()
    schedule: Schedule | None = None
    source: str | None = None  # "file.sql:12" or "catalog"
    columns: tuple[str, ...] = field(default=())
