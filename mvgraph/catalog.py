"""The live database's relations and dependencies, read from the catalog in three queries."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import psycopg

from mvgraph.db.queries import query
from mvgraph.definitions import Definition, Kind
from mvgraph.errors import translated
from mvgraph.names import RelationName

_KINDS = {
    "r": Kind.TABLE,
    "v": Kind.VIEW,
    "m": Kind.MATVIEW,
    "f": Kind.FOREIGN_TABLE,
    "p": Kind.PARTITIONED_TABLE,
}

# Stable in PostgreSQL's terms but time-dependent: an MV using them changes without any write.
TIME_FUNCTIONS = (
    "now", "statement_timestamp", "transaction_timestamp", "clock_timestamp", "timeofday",
    "current_date", "current_time", "current_timestamp", "localtime", "localtimestamp",
)


def read_definitions(conn: psycopg.Connection[tuple[object, ...]],
                     schemas: Sequence[str] | None = None,
                     with_sql: bool = True) -> list[Definition]:
    """Every user relation with the relations its rule reads.

    With ``schemas``, only relations in those schemas are returned, plus the relations they read
    directly (so that every edge has both ends). ``with_sql=False`` leaves out the view
    definitions, whose reading waits for any running plain REFRESH (planning never needs them).
    """
    with translated():
        rows = conn.execute(query("relations"), {"with_sql": with_sql}).fetchall()
        deps = conn.execute(query("dependencies")).fetchall()
        volatile = conn.execute(query("volatile_functions"),
                                {"time_functions": list(TIME_FUNCTIONS)}).fetchall()
    by_oid: dict[int, tuple[object, ...]] = {int(str(r[7])): r for r in rows}
    reads: dict[int, set[int]] = defaultdict(set)
    for src, dst in deps:
        if int(str(src)) in by_oid:
            reads[int(str(dst))].add(int(str(src)))
    funcs: dict[int, set[str]] = defaultdict(set)
    for oid, fn in volatile:
        funcs[int(str(oid))].add(str(fn))

    def name_of(oid: int) -> RelationName:
        row = by_oid[oid]
        return RelationName(str(row[0]), str(row[1]))

    keep = set(by_oid)
    if schemas:
        wanted = {oid for oid, r in by_oid.items() if r[0] in set(schemas)}
        keep = wanted | {src for oid in wanted for src in reads.get(oid, ())}
    out = []
    for oid in sorted(keep, key=name_of):
        schema, name, relkind, owner, populated, definition, concurrent, _ = by_oid[oid]
        kind = _KINDS[str(relkind)]
        out.append(Definition(
            name=RelationName(str(schema), str(name)),
            kind=kind,
            reads=frozenset(name_of(s) for s in reads.get(oid, ()) if s in keep),
            sql=None if definition is None else str(definition).strip(),
            owner=str(owner),
            populated=bool(populated) if kind == Kind.MATVIEW else None,
            concurrent_index=bool(concurrent) if kind == Kind.MATVIEW else None,
            volatile_functions=tuple(sorted(funcs.get(oid, ()))),
            source="catalog",
        ))
    return out
