"""``REBUILD TABLE``: a new table beside the old one, the actions applied while it is empty,
the rows copied (in key order, in batches) and the changes written meanwhile replayed; the
dependent views and materialized views made and populated against it; then, with writers
blocked (an EXCLUSIVE lock: readers go on), the last changes replayed and one transaction
swaps the names. Without a primary key the table is read-only for the whole copy."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from mvgraph.db.queries import query
from mvgraph.model.status import StepStatus
from mvgraph.rebuild import spec
from mvgraph.rebuild.book import TABLE_STEPS
from mvgraph.rebuild.capture import Copy
from mvgraph.rebuild.closure import Closure, read_closure, temp_name
from mvgraph.rebuild.control import RebuildFailed, Stopped
from mvgraph.rebuild.relations import (
    LOCK_TRIES,
    LOCK_TRY_S,
    Relations,
    hold,
    lock_all,
    resolve,
)

if TYPE_CHECKING:
    from mvgraph.rebuild.control import Steps

Conn = psycopg.Connection[tuple[object, ...]]
BATCH_ROWS = 20_000
REPLAY_ROWS = 10_000
ONLINE_BACKLOG = 2_000  # replay online until fewer changes than this are left
IN_PLACE = (spec.SetDefault, spec.DropDefault, spec.DropNotNull, spec.SetStorage)


class TableRebuild:
    """The steps of a table's rebuild."""

    STEPS = TABLE_STEPS

    def __init__(self, runner: Steps) -> None:
        self.r = runner
        self.conn = runner.conn
        self.book = runner.book
        self.stmt = runner.stmt
        self.job = runner.job
        self.closure: Closure | None = None  # read again by every run (prepare)
        self.rels: Relations | None = None
        self.copy: Copy | None = None

    # ---- driver -----------------------------------------------------------------------------
    def run(self) -> None:
        self._step("prepare", self.prepare, always=True)
        if self.book.done("swap") and self.book.steps["swap"].status is StepStatus.SKIPPED:
            return  # done in place
        self._step("create_tmp_table", self.create_tmp_table)
        self._step("get_src_table_snapshot", self.snapshot)
        if not self.online:
            self._window_readonly()
        else:
            self._step("insert", self.insert)
            self._window()
        self._step("cleanup", self.cleanup)

    def _step(self, name: str, work: Any, *, always: bool = False) -> None:
        if self.book.done(name) and not always:
            return
        self.r.check()
        if self.book.done(name):
            work()  # prepare: re-read what later steps need, nothing recorded
            return
        self.book.running(name)
        message = work()
        if not self.book.done(name):  # (a step whose work is DDL records it in its commit)
            self.book.finished(name, message=message if isinstance(message, str) else None)

    @property
    def online(self) -> bool:
        return bool(self.book.steps["prepare"].state.get("online"))

    # ---- prepare ----------------------------------------------------------------------------
    def prepare(self) -> str | None:
        """Resolve the table, read its closure, decide how to copy and plan every statement
        (first run); plain ALTERs run here."""
        oid, schema, name = resolve(self.conn, self.stmt, "table")
        closure = read_closure(self.conn, oid)
        if closure.problems:
            raise _fail(closure.problems[0])
        hold(self.r, closure)
        self.closure = closure
        state = dict(self.book.steps["prepare"].state)
        first = not state
        if first:
            self._check_binlog(closure)
            if all(_in_place(a) for a in self.stmt.actions):
                return self._in_place({"oid": oid})
            keys = self._online_key(closure)
            row = self.conn.execute(query("rebuild_unlogged"), {"oid": oid}).fetchone()
            state = {"oid": oid, "schema": schema, "name": name, "online": bool(keys),
                     "tmp": temp_name(name, self.job), "unlogged": bool(row and row[0])}
        self.rels = Relations(self.r, closure, state)
        self.copy = self._copy(closure, state)
        if first:
            new_key = next((a.columns for a in self.stmt.actions
                            if isinstance(a, spec.AlterPrimaryKey)), None)
            new_key, state["key_note"] = _key_with_partitioning(
                new_key, closure.primary_key, self.stmt.actions)
            self.rels.plan((schema, state["tmp"]), new_key, state["online"])
            if self.copy.log is not None:
                state["capture"] = [["TABLE", self.copy.log[1]],
                                    ["FUNCTION", temp_name(name, self.job, "rbfn")]]
                trigger = temp_name(name, self.job, "rbtg")
                state["capture_triggers"] = [trigger, trigger + "_t"]
            state["fingerprint"] = self.rels.fingerprint()
            self.book.progress("prepare", 1, 1, state=state)
        why = ("" if state["online"] else
               "; no primary key whose columns stay as they are: the table is read-only for "
               "the whole copy") + (state.get("key_note") or "")
        return (f"{len(closure.dependents)} dependent view(s) and materialized view(s), "
                f"{len(closure.referencing_fks)} foreign key(s) to it{why}")

    def _online_key(self, closure: Closure) -> tuple[str, ...]:
        altered = {a.column for a in self.stmt.actions if isinstance(a, spec.AlterType)}
        if not closure.primary_key or altered & set(closure.primary_key):
            return ()
        return closure.primary_key

    def _check_binlog(self, closure: Closure) -> None:
        row = self.conn.execute(query("rebuild_table_mode"), {"oid": closure.oid}).fetchone()
        wal = bool(row and row[0] == "wal")
        if (closure.publications or wal) and not self.stmt.params.binlog_mode:
            where = (f"publication {', '.join(closure.publications)}" if closure.publications
                     else "mvgraph's WAL tracking")
            raise _fail(f"table {closure.schema}.{closure.name} is published ({where}): "
                        "rebuild it WITH (binlog_mode); it then pauses after set_readonly "
                        "until RESUME, once consumers have caught up")

    def _in_place(self, state: dict[str, Any]) -> str:
        """Every action is one PostgreSQL does in place without a copy: ALTER TABLE."""
        assert self.closure is not None
        target = sql.Identifier(self.closure.schema, self.closure.name)
        with self.conn.transaction():
            _lock_retrying(self.conn, self.r, [target], "ACCESS EXCLUSIVE")
            self.conn.execute(sql.SQL("ALTER TABLE {} {}").format(
                target, sql.SQL(", ").join(_alter_clause(a) for a in self.stmt.actions)))
        state["in_place"] = True
        self.book.progress("prepare", 1, 1, state=state)
        for name in self.book.steps:
            if name != "prepare":
                self.book.skip(name, "not needed: ALTER TABLE did it in place")
        return "done in place by ALTER TABLE (no copy needed for these actions)"

    def _copy(self, closure: Closure, state: dict[str, Any]) -> Copy:
        using = {a.column: a.using_sql for a in self.stmt.actions
                 if isinstance(a, spec.AlterType) and a.using_sql}
        added = {a.column for a in self.stmt.actions if isinstance(a, spec.AddColumn)}
        columns = [c for c in closure.columns if not c.generated and c.name not in added]
        types = {c.name: c.type_sql for c in closure.columns}
        key = closure.primary_key if state["online"] else ()
        schema = closure.schema
        return Copy(source=(schema, closure.name), target=(schema, state["tmp"]),
                    key=key, key_types=tuple(types[k] for k in key),
                    columns=tuple(c.name for c in columns),
                    expressions=tuple(using.get(c.name) for c in columns),
                    overriding=any(c.identity == "a" for c in columns),
                    log=(schema, temp_name(closure.name, self.job, "rblog")) if key else None)

    # ---- create_tmp_table -------------------------------------------------------------------
    def create_tmp_table(self) -> str:
        assert self.closure is not None and self.rels is not None and self.copy is not None
        c = self.closure
        tmp = self.copy.target
        state = self.rels.state
        partition = next((a for a in self.stmt.actions if isinstance(a, spec.PartitionBy)), None)
        with self.conn.transaction():
            self.conn.execute(sql.SQL(
                "CREATE {unlogged}TABLE {tmp} (LIKE {src} INCLUDING DEFAULTS INCLUDING "
                "GENERATED INCLUDING IDENTITY INCLUDING STORAGE INCLUDING COMPRESSION "
                "INCLUDING CONSTRAINTS INCLUDING COMMENTS){part}").format(
                unlogged=sql.SQL("UNLOGGED " if state.get("unlogged") else ""),
                tmp=sql.Identifier(*tmp), src=sql.Identifier(c.schema, c.name),
                part=_partition_clause(partition, self.rels.partition_source())))
            self.rels.made("relation", tmp)
            self.rels.run(state["before"])
            for action in self.stmt.actions:
                if not isinstance(action, (spec.AlterPrimaryKey, spec.PartitionBy)):
                    self.conn.execute(sql.SQL("ALTER TABLE {} {}").format(
                        sql.Identifier(*tmp), _alter_clause(action)))
            parts = self.rels.partitions(tmp, partition, self.stmt.params)
            self.book.progress("prepare", state=state, conn=self.conn)
            message = f"{tmp[0]}.{tmp[1]}" + (f" with {parts} partition(s)" if parts else "")
            self.book.finished("create_tmp_table", message=message, conn=self.conn)
        return message

    # ---- get_src_table_snapshot -------------------------------------------------------------
    def snapshot(self) -> str:
        assert self.copy is not None and self.closure is not None
        row = self.conn.execute(query("rebuild_row_estimate"), {"oid": self.closure.oid}
                                ).fetchone()
        rows = int(str(row[0])) if row else 0
        if not self.online:
            return f"about {rows} rows; the table is read-only for the whole copy (no key)"
        assert self.copy.log is not None
        function = (self.closure.schema, temp_name(self.closure.name, self.job, "rbfn"))
        trigger = temp_name(self.closure.name, self.job, "rbtg")
        with self.conn.transaction():
            self.copy.create_log(self.conn, function, trigger, self.job)
            assert self.rels is not None
            self.rels.made("relation", self.copy.log)
            self.rels.made("function", function)
            self.rels.made_trigger(self.closure.oid, trigger)
            self.rels.made_trigger(self.closure.oid, trigger + "_t")
            message = f"about {rows} rows; changes from now on are captured"
            self.book.finished("get_src_table_snapshot", message=message, conn=self.conn)
        return message

    # ---- insert (online) --------------------------------------------------------------------
    def insert(self) -> str:
        assert self.copy is not None and self.closure is not None and self.rels is not None
        state = dict(self.book.steps["insert"].state)
        if not state.get("copied"):
            self._copy_batches(state)
            state["copied"] = True
            self.book.progress("insert", state=state)
        if not state.get("indexed"):
            with self.conn.transaction():
                self.rels.run(self.rels.state["after"])
                self.conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(*self.copy.target)))
                state["indexed"] = True
                self.book.progress("insert", state=state, conn=self.conn)
        replayed = self._catch_up()
        if not state.get("dependents"):
            self.rels.dependents(self.r.check, "insert")
            state["dependents"] = True
            self.book.progress("insert", state=state)
        replayed += self._catch_up()
        return (f"{state.get('rows', 0)} rows copied in {state.get('batches', 0)} batch(es); "
                f"{replayed} change(s) replayed online; "
                f"{len(self.closure.dependents)} dependent(s) made and populated")

    def _copy_batches(self, state: dict[str, Any]) -> None:
        assert self.copy is not None and self.closure is not None
        row = self.conn.execute(query("rebuild_row_estimate"), {"oid": self.closure.oid}
                                ).fetchone()
        batch = int(dict(self.stmt.params.extra).get("batch_rows") or BATCH_ROWS)
        total = max(1, -(-int(str(row[0]) if row else 0) // batch))
        while True:
            self.r.check()
            with self.conn.transaction():
                count, last = self.copy.batch(self.conn, state.get("after"), batch)
                if count:
                    state["after"] = last
                    state["rows"] = state.get("rows", 0) + count
                    state["batches"] = state.get("batches", 0) + 1
                    total = max(total, state["batches"])
                    self.book.progress("insert", state["batches"], total, state=state,
                                       message=f"{state['rows']} rows copied",
                                       conn=self.conn)
            if count < batch:
                return

    def _catch_up(self) -> int:
        """Replay online until the backlog is small (writers go on meanwhile)."""
        assert self.copy is not None
        done = 0
        for _ in range(1000):
            self.r.check()
            with self.conn.transaction():
                self.conn.execute(query("repeatable_read"))
                n = self.copy.replay(self.conn, REPLAY_ROWS)
            done += n
            if n < REPLAY_ROWS and self.copy.backlog(self.conn) < ONLINE_BACKLOG:
                return done
        return done

    # ---- the write-block window -------------------------------------------------------------
    def _window(self) -> None:
        """set_readonly .. swap in one transaction: writers wait from the lock to the commit."""
        assert self.copy is not None and self.closure is not None and self.rels is not None
        with self.conn.transaction():
            self.book.running("set_readonly")
            source = sql.Identifier(self.closure.schema, self.closure.name)
            _lock_retrying(self.conn, self.r, [source], "EXCLUSIVE")
            self.book.finished("set_readonly", message="writers wait from now until the swap")
            if self.stmt.params.binlog_mode:
                self._pause()
            self.book.running("check_snapshot")
            backlog = self.copy.backlog(self.conn)
            self.book.finished("check_snapshot",
                               message=f"{backlog} change(s) since the online catch-up")
            if backlog:
                self.book.running("re-insert")
                done = 0
                while True:
                    n = self.copy.replay(self.conn, REPLAY_ROWS)
                    done += n
                    self.book.progress("re-insert", done, backlog)
                    if n == 0:
                        break
                self.book.finished("re-insert", message=f"{done} change(s) replayed")
            else:
                self.book.skip("re-insert", "no change to replay")
            self._child_tables()
            self._swap()

    def _window_readonly(self) -> None:
        """No key to capture changes by: the table is read-only from the copy to the swap."""
        assert self.copy is not None and self.closure is not None and self.rels is not None
        with self.conn.transaction():
            self.book.running("insert")
            source = sql.Identifier(self.closure.schema, self.closure.name)
            _lock_retrying(self.conn, self.r, [source], "EXCLUSIVE")
            rows = self.copy.copy_all(self.conn)
            self.rels.run(self.rels.state["after"])
            self.rels.dependents(self.r.check, "insert")
            self.book.finished("insert", message=f"{rows} rows copied (read-only: no key)")
            self.book.running("set_readonly")
            self.book.finished("set_readonly", message="read-only since the copy began")
            if self.stmt.params.binlog_mode:
                self._pause()
            self.book.skip("check_snapshot", "no change possible: read-only since the copy")
            self.book.skip("re-insert", "no change possible: read-only since the copy")
            self._child_tables()
            self._swap()

    def _pause(self) -> None:
        """binlog_mode: wait, writers blocked, until RESUME (or a cancel)."""
        self.book.pause(True)
        self.book.progress("check_snapshot", message=(
            f"paused after set_readonly (binlog_mode): RESUME '{self.job}' once consumers "
            "have caught up"))
        try:
            while True:
                asked = self.r.control.asked or self.book.request()
                if asked == "resume":
                    return
                if asked in ("cancel", "lost", "suspend"):
                    raise Stopped(asked)
                time.sleep(0.2)
        finally:
            self.book.pause(False)

    def _child_tables(self) -> None:
        assert self.rels is not None and self.copy is not None
        names = ("check_additional_child_table", "create_additional_child_table",
                 "insert_additional_child_table")
        if not self.rels.list_or_range:
            for name in names:
                self.book.skip(name, "not a partitioned rebuild")
            return
        self.book.running(names[0])
        found = self.rels.new_partition_values(self.copy.target)
        self.book.finished(names[0], message=f"{len(found)} new partition value(s)")
        if not found:
            for name in names[1:]:
                self.book.skip(name, "no new partition")
            return
        self.book.running(names[1])
        made = self.rels.add_partitions(self.copy.target, found)
        self.book.finished(names[1], message=f"{made} partition(s) made")
        self.book.running(names[2])
        moved = self.rels.fill_partitions(self.copy.target, found)
        self.book.finished(names[2], message=f"{moved} row(s) moved out of the default partition")

    def _swap(self) -> None:
        assert self.rels is not None and self.copy is not None
        self.book.running("swap")
        self.rels.swap(self.copy.target, self.stmt.params.keep_source, is_table=True)
        self.book.finished("swap", conn=self.conn, message=self.rels.swap_message)

    # ---- cleanup ----------------------------------------------------------------------------
    def cleanup(self) -> str:
        assert self.rels is not None
        return self.rels.after_swap()


def _fail(message: str) -> Exception:
    return RebuildFailed(message)


_CONSTANT_WORDS = frozenset({"null", "true", "false"})
_CONSTRAINT_WORDS = frozenset({"not", "null", "constraint", "collate"})


def _in_place(action: spec.Action) -> bool:
    """PostgreSQL does it without rewriting the table: defaults, DROP NOT NULL, storage
    parameters, and ADD COLUMN with no default or a constant one (a literal, maybe cast),
    nullable or NOT NULL."""
    if isinstance(action, IN_PLACE):
        return True
    if not isinstance(action, spec.AddColumn):
        return False
    from mvgraph.sql.lexer import Kind, lex

    text = action.definition
    words = [x for x in lex(text) if x.kind is not Kind.COMMENT]
    lower = [text[x.start:x.end].lower() for x in words]
    if "default" not in lower:  # (a serial column has a default: nextval, a rewrite)
        return not ({"generated", "primary", "unique", "references", "check", "serial",
                     "bigserial", "smallserial", "serial2", "serial4", "serial8"} & set(lower))
    at = lower.index("default")
    after_cast = False
    for x, word in zip(words[at + 1:], lower[at + 1:], strict=True):
        if word == "::" or word == ":":
            after_cast = True
            continue
        if x.kind in (Kind.STRING, Kind.NUMBER) or word in _CONSTANT_WORDS:
            after_cast = False
            continue
        if x.kind is Kind.WORD and after_cast:
            continue  # the type of a cast
        if x.kind is Kind.WORD and word in _CONSTRAINT_WORDS:
            continue
        return False  # anything else (a call, an operator, a column): the copy decides
    return True


def _key_with_partitioning(new_key: tuple[str, ...] | None, key: tuple[str, ...],
                           actions: tuple[spec.Action, ...]) -> tuple[tuple[str, ...] | None, str]:
    """PostgreSQL's unique constraints on a partitioned table include the partition key: a
    primary key turning partitioned gets the partition columns it lacks (said in the note)."""
    partition = next((a for a in actions if isinstance(a, spec.PartitionBy)), None)
    wanted = new_key if new_key is not None else key
    if partition is None or not wanted:
        return new_key, ""
    missing = tuple(c for c in partition.columns if c not in wanted)
    if not missing:
        return new_key, ""
    extended = tuple(wanted) + missing
    return extended, (f"; the primary key ({', '.join(wanted)}) becomes "
                      f"({', '.join(extended)}): a partitioned table's primary key includes "
                      "its partition key")


def _alter_clause(action: spec.Action) -> sql.Composable:
    """One action as an ALTER TABLE clause (its SQL text as the caller wrote it)."""
    if isinstance(action, spec.AddColumn):
        return sql.SQL("ADD COLUMN {} {}").format(sql.Identifier(action.column),
                                                  sql.SQL(action.definition))
    if isinstance(action, spec.AlterType):
        using = sql.SQL(" USING {}").format(sql.SQL(action.using_sql)) if action.using_sql \
            else sql.SQL("")
        return sql.SQL("ALTER COLUMN {} TYPE {}{}").format(
            sql.Identifier(action.column), sql.SQL(action.type_sql), using)
    if isinstance(action, spec.SetDefault):
        return sql.SQL("ALTER COLUMN {} SET DEFAULT {}").format(
            sql.Identifier(action.column), sql.SQL(action.expression_sql))
    if isinstance(action, spec.DropDefault):
        return sql.SQL("ALTER COLUMN {} DROP DEFAULT").format(sql.Identifier(action.column))
    if isinstance(action, spec.SetNotNull):
        return sql.SQL("ALTER COLUMN {} SET NOT NULL").format(sql.Identifier(action.column))
    if isinstance(action, spec.DropNotNull):
        return sql.SQL("ALTER COLUMN {} DROP NOT NULL").format(sql.Identifier(action.column))
    if isinstance(action, spec.SetStorage):
        return sql.SQL("SET ({})").format(sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(k), sql.SQL(v)) if v is not None
            else sql.Identifier(k) for k, v in action.params))
    raise AssertionError(action)


def _partition_clause(action: spec.PartitionBy | None, kept: str | None) -> sql.Composable:
    if action is not None:
        return sql.SQL(" PARTITION BY {} ({})").format(
            sql.SQL(action.method.upper()),
            sql.SQL(", ").join(map(sql.Identifier, action.columns)))
    if kept:
        return sql.SQL(" PARTITION BY ") + sql.SQL(kept)
    return sql.SQL("")


def _lock_retrying(conn: Conn, runner: Steps, relations: list[sql.Composable],
                   mode: str) -> None:
    """Take ``mode`` locks in short tries (a long wait would queue every reader behind it),
    checking between tries whether the job was cancelled."""
    lock_all(conn, runner, relations, mode, LOCK_TRY_S, LOCK_TRIES)

