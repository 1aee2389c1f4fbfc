"""Online copy of a table with a primary key: the rows in key order in batches, and the
changes written meanwhile captured by a trigger into a log of keys and replayed (as pg_repack
and pg-osc do): a replayed key gets the row the table holds for it at replay time, or none.

The capture function is ``SECURITY DEFINER`` (the table owner's, who owns the log), with a
pinned search path; it only appends the written keys to the log. A TRUNCATE of the table
while it is rebuilt is refused (it would not be captured).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

Conn = psycopg.Connection[tuple[object, ...]]


@dataclass(frozen=True, slots=True)
class Copy:
    """How rows go from the old table to the new one."""

    source: tuple[str, str]
    target: tuple[str, str]
    key: tuple[str, ...]  # the old table's primary key (also a column set of the new table)
    key_types: tuple[str, ...]
    columns: tuple[str, ...]  # the new table's columns that are copied
    expressions: tuple[str | None, ...]  # USING text for a column, None: the column as is
    overriding: bool  # an identity column ALWAYS is copied: OVERRIDING SYSTEM VALUE
    log: tuple[str, str] | None = None  # the change log (online copy only)

    def _rel(self, name: tuple[str, str]) -> sql.Composable:
        return sql.Identifier(*name)

    def _select_list(self) -> sql.Composable:
        parts: list[sql.Composable] = []
        for column, expr in zip(self.columns, self.expressions, strict=True):
            parts.append(sql.SQL(expr) if expr is not None else sql.Identifier(column))
        return sql.SQL(", ").join(parts)

    def _insert_head(self) -> sql.Composable:
        return sql.SQL("INSERT INTO {} ({}){} ").format(
            self._rel(self.target), sql.SQL(", ").join(map(sql.Identifier, self.columns)),
            sql.SQL(" OVERRIDING SYSTEM VALUE") if self.overriding else sql.SQL(""))

    def _key_list(self, alias: str | None = None) -> sql.Composable:
        return sql.SQL(", ").join(sql.Identifier(alias, k) if alias else sql.Identifier(k)
                                  for k in self.key)

    def batch(self, conn: Conn, after: Sequence[str] | None, rows: int
              ) -> tuple[int, list[str] | None]:
        """Copy the next ``rows`` rows in key order after the key ``after`` (text values);
        returns how many were copied and the last key copied (None when none)."""
        where: sql.Composable = sql.SQL("")
        params: list[object] = []
        if after is not None:
            where = sql.SQL(" WHERE ({}) > ({})").format(
                self._key_list(), sql.SQL(", ").join(
                    sql.SQL("{}::{}").format(sql.Placeholder(), sql.SQL(t))
                    for t in self.key_types))
            params = list(after)
        source_name = sql.Identifier(self.source[1])
        stmt = sql.SQL(
            "WITH b AS MATERIALIZED (SELECT * FROM {src}{where} ORDER BY {key} LIMIT {n}), "
            "i AS ({insert} SELECT {select} FROM b AS {alias}) "
            "SELECT (SELECT count(*) FROM b), "
            "(SELECT ARRAY[{key_text}] FROM b ORDER BY {key_desc} LIMIT 1)"
        ).format(src=self._rel(self.source), where=where, key=self._key_list(),
                 n=sql.Literal(rows), insert=self._insert_head(), select=self._select_list(),
                 alias=source_name,
                 key_text=sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(k))
                                             for k in self.key),
                 key_desc=sql.SQL(", ").join(sql.SQL("{} DESC").format(sql.Identifier(k))
                                             for k in self.key))
        row = conn.execute(stmt, params).fetchone()
        assert row is not None
        count = int(str(row[0]))
        last = row[1]
        return count, (list(last) if isinstance(last, list) else None)

    def copy_all(self, conn: Conn) -> int:
        """Copy every row at once (the table is read-only meanwhile)."""
        stmt = sql.SQL("{insert} SELECT {select} FROM {src} AS {alias}").format(
            insert=self._insert_head(), select=self._select_list(),
            src=self._rel(self.source), alias=sql.Identifier(self.source[1]))
        return conn.execute(stmt).rowcount

    # ---- change log --------------------------------------------------------------------------
    def create_log(self, conn: Conn, function: tuple[str, str], trigger: str,
                   job: int) -> None:
        """The log table, the capture function and its trigger on the old table."""
        assert self.log is not None
        conn.execute(sql.SQL(
            "CREATE TABLE {log} (rb_seq bigserial PRIMARY KEY, {cols})").format(
            log=self._rel(self.log),
            cols=sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(k), sql.SQL(t))
                                    for k, t in zip(self.key, self.key_types, strict=True))))
        old = sql.SQL(", ").join(sql.SQL("OLD.{}").format(sql.Identifier(k)) for k in self.key)
        new = sql.SQL(", ").join(sql.SQL("NEW.{}").format(sql.Identifier(k)) for k in self.key)
        refused = (f"table {self.source[0]}.{self.source[1]} is being rebuilt (job {job}): "
                   "TRUNCATE waits until the rebuild ends")
        body = sql.SQL(
            "BEGIN\n"
            "  IF TG_OP = 'TRUNCATE' THEN\n"
            "    RAISE EXCEPTION USING ERRCODE = 'object_in_use', MESSAGE = {refused};\n"
            "  END IF;\n"
            "  IF TG_OP <> 'INSERT' THEN INSERT INTO {log} ({keys}) VALUES ({old}); END IF;\n"
            "  IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND ({old}) IS DISTINCT FROM ({new}))"
            " THEN INSERT INTO {log} ({keys}) VALUES ({new}); END IF;\n"
            "  RETURN NULL;\n"
            "END").format(refused=sql.Literal(refused), log=self._rel(self.log),
                          keys=self._key_list(), old=old, new=new).as_string(conn)
        conn.execute(sql.SQL(
            "CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER "
            "SET search_path = pg_catalog, pg_temp AS {body}").format(
            fn=sql.Identifier(*function), body=sql.Literal(body)))
        conn.execute(sql.SQL("REVOKE ALL ON FUNCTION {fn}() FROM PUBLIC").format(
            fn=sql.Identifier(*function)))
        conn.execute(sql.SQL(
            "CREATE TRIGGER {tg} AFTER INSERT OR UPDATE OR DELETE ON {src} "
            "FOR EACH ROW EXECUTE FUNCTION {fn}()").format(
            tg=sql.Identifier(trigger), src=self._rel(self.source), fn=sql.Identifier(*function)))
        conn.execute(sql.SQL(
            "CREATE TRIGGER {tg} BEFORE TRUNCATE ON {src} "
            "FOR EACH STATEMENT EXECUTE FUNCTION {fn}()").format(
            tg=sql.Identifier(trigger + "_t"), src=self._rel(self.source),
            fn=sql.Identifier(*function)))

    def backlog(self, conn: Conn) -> int:
        """Changes logged and not yet replayed."""
        assert self.log is not None
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(self._rel(self.log))
                           ).fetchone()
        return int(str(row[0])) if row else 0

    def replay(self, conn: Conn, limit: int) -> int:
        """Replay up to ``limit`` logged changes (oldest first): each key's row is deleted
        from the new table and copied again from the old one as it is now; returns how many
        log entries were consumed. Runs in the caller's transaction, which must either block
        writers or be REPEATABLE READ (one snapshot: a change committed meanwhile stays in the
        log for the next round)."""
        assert self.log is not None
        row = conn.execute(sql.SQL(
            "SELECT max(rb_seq) FROM (SELECT rb_seq FROM {log} ORDER BY rb_seq LIMIT {n}) s"
        ).format(log=self._rel(self.log), n=sql.Literal(limit))).fetchone()
        upto = row[0] if row else None
        if upto is None:
            return 0
        keys = self._key_list()
        logged = sql.SQL("SELECT DISTINCT {keys} FROM {log} WHERE rb_seq <= {upto}").format(
            keys=keys, log=self._rel(self.log), upto=sql.Literal(upto))
        conn.execute(sql.SQL("DELETE FROM {target} t USING ({logged}) k WHERE {match}").format(
            target=self._rel(self.target), logged=logged,
            match=sql.SQL(" AND ").join(
                sql.SQL("t.{k} = k.{k}").format(k=sql.Identifier(k)) for k in self.key)))
        conn.execute(sql.SQL(
            "{insert} SELECT {select} FROM {src} AS {alias} WHERE ({src_keys}) IN ({logged})"
        ).format(insert=self._insert_head(), select=self._select_list(),
                 src=self._rel(self.source), alias=sql.Identifier(self.source[1]),
                 src_keys=self._key_list(self.source[1]), logged=logged))
        return conn.execute(sql.SQL("DELETE FROM {log} WHERE rb_seq <= {upto}").format(
            log=self._rel(self.log), upto=sql.Literal(upto))).rowcount
