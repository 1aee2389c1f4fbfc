"""The partitions of a rebuilt table: the old table's kept (same bounds), or those of
``TO PARTITION BY``: LIST and RANGE get a partition per value present (RANGE by
``partition_interval``) and a DEFAULT one, whose rows of values written meanwhile move to new
partitions in the ``*_additional_child_table`` steps; HASH gets ``hash_partitions``."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from mvgraph.db.queries import query
from mvgraph.rebuild import spec
from mvgraph.rebuild.closure import Closure
from mvgraph.rebuild.control import RebuildFailed
from mvgraph.rebuild.rename import temp_name

Conn = psycopg.Connection[tuple[object, ...]]
QName = tuple[str, str]
RANGE_UNITS = ("day", "week", "month", "quarter", "year")


class Partitions:
    """Partition making and naming, for :class:`mvgraph.rebuild.relations.Relations`."""

    conn: Conn
    job: int
    c: Closure
    state: dict[str, Any]

    def partition_source(self) -> str | None:
        """The old table's partition key, kept when no TO PARTITION changes it."""
        if self.c.kind != "p":
            return None
        row = self.conn.execute(query("rebuild_partkey"), {"oid": self.c.oid}).fetchone()
        return str(row[0]) if row else None

    def partitions(self, tmp: QName, action: spec.PartitionBy | None,
                   params: spec.RebuildParams) -> int:
        """Make the new table's partitions (recorded with it: they go with it)."""
        extra = dict(params.extra)
        if action is None:
            if self.c.kind != "p":
                return 0
            rows = self.conn.execute(query("rebuild_partitions"), {"oid": self.c.oid}).fetchall()
            made = []
            for schema, name, bound in rows:
                part = temp_name(str(name), self.job)
                self.conn.execute(sql.SQL("CREATE TABLE {} PARTITION OF {} {}").format(
                    sql.Identifier(str(schema), part), sql.Identifier(*tmp),
                    sql.SQL(str(bound))))
                made.append([str(schema), part, str(name)])
            self.state["partitions"] = made
            return len(made)
        if action.method == "hash":
            n = int(extra.get("hash_partitions") or 4)
            for i in range(n):
                self._partition(tmp, f"p{i}", sql.SQL("FOR VALUES WITH (MODULUS {}, REMAINDER {})")
                                .format(sql.Literal(n), sql.Literal(i)))
            return n
        values = self._values(action, extra)
        for v in values:
            self._partition(tmp, self._part_name(v), self._bound(action, extra, v))
        self._partition(tmp, "default", sql.SQL("DEFAULT"))
        self.state["partitioning"] = {"method": action.method, "column": action.columns[0],
                                      "unit": extra.get("partition_interval"),
                                      "values": values}
        return len(values) + 1

    @property
    def list_or_range(self) -> bool:
        return "partitioning" in self.state

    def _partition(self, tmp: QName, suffix: str, bound: sql.Composable) -> None:
        name = f"{self.c.name}_{suffix}"[:63]
        self.conn.execute(sql.SQL("CREATE TABLE {} PARTITION OF {} {}").format(
            sql.Identifier(self.c.schema, temp_name(name, self.job)), sql.Identifier(*tmp),
            bound))
        self.state.setdefault("partitions", []).append(
            [self.c.schema, temp_name(name, self.job), name])

    def _part_name(self, value: str) -> str:
        clean = "".join(ch if ch.isalnum() else "_" for ch in value.lower())[:40]
        return f"p_{clean}" if clean else "p_empty"

    def _values(self, action: spec.PartitionBy, extra: dict[str, str | None]) -> list[str]:
        if len(action.columns) != 1:
            raise RebuildFailed(f"TO PARTITION BY {action.method.upper()} takes one column in "
                                "PostgreSQL (here: partitions are made per value)")
        col = sql.Identifier(action.columns[0])
        src = sql.Identifier(self.c.schema, self.c.name)
        if action.method == "range":
            unit = extra.get("partition_interval")
            if unit not in RANGE_UNITS:
                raise RebuildFailed("TO PARTITION BY RANGE needs WITH (partition_interval = "
                                    "'day' | 'week' | 'month' | 'quarter' | 'year') on a date "
                                    "or timestamp column")
            expr = sql.SQL("date_trunc({}, {})::text").format(sql.Literal(unit), col)
        else:
            expr = sql.SQL("{}::text").format(col)
        rows = self.conn.execute(sql.SQL(
            "SELECT DISTINCT {e} FROM {src} WHERE {c} IS NOT NULL ORDER BY 1").format(
            e=expr, src=src, c=col)).fetchall()
        return [str(r[0]) for r in rows]

    def _bound(self, action: spec.PartitionBy, extra: dict[str, str | None],
               value: str) -> sql.Composable:
        if action.method == "range":
            unit = str(extra.get("partition_interval"))
            return sql.SQL("FOR VALUES FROM ({v}) TO (({v})::timestamp + {i})").format(
                v=sql.Literal(value), i=sql.Literal(f"1 {unit}"))
        return sql.SQL("FOR VALUES IN ({})").format(sql.Literal(value))

    def new_partition_values(self, tmp: QName) -> list[str]:
        """Values written meanwhile that have no partition (they are in the default one)."""
        p = self.state["partitioning"]
        default = sql.Identifier(self.c.schema, temp_name(f"{self.c.name}_default"[:63],
                                                          self.job))
        col = sql.Identifier(p["column"])
        expr = (sql.SQL("date_trunc({}, {})::text").format(sql.Literal(p["unit"]), col)
                if p["method"] == "range" else sql.SQL("{}::text").format(col))
        rows = self.conn.execute(sql.SQL(
            "SELECT DISTINCT {e} FROM {d} WHERE {c} IS NOT NULL ORDER BY 1").format(
            e=expr, d=default, c=col)).fetchall()
        return [str(r[0]) for r in rows]

    def add_partitions(self, tmp: QName, values: list[str]) -> int:
        """Partitions for new values, made standalone (attached once filled)."""
        p = self.state["partitioning"]
        for v in values:
            name = temp_name(f"{self.c.name}_{self._part_name(v)}"[:63], self.job)
            self.conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(
                sql.Identifier(self.c.schema, name), sql.Identifier(*tmp)))
        p["new"] = values
        return len(values)

    def fill_partitions(self, tmp: QName, values: list[str]) -> int:
        """Move the new values' rows out of the default partition, attach their partitions."""
        p = self.state["partitioning"]
        default = sql.Identifier(self.c.schema, temp_name(f"{self.c.name}_default"[:63],
                                                          self.job))
        col = sql.Identifier(p["column"])
        extra = {"partition_interval": p["unit"]}
        action = spec.PartitionBy(p["method"], (p["column"],))
        moved = 0
        for v in values:
            suffix = self._part_name(v)
            name = temp_name(f"{self.c.name}_{suffix}"[:63], self.job)
            part = sql.Identifier(self.c.schema, name)
            expr = (sql.SQL("date_trunc({}, {})::text").format(sql.Literal(p["unit"]), col)
                    if p["method"] == "range" else sql.SQL("{}::text").format(col))
            moved += self.conn.execute(sql.SQL(
                "WITH m AS (DELETE FROM {d} WHERE {e} = {v} RETURNING *) "
                "INSERT INTO {p} SELECT * FROM m").format(
                d=default, e=expr, v=sql.Literal(v), p=part)).rowcount
            self.conn.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} {}").format(
                sql.Identifier(*tmp), part, self._bound(action, extra, v)))
            self.state.setdefault("partitions", []).append(
                [self.c.schema, name, f"{self.c.name}_{suffix}"[:63]])
        return moved

    def _rename_partition_indexes(self, schema: str, part: str, original: str) -> None:
        """A partition's indexes, named after its temporary name by the server, are named
        after its final one."""
        rows = self.conn.execute(query("rebuild_index_names"),
                                 {"schema": schema, "name": original}).fetchall()
        for (name,) in rows:
            if str(name).startswith(part):
                final = (original + str(name)[len(part):]).encode()[:63].decode(errors="ignore")
                self.conn.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                    sql.Identifier(schema, str(name)), sql.Identifier(final)))
