"""The relations a rebuild makes beside the originals and the swap that puts them in place.

Everything that recreates a piece of the originals is computed once, in ``prepare``, as SQL
text (the server's own definitions, names rewritten token by token, see
:mod:`mvgraph.rebuild.closure`) and kept in the prepare step's state, so that a resumed run
makes the same objects under the same names.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql

from mvgraph.db.queries import query
from mvgraph.model.names import RelationName
from mvgraph.rebuild import spec
from mvgraph.rebuild.attached import attached_ddl
from mvgraph.rebuild.closure import Closure, Dependent, rename_relations, temp_name
from mvgraph.rebuild.control import NothingToRebuild, RebuildFailed
from mvgraph.rebuild.partitions import Partitions

if TYPE_CHECKING:
    from mvgraph.rebuild.control import Steps

Conn = psycopg.Connection[tuple[object, ...]]
QName = tuple[str, str]
BEFORE_COPY = frozenset({"options", "comments", "statistics"})
AFTER_COPY = frozenset({"primary_key", "indexes", "foreign_keys", "replica_identity"})
# grants last: they may revoke the owner's own privileges, which the copy needs
AT_SWAP = frozenset({"triggers", "rules", "policies", "owner", "grants"})
DEPENDENT = frozenset({"options", "indexes", "grants", "comments", "owner", "triggers",
                       "rules"})
TRACK_TRIGGER = "mvgraph_track"  # the name mvgraph's tracking triggers have
LOCK_TRY_S = 1.0  # a lock is tried this long at a time (a long wait queues every reader) ...
LOCK_TRIES = 60  # ... this many times


def resolve(conn: Conn, stmt: spec.RebuildStatement, wanted: str) -> tuple[int, str, str]:
    """The relation a rebuild names: (oid, schema, name); a clear error when it is not there,
    is not a ``wanted`` ('table' / 'materialized view'), or the caller is not its owner."""
    name = ".".join(sql.Identifier(p).as_string(None)
                    for p in ((stmt.schema, stmt.name) if stmt.schema else (stmt.name,)))
    row = conn.execute(query("rebuild_target"), {"name": name}).fetchone()
    if row is None and stmt.if_exists:
        raise NothingToRebuild(f"{wanted} {name} does not exist: nothing to rebuild (IF EXISTS)")
    if row is None:
        raise RebuildFailed(f"{wanted} {name} does not exist (names resolve through the "
                            "submitter's search_path)")
    oid, schema, rel, kind, owner, may = row
    kinds = ("r", "p") if wanted == "table" else ("m",)
    if kind not in kinds:
        other = "REBUILD MATERIALIZED VIEW" if kind == "m" else "REBUILD TABLE"
        raise RebuildFailed(f"{schema}.{rel} is not a {wanted}; use {other}")
    if not may:
        raise RebuildFailed(f"rebuilding {schema}.{rel} needs its owner's rights ({owner}); "
                            f"run it as {owner} or a member of it")
    return int(str(oid)), str(schema), str(rel)


HOLD_NAMESPACE = 0x7262  # "rb": high 32 bits of a rebuild's hold on a relation


def hold(runner: Steps, closure: Closure) -> None:
    """One rebuild at a time of a relation and of each of its dependents (a second one would
    swap out the first one's result and lose the writes made since, or bring back what it
    replaced): session-level advisory locks on their oids, held by the rebuild's bookkeeping
    session (``mvgraph rebuild <job>``), so they last while the rebuild runs and die with it
    (a killed worker holds nothing). A rebuild that finds one held stops at once, naming the
    rebuild that holds it; nothing changed. Also (first run of a table's rebuild) the change
    capture of another rebuild that did not end (suspended, interrupted) refuses it."""
    conn = runner.book.conn
    state = runner.book.steps["prepare"].state
    if state.get("oid") not in (None, closure.oid):
        raise RebuildFailed(
            f"{closure.schema}.{closure.name} was replaced since this rebuild began (another "
            "rebuild or DDL): this one stops, what it made is dropped; submit it again")
    for oid, schema, name in [(closure.oid, closure.schema, closure.name)] + [
            (d.oid, d.schema, d.name) for d in closure.dependents]:
        key = (HOLD_NAMESPACE << 32) | oid
        row = conn.execute(query("rebuild_hold"), {"key": key}).fetchone()
        if row and row[0]:
            continue
        row = conn.execute(query("rebuild_holder"), {"key": key}).fetchone()
        who = str(row[0]) if row and row[0] else "another session"
        whose = (f" (of {closure.schema}.{closure.name})" if oid != closure.oid else "")
        raise RebuildFailed(
            f"{schema}.{name}{whose} is being rebuilt by {who}: one rebuild at a time of a "
            "relation and its dependents; this one stops, nothing changed")
    if state:
        return
    others = sorted({int(m[1]) for r in conn.execute(query("rebuild_capture_triggers"),
                                                     {"oid": closure.oid}).fetchall()
                     if (m := re.search(r"__rbtg([0-9]+)(_t)?$", str(r[0])))
                     and int(m[1]) != runner.job})
    if others:
        n = others[0]
        raise RebuildFailed(
            f"{closure.schema}.{closure.name} is being rebuilt by rebuild {n}, which did not "
            f"end (suspended or interrupted; its change capture is on the table): RESUME "
            f"'{n}', or clean it up with CALL mvgraph.clean_rebuild_tmp_tables('{n}'); this "
            "one stops, nothing changed")


def lock_all(conn: Conn, runner: Steps, relations: Sequence[sql.Composable], mode: str,
             try_s: float, tries: int) -> None:
    """Lock ``relations`` in ``mode`` in short tries, inside the caller's transaction: a
    long wait would queue every later session behind it. Fails naming the holders."""
    if not relations:
        return
    stmt = sql.SQL("LOCK TABLE {} IN {} MODE").format(sql.SQL(", ").join(relations),
                                                      sql.SQL(mode))
    for attempt in range(tries):
        runner.check()
        try:
            with conn.transaction():
                conn.execute(query("rebuild_lock_timeout"), {"ms": f"{int(try_s * 1000)}ms"})
                conn.execute(stmt)
                conn.execute(query("rebuild_lock_timeout"), {"ms": "0"})
            return
        except (pgerrors.LockNotAvailable, pgerrors.DeadlockDetected):  # the try gives way
            if attempt == tries - 1:
                raise RebuildFailed(
                    f"could not lock {sql.SQL(', ').join(relations).as_string(conn)} in "
                    f"{mode} mode in {tries} tries of {try_s:g}s; sessions holding it: "
                    f"{_holders(conn)}") from None
            time.sleep(0.05)


def _holders(conn: Conn) -> str:
    row = conn.execute(query("rebuild_lock_holders"), {"pid": conn.info.backend_pid}
                       ).fetchone()
    return str(row[0]) if row and row[0] else "none now"


class Relations(Partitions):
    """The new relations of one rebuild: made, recorded, swapped."""

    def __init__(self, runner: Steps, closure: Closure, state: dict[str, Any]) -> None:
        self.r = runner
        self.conn = runner.conn
        self.job = runner.job
        self.c = closure
        self.state = state
        self.swap_message = ""

    # ---- recording --------------------------------------------------------------------------
    def made(self, kind: str, name: QName) -> None:
        """Record a relation or function just made (in the transaction that made it)."""
        q = "rebuild_oid" if kind == "relation" else "rebuild_function_oid"
        row = self.conn.execute(query(q), {"schema": name[0], "name": name[1]}).fetchone()
        assert row is not None, name
        self.conn.execute(query("rebuild_made"), {"job": self.job, "kind": kind, "oid": row[0],
                                                  "schema": name[0], "name": name[1]})

    def made_trigger(self, table: int, name: str) -> None:
        self.conn.execute(query("rebuild_made"), {"job": self.job, "kind": "trigger",
                                                  "oid": table, "schema": self.c.schema,
                                                  "name": name})

    def run(self, statements: list[str]) -> None:
        for text in statements:
            self.conn.execute(sql.SQL(text))

    # ---- planning (prepare, first run) ------------------------------------------------------
    def plan(self, tmp: QName, new_key: tuple[str, ...] | None, online: bool) -> None:
        """Compute every statement the later steps run, into the state."""
        c = self.c
        old = c.oid
        before = attached_ddl(self.conn, old, tmp, self.job, include=BEFORE_COPY)
        after_parts = AFTER_COPY - ({"primary_key"} if new_key is not None else set())
        after = attached_ddl(self.conn, old, tmp, self.job, include=after_parts)
        final = (c.schema, c.name)  # these run after the renames
        swap = [a for a in attached_ddl(self.conn, old, final, self.job, include=AT_SWAP)
                if not _mvgraph_trigger(a.statement.as_string(self.conn))]
        after_sql = [a.statement.as_string(self.conn) for a in after]
        indexes = [list(a.index) for a in before + after if a.index]
        self.state["statistics"] = [list(a.statistics) for a in before if a.statistics]
        if new_key is not None:
            pk = c.primary_key_name or f"{c.name}_pkey"
            pk_tmp = temp_name(pk, self.job)
            after_sql.insert(0, sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({})")
                             .format(sql.Identifier(*tmp), sql.Identifier(pk_tmp),
                                     sql.SQL(", ").join(map(sql.Identifier, new_key)))
                             .as_string(self.conn))
            indexes.append([pk_tmp, pk])
            if online and c.primary_key:
                after_sql.append(sql.SQL("CREATE INDEX {} ON {} ({})").format(
                    sql.Identifier(temp_name(c.name, self.job, "rbkey")), sql.Identifier(*tmp),
                    sql.SQL(", ").join(map(sql.Identifier, c.primary_key))).as_string(self.conn))
                self.state["drop_at_swap"] = [temp_name(c.name, self.job, "rbkey")]
        renames: dict[QName, QName] = {(c.schema, c.name): tmp}
        deps: list[dict[str, Any]] = []
        for d in c.dependents:
            dtmp = (d.schema, temp_name(d.name, self.job))
            renames[(d.schema, d.name)] = dtmp
            deps.append(self._dependent_plan(d, dtmp, renames))
        self.state.update({
            "before": [a.statement.as_string(self.conn) for a in before], "after": after_sql,
            "swap": [a.statement.as_string(self.conn) for a in swap], "indexes": indexes,
            "dependents": deps,
            "fks": [[list(t), name, definition] for t, name, definition in c.referencing_fks]})

    def _dependent_plan(self, d: Dependent, tmp: QName,
                        renames: dict[QName, QName]) -> dict[str, Any]:
        body = rename_relations(d.definition.strip().rstrip(";"), renames)
        word = "MATERIALIZED VIEW" if d.kind == "m" else "VIEW"
        create = sql.SQL("CREATE {} {} AS {}{}").format(
            sql.SQL(word), sql.Identifier(*tmp), sql.SQL(body),
            sql.SQL(" WITH NO DATA" if d.kind == "m" else "")).as_string(self.conn)
        attached = attached_ddl(self.conn, d.oid, tmp, self.job, include=DEPENDENT,
                                renames=renames)
        return {"oid": d.oid, "schema": d.schema, "name": d.name, "kind": d.kind,
                "tmp": tmp[1], "populated": d.populated, "create": create,
                "attached": [a.statement.as_string(self.conn) for a in attached],
                "indexes": [list(a.index) for a in attached if a.index]}

    # ---- making -----------------------------------------------------------------------------
    def plan_view(self, tmp: QName, query_sql: str) -> None:
        """A materialized view's new definition and its dependents, into the state."""
        c = self.c
        attached = attached_ddl(self.conn, c.oid, tmp, self.job, include=DEPENDENT)
        create = sql.SQL("CREATE MATERIALIZED VIEW {} AS {} WITH NO DATA").format(
            sql.Identifier(*tmp), sql.SQL(query_sql)).as_string(self.conn)
        renames: dict[QName, QName] = {(c.schema, c.name): tmp}
        deps: list[dict[str, Any]] = []
        for d in c.dependents:
            dtmp = (d.schema, temp_name(d.name, self.job))
            renames[(d.schema, d.name)] = dtmp
            deps.append(self._dependent_plan(d, dtmp, renames))
        self.state.update({"before": [create], "after": [
            a.statement.as_string(self.conn) for a in attached], "swap": [], "fks": [],
            "indexes": [list(a.index) for a in attached if a.index], "dependents": deps})

    def dependents(self, check: Callable[[], None], step: str, *, make: bool = True,
                   populate: bool = True, first: dict[str, Any] | None = None) -> None:
        """Make the dependents against the new relations, then populate the materialized
        views among them (each was populated before); ``first``: a new materialized view
        populated before them."""
        deps = self.state["dependents"]
        for d in deps if make else ():
            check()
            if exists(self.conn, d["schema"], d["tmp"]):
                continue  # made by an earlier attempt
            word = "materialized view" if d["kind"] == "m" else "view"
            try:
                with self.conn.transaction():
                    self.run([d["create"], *d["attached"]])
                    self.made("relation", (d["schema"], d["tmp"]))
            except psycopg.Error as exc:
                raise RebuildFailed(f"dependent {word} {d['schema']}.{d['name']} does not fit "
                                    f"the rebuilt relation: {_first(exc)}") from None
        if not populate:
            return
        todo = ([first] if first else []) + [d for d in deps if d["kind"] == "m"
                                              and d["populated"]]
        for i, d in enumerate(todo, 1):
            check()
            with self.conn.transaction():
                self.conn.execute(sql.SQL("REFRESH MATERIALIZED VIEW {}").format(
                    sql.Identifier(d["schema"], d["tmp"])))
            self.r.book.progress(step, message=(
                f"materialized view {d['schema']}.{d['name']} populated ({i}/{len(todo)})"))

    # ---- what changed meanwhile ----------------------------------------------------------------
    def fingerprint(self) -> str:
        """A digest of what this rebuild copies of the originals."""
        oids = [self.c.oid] + [d.oid for d in self.c.dependents]
        row = self.conn.execute(query("rebuild_fingerprint"), {"oids": oids}).fetchone()
        return str(row[0]) if row else ""

    def unchanged_since_prepare(self) -> None:
        """With the originals locked (the swap): no DDL changed them since ``prepare`` read
        them, else the swap would install what was planned from the old ones."""
        planned = self.state.get("fingerprint")
        if planned and planned != self.fingerprint():
            raise RebuildFailed(
                f"{self.c.schema}.{self.c.name} or a dependent changed (DDL) since this rebuild "
                "read them: this one stops, what it made is dropped; submit it again")

    # ---- the swap ---------------------------------------------------------------------------
    def swap(self, tmp: QName, keep_source: bool, is_table: bool) -> None:
        """In the caller's transaction (writers already blocked for a table): the originals
        and their dependents give way, the new ones take their names."""
        c = self.c
        old = sql.Identifier(c.schema, c.name)
        deps = self.state["dependents"]
        # LOCK takes tables and views (a materialized view is locked by its DROP below), in
        # the order readers take them: a query locks the view it names, then what the view
        # reads (the other order deadlocks with a reader between its two locks)
        lock_all(self.conn, self.r, [
            sql.Identifier(d["schema"], d["name"]) for d in reversed(deps) if d["kind"] == "v"]
            + ([old] if is_table else []), "ACCESS EXCLUSIVE", LOCK_TRY_S, LOCK_TRIES)
        lock_all(self.conn, self.r, [sql.Identifier(*t) for t, _n, _d in self.state["fks"]],
                 "SHARE ROW EXCLUSIVE", LOCK_TRY_S, LOCK_TRIES)
        if is_table:
            self._sequences(tmp)
            for t, name, _definition in self.state["fks"]:
                self.conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                    sql.Identifier(*t), sql.Identifier(name)))
        self.unchanged_since_prepare()
        self._follow(tmp)  # before the drops: mvgraph's state must not go with the originals
        for d in reversed(deps):
            word = "MATERIALIZED VIEW" if d["kind"] == "m" else "VIEW"
            self.conn.execute(sql.SQL("DROP {} {}").format(
                sql.SQL(word), sql.Identifier(d["schema"], d["name"])))
        rel_word = sql.SQL("TABLE" if is_table else "MATERIALIZED VIEW")
        kept = temp_name(c.name, self.job, "old_")
        if keep_source:
            self.conn.execute(sql.SQL("ALTER {} {} RENAME TO {}").format(
                rel_word, old, sql.Identifier(kept)))
            for _tmp_index, original in self.state["indexes"]:
                self.conn.execute(sql.SQL("ALTER INDEX IF EXISTS {} RENAME TO {}").format(
                    sql.Identifier(c.schema, original),
                    sql.Identifier(temp_name(original, self.job, "old_"))))
            for schema, _tmp, original in self.state.get("statistics", []):
                self.conn.execute(sql.SQL("ALTER STATISTICS IF EXISTS {} RENAME TO {}").format(
                    sql.Identifier(schema, original),
                    sql.Identifier(temp_name(original, self.job, "old_"))))
            for _schema, _part, original in self.state.get("partitions", []):
                self.conn.execute(sql.SQL("ALTER TABLE IF EXISTS {} RENAME TO {}").format(
                    sql.Identifier(c.schema, original),
                    sql.Identifier(temp_name(original, self.job, "old_"))))
            for trigger in self.state.get("capture_triggers", []):
                self.conn.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                    sql.Identifier(trigger), sql.Identifier(c.schema, kept)))
        else:
            self.conn.execute(sql.SQL("DROP {} {}").format(rel_word, old))
        for name in self.state.get("drop_at_swap", []):
            self.conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(c.schema, name)))
        self.conn.execute(sql.SQL("ALTER {} {} RENAME TO {}").format(
            rel_word, sql.Identifier(*tmp), sql.Identifier(c.name)))
        self._rename_indexes(c.schema, self.state["indexes"])
        for schema, stat_tmp, original in self.state.get("statistics", []):
            self.conn.execute(sql.SQL("ALTER STATISTICS {} RENAME TO {}").format(
                sql.Identifier(schema, stat_tmp), sql.Identifier(original)))
        for schema, part, original in self.state.get("partitions", []):
            self.conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                sql.Identifier(schema, part), sql.Identifier(original)))
            self._rename_partition_indexes(schema, part, original)
        for d in deps:
            word_d = "MATERIALIZED VIEW" if d["kind"] == "m" else "VIEW"
            self.conn.execute(sql.SQL("ALTER {} {} RENAME TO {}").format(
                sql.SQL(word_d), sql.Identifier(d["schema"], d["tmp"]),
                sql.Identifier(d["name"])))
            self._rename_indexes(d["schema"], d["indexes"])
        for t, name, definition in self.state["fks"]:  # they name the table: the new one now
            self.conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {} NOT VALID").format(
                sql.Identifier(*t), sql.Identifier(name),
                sql.SQL(definition)))
        self.run(self.state.get("swap", []))
        for pub in self.c.publications:
            self.conn.execute(sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                sql.Identifier(pub), old))
        if is_table and self.state.get("tracking"):
            from mvgraph.tracking.triggers import set_mode
            set_mode(self.conn, RelationName(c.schema, c.name), self.state["tracking"])
        for kind, name in self.state.get("capture", []):
            self.conn.execute(sql.SQL("DROP {} IF EXISTS {}{}").format(
                sql.SQL(kind), sql.Identifier(c.schema, name),
                sql.SQL("()" if kind == "FUNCTION" else "")))
        self.conn.execute(query("rebuild_forget"), {"job": self.job})
        self.swap_message = (f"{c.schema}.{c.name} and {len(deps)} dependent(s) swapped"
                             + (f"; the old one kept as {c.schema}.{kept}" if keep_source
                                else ""))

    def _rename_indexes(self, schema: str, pairs: list[list[str]]) -> None:
        for tmp_name, original in pairs:
            self.conn.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                sql.Identifier(schema, tmp_name), sql.Identifier(original)))

    def _sequences(self, tmp: QName) -> None:
        """Sequences behind the old columns: serial ones move to the new table (dropping the
        old table would drop them), identity ones hand their position on."""
        identity = {col.name for col in self.c.columns if col.identity}
        for seq, column in self.c.owned_sequences:
            if column in identity:
                self.conn.execute(query("rebuild_identity_position"), {
                    "old": sql.Identifier(*seq).as_string(self.conn),
                    "new": sql.Identifier(*tmp).as_string(self.conn), "column": column})
            else:
                self.conn.execute(sql.SQL("ALTER SEQUENCE {} OWNED BY {}").format(
                    sql.Identifier(*seq), sql.Identifier(tmp[0], tmp[1], column)))

    def _follow(self, tmp: QName) -> None:
        """mvgraph's state follows the objects by name (schedules, tracking, view settings);
        the table's tracking mode is set up again on the new table after the renames."""
        deps = self.state["dependents"]
        old = [self.c.oid] + [d["oid"] for d in deps]
        new = [_oid(self.conn, *tmp)] + [_oid(self.conn, d["schema"], d["tmp"]) for d in deps]
        row = self.conn.execute(query("rebuild_table_mode"), {"oid": self.c.oid}).fetchone()
        self.state["tracking"] = str(row[0]) if row and row[0] else None
        self.conn.execute(query("rebuild_follow"), {"old": old, "new": new})

    def after_swap(self) -> str:
        """Foreign keys re-pointed or copied NOT VALID are validated (writers go on)."""
        done = []
        for t, name, _d in self.state.get("fks", []):
            with self.conn.transaction():
                self.conn.execute(sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(
                    sql.Identifier(*t), sql.Identifier(name)))
            done.append(name)
        return f"{len(done)} foreign key(s) validated" if done else "nothing left to do"


def _mvgraph_trigger(statement: str) -> bool:
    """A statement about mvgraph's own tracking trigger (its creation, enabled state or
    comment): the tracking is set up again after the swap, not copied."""
    from mvgraph.sql.lexer import Kind, lex

    return any(x.kind in (Kind.WORD, Kind.IDENT)
               and statement[x.start:x.end].strip('"') == TRACK_TRIGGER
               for x in lex(statement))


def exists(conn: Conn, schema: str, name: str) -> bool:
    return conn.execute(query("rebuild_oid"), {"schema": schema, "name": name}
                        ).fetchone() is not None


def _oid(conn: Conn, schema: str, name: str) -> int:
    row = conn.execute(query("rebuild_oid"), {"schema": schema, "name": name}).fetchone()
    assert row is not None, (schema, name)
    return int(str(row[0]))


def _first(exc: psycopg.Error) -> str:
    return (exc.diag.message_primary or str(exc)).splitlines()[0] + (
        f" ({exc.diag.message_detail})" if exc.diag.message_detail else "")
