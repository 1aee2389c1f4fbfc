"""Rebuild under faults and steering, end to end: real worker processes (killed with SIGKILL,
their leases running out), a server restart, SUSPEND / RESUME / CANCEL / cleanup, the rights
of the submitter, and two rebuilds of one table at once.

Every test runs a writer (single-row inserts and updates of ``app.items``, each acknowledged
write recorded) and a reader (``SELECT`` from the top dependent view ``app.l3``) throughout,
and ends with: the job's final status, no reader error, no acknowledged write lost, and the
schema's catalog (relations, columns and types, defaults, indexes, constraints, triggers,
grants, comments, owners, view definitions) either exactly as before (the rebuild did not
complete) or exactly as expected after it (it completed), never half swapped, and nothing
whose name holds ``__rb`` (the rebuild's temporary objects) left behind.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg
import pytest

from mvgraph.db.connect import connect
from mvgraph.db.install import init
from mvgraph.db.outage import session_lost
from mvgraph.db.scripts import run_script
from mvgraph.frontend import execute_script
from tests.conftest import cli
from tests.integration.test_jobs import wait_for, worker
from tests.pgserver import bindir, cluster

Conn = psycopg.Connection[tuple[object, ...]]
LEASE = ("--lease", "3", "--heartbeat", "1", "--poll", "0.3")
BIG = 300_000  # rows: with batches of BATCH rows the copy takes many batches
BATCH = 2_000
SMALL = 5_000
FIRST_KEY = 10_000_000  # keys the writer inserts
ALTER = "ALTER COLUMN v TYPE bigint"

SETUP = """
CREATE SCHEMA app;
CREATE TABLE app.items (id integer PRIMARY KEY, v integer NOT NULL DEFAULT 0, note text,
                        CONSTRAINT items_v_positive CHECK (v >= 0));
COMMENT ON TABLE app.items IS 'the items';
COMMENT ON COLUMN app.items.v IS 'the value';
INSERT INTO app.items SELECT g, g % 10, 'n' || g FROM generate_series(1, {rows}) g;
CREATE INDEX items_v ON app.items (v);
GRANT SELECT ON app.items TO PUBLIC;
CREATE VIEW app.l1 AS SELECT id, v, note FROM app.items WHERE v > 2;
CREATE MATERIALIZED VIEW app.l2 AS SELECT v, count(*) AS n FROM app.l1 GROUP BY v;
CREATE UNIQUE INDEX l2_v ON app.l2 (v);
COMMENT ON MATERIALIZED VIEW app.l2 IS 'per v';
CREATE VIEW app.l3 AS SELECT v, n * 2 AS n2 FROM app.l2;
GRANT SELECT ON app.l3 TO PUBLIC;
ANALYZE app.items;
"""
REBUILT = {"items", "l1", "l2", "l3"}  # the relations whose column v becomes bigint


def make_app(conn: Conn, rows: int) -> None:
    run_script(conn, SETUP.format(rows=rows))


# ---- the catalog ---------------------------------------------------------------------------

def acl(column: str) -> str:
    """A privileges array in a fixed order (the same rights, whatever order granted them)."""
    return (f"coalesce((SELECT string_agg(x::text, ',' ORDER BY x::text) "
            f"FROM unnest({column}) x), '')")


CATALOG = f"""
SELECT 'relation', c.relname::text, c.relkind::text, pg_get_userbyid(c.relowner)::text,
       coalesce(obj_description(c.oid, 'pg_class'), ''), {acl("c.relacl")},
       coalesce(c.reloptions::text, '') || c.relpersistence::text || c.relreplident::text,
       CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) ELSE '' END
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'app' AND c.relkind <> 'i'
UNION ALL
SELECT 'column', c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod),
       a.attnotnull::text, coalesce(pg_get_expr(d.adbin, d.adrelid), ''),
       coalesce(col_description(c.oid, a.attnum), ''), {acl("a.attacl")}
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
 WHERE n.nspname = 'app' AND c.relkind <> 'i'
UNION ALL
SELECT 'index', i.relname::text, t.relname::text, pg_get_indexdef(i.oid),
       pg_get_userbyid(i.relowner)::text, coalesce(obj_description(i.oid, 'pg_class'), ''),
       x.indisvalid::text, ''
  FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
  JOIN pg_namespace n ON n.oid = t.relnamespace
 WHERE n.nspname = 'app'
UNION ALL
SELECT 'constraint', k.conname::text, t.relname::text, pg_get_constraintdef(k.oid),
       k.convalidated::text, '', '', ''
  FROM pg_constraint k JOIN pg_class t ON t.oid = k.conrelid
  JOIN pg_namespace n ON n.oid = t.relnamespace
 WHERE n.nspname = 'app'
UNION ALL
SELECT 'trigger', g.tgname::text, t.relname::text, pg_get_triggerdef(g.oid), '', '', '', ''
  FROM pg_trigger g JOIN pg_class t ON t.oid = g.tgrelid
  JOIN pg_namespace n ON n.oid = t.relnamespace
 WHERE n.nspname = 'app' AND NOT g.tgisinternal
UNION ALL
SELECT 'function', p.proname::text, pg_get_userbyid(p.proowner)::text, '', '', '', '', ''
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'app'
UNION ALL
SELECT 'schema', n.nspname::text, pg_get_userbyid(n.nspowner)::text,
       {acl("n.nspacl")}, '', '', '', ''
  FROM pg_namespace n WHERE n.nspname = 'app'
"""

LEFTOVERS = r"""
SELECT 'relation ' || c.oid::regclass::text FROM pg_class c
 WHERE c.relname ~ '__(rb|old_)'
UNION ALL
SELECT 'function ' || p.oid::regprocedure::text FROM pg_proc p WHERE p.proname ~ '__rb'
UNION ALL
SELECT 'trigger ' || g.tgname || ' on ' || g.tgrelid::regclass::text FROM pg_trigger g
 WHERE g.tgname ~ '__rb'
"""


def catalog(conn: Conn) -> list[tuple[str, ...]]:
    """The schema ``app`` as a user sees it, the rebuild's temporary objects left out (they
    are checked by :func:`leftovers`)."""
    rows = [tuple(str(x) for x in r) for r in conn.execute(CATALOG).fetchall()]
    return sorted(r for r in rows if "__rb" not in "".join(r[1:3]))


def leftovers(conn: Conn) -> list[str]:
    return sorted(str(r[0]) for r in conn.execute(LEFTOVERS).fetchall())


def after_alter(before: list[tuple[str, ...]], column: str = "v", new_type: str = "bigint"
                ) -> list[tuple[str, ...]]:
    """The catalog expected after ``ALTER COLUMN v TYPE bigint`` (or another column's type):
    the column of the table and of every dependent has the new type; nothing else changes."""
    out = []
    for r in before:
        if r[0] == "column" and r[1] in REBUILT and r[2] == column:
            r = (*r[:3], new_type, *r[4:])
        out.append(r)
    return sorted(out)


def same_alias(rows: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """View definitions with a relation's own name as its alias (``FROM app.items items``, as
    a rebuilt dependent is written: names are replaced token by token, the old name kept as
    the alias) read as without it; they mean the same."""
    return sorted((*r[:7], re.sub(r"\b(app\.(\w+)) \2\b", r"\1", r[7]))
                  if r[0] == "relation" else r for r in rows)


def assert_not_half_swapped(conn: Conn, before: list[tuple[str, ...]], done: bool) -> None:
    now = catalog(conn)
    expected = after_alter(before) if done else before
    if done:
        now, expected = same_alias(now), same_alias(expected)
    assert now == expected, _diff(expected, now)
    assert leftovers(conn) == []


def _diff(expected: list[tuple[str, ...]], now: list[tuple[str, ...]]) -> str:
    missing = [r for r in expected if r not in now]
    extra = [r for r in now if r not in expected]
    return f"missing: {missing}\nunexpected: {extra}"


# ---- writer and reader ---------------------------------------------------------------------

class Traffic:
    """A writer and a reader running until stopped; both reconnect after a lost session (a
    server restart), which is not counted as an error, and everything else is."""

    def __init__(self, dsn: str, keys: int) -> None:
        self.dsn = dsn
        self.keys = keys
        self.stop_event = threading.Event()
        self.acked: dict[int, int] = {}  # key -> v of its last acknowledged write
        self.unsure: set[int] = set()  # keys whose last write's outcome is unknown
        self.writes = 0
        self.reads = 0
        self.read_errors: list[str] = []
        self.write_errors: list[str] = []
        self.conns: list[Conn] = []
        self.threads = [threading.Thread(target=self._loop, args=(self._write,), daemon=True),
                        threading.Thread(target=self._loop, args=(self._read,), daemon=True)]

    def start(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(20)
        hung = [t.name for t in self.threads if t.is_alive()]
        for c in self.conns:  # a statement still blocked: cancel it, say so
            if hung and not c.closed:
                c.cancel_safe()
        assert not hung, "the writer or the reader is still blocked after the rebuild ended"

    def _loop(self, body: Callable[[Conn, int], None]) -> None:
        i = 0
        while not self.stop_event.is_set():
            try:
                c = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
            except psycopg.OperationalError:
                time.sleep(0.1)  # the server is away
                continue
            self.conns.append(c)
            with c:
                while not self.stop_event.is_set():
                    i += 1
                    try:
                        body(c, i)
                    except psycopg.Error as exc:
                        if session_lost(exc, c):
                            break  # reconnect
                        errors = self.read_errors if body == self._read else self.write_errors
                        errors.append(str(exc).strip().splitlines()[0])
                        time.sleep(0.01)

    def _write(self, c: Conn, i: int) -> None:
        if i % 2:
            key, v = FIRST_KEY + i, i % 10
            sql = "INSERT INTO app.items (id, v, note) VALUES (%s, %s, 'w')"
            args: tuple[int, ...] = (key, v)
        else:
            key, v = i * 7919 % self.keys + 1, i % 7
            sql = "UPDATE app.items SET v = %s WHERE id = %s"
            args = (v, key)
        self.unsure.add(key)
        c.execute(sql, args)
        self.unsure.discard(key)
        self.acked[key] = v
        self.writes += 1

    def _read(self, c: Conn, _i: int) -> None:
        c.execute("SELECT count(*), sum(n2) FROM app.l3").fetchone()
        self.reads += 1

    def lost(self, conn: Conn) -> dict[int, tuple[int, object]]:
        """Acknowledged writes the table does not hold (key -> (written, found))."""
        rows = dict(conn.execute("SELECT id, v FROM app.items WHERE id = ANY(%s)",
                                 [list(self.acked)]).fetchall())
        return {k: (v, rows.get(k)) for k, v in self.acked.items()
                if k not in self.unsure and rows.get(k) != v}


@contextmanager
def traffic(dsn: str, keys: int) -> Iterator[Traffic]:
    t = Traffic(dsn, keys).start()
    try:
        wait_for(lambda: t.writes > 5 and t.reads > 5, timeout=20)
        yield t
    finally:
        t.stop()


def check_traffic(t: Traffic, conn: Conn) -> None:
    assert t.read_errors == [], t.read_errors[:5]
    assert t.write_errors == [], t.write_errors[:5]
    assert t.writes > 20 and t.reads > 20
    assert t.lost(conn) == {}


# ---- jobs and workers ----------------------------------------------------------------------

def submit(conn: Conn, statement: str) -> int:
    row = conn.execute("SELECT mvgraph.submit(%s)", [statement]).fetchone()
    assert row is not None
    return int(str(row[0]))


def rebuild_statement(*params: str, action: str = ALTER) -> str:
    with_sql = f" WITH ({', '.join(params)})" if params else ""
    return f"ASYNC REBUILD TABLE app.items{with_sql} {action}"


def job_row(conn: Conn, job: int) -> dict[str, Any]:
    row = conn.execute("SELECT status, error, attempt, paused FROM mvgraph.job_data "
                       "WHERE id = %s", [job]).fetchone()
    assert row is not None
    return {"status": row[0], "error": row[1], "attempt": row[2], "paused": row[3]}


def step(conn: Conn, job: int, name: str) -> dict[str, Any]:
    """A step's row, and its line of ``mvgraph.rebuild_progress`` (all None before the
    runner wrote the steps)."""
    row = conn.execute("""
        SELECT s.status, s.progress_done, s.state, p.status, p.progress, p.message
          FROM mvgraph.job_step_data s
          JOIN mvgraph.rebuild_progress(%s) p ON p.step_id = s.seq
         WHERE s.job_id = %s AND s.name = %s""", [str(job), job, name]).fetchone()
    if row is None:
        row = (None, 0, {}, None, "0/1", None)
    return {"status": row[0], "done": row[1] or 0, "state": row[2] or {}, "shown": row[3],
            "progress": row[4], "message": row[5]}


def copying(conn: Conn, job: int, batches: int = 1) -> bool:
    """``insert`` shows 'doing' with at least ``batches`` batches copied."""
    s = step(conn, job, "insert")
    return bool(s["shown"] == "doing" and int(str(s["progress"]).split("/")[0]) >= batches)


def ended(conn: Conn, job: int) -> str:
    status = str(job_row(conn, job)["status"])
    return status if status in ("done", "failed", "cancelled", "suspended") else ""


def a_worker(dsn: str, *args: str) -> AbstractContextManager[subprocess.Popen[str]]:
    """A worker process with a short lease (3 s) and heartbeat (1 s)."""
    return worker(dsn, *LEASE, *args)


def kill_9(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)


def blocked(dsn: str) -> bool:
    """Whether a write to the table waits (for the rebuild's write block)."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SET lock_timeout = '300ms'")
        try:
            c.execute("UPDATE app.items SET note = note WHERE id = 1")
        except psycopg.errors.LockNotAvailable:
            return True
    return False


# ---- 1. kill -9 during the copy ------------------------------------------------------------

def test_kill_9_during_insert_a_second_worker_resumes_from_the_copy_position(
        conn: Conn, db_dsn: str) -> None:
    make_app(conn, BIG)
    before = catalog(conn)
    job = submit(conn, rebuild_statement(f"batch_rows = {BATCH}"))
    with traffic(db_dsn, BIG) as t:
        with a_worker(db_dsn) as first:
            wait_for(lambda: copying(conn, job, 3), timeout=60)
            kill_9(first)
        killed = step(conn, job, "insert")  # what the killed attempt committed
        assert killed["status"] == "running" and killed["state"].get("after"), killed
        assert job_row(conn, job)["status"] == "running"  # until its lease runs out
        seen: list[int] = []

        def resumed_copy_or_end() -> bool:
            row, s = job_row(conn, job), step(conn, job, "insert")
            if row["attempt"] >= 2 and s["status"] == "running" and s["state"].get("after"):
                seen.append(int(s["done"]))
            return bool(ended(conn, job))

        with a_worker(db_dsn):
            wait_for(resumed_copy_or_end, timeout=90, every=0.02)
    row = job_row(conn, job)
    assert (row["status"], row["error"], row["attempt"]) == ("done", None, 2), row
    assert seen == sorted(seen) and all(n >= killed["done"] for n in seen), (killed, seen)
    final = step(conn, job, "insert")
    # the copy went on from where it was: never more batches than the rows need
    batches = int(final["state"]["batches"])
    assert batches <= -(-(BIG + t.writes) // BATCH) + 1, final
    check_traffic(t, conn)
    assert_not_half_swapped(conn, before, done=True)


# ---- 2. kill -9 while writers are blocked ----------------------------------------------------

def test_kill_9_while_writers_are_blocked_frees_them_and_the_next_worker_pauses_again(
        conn: Conn, db_dsn: str) -> None:
    make_app(conn, SMALL)
    before = catalog(conn)
    job = submit(conn, rebuild_statement("binlog_mode"))

    def paused(attempt: int) -> bool:
        row = job_row(conn, job)
        return bool(row["paused"] and row["attempt"] == attempt
                    and step(conn, job, "set_readonly")["status"] == "done")

    with traffic(db_dsn, SMALL) as t:
        with a_worker(db_dsn) as first:
            wait_for(lambda: paused(1), timeout=60)
            assert blocked(db_dsn)  # writers wait ...
            reads = t.reads
            wait_for(lambda: t.reads > reads + 5)  # ... readers go on
            writes = t.writes
            kill_9(first)
        # the lock died with the worker's session: writers go on at once, nothing swapped
        assert not blocked(db_dsn)
        wait_for(lambda: t.writes > writes + 5, timeout=10)
        assert catalog(conn) == before
        with a_worker(db_dsn):
            wait_for(lambda: paused(2), timeout=60)  # the next worker pauses again
            assert blocked(db_dsn)
            execute_script_all(conn, f"RESUME '{job}';")
            wait_for(lambda: ended(conn, job), timeout=60)
    row = job_row(conn, job)
    assert (row["status"], row["error"], row["paused"]) == ("done", None, False), row
    check_traffic(t, conn)
    assert_not_half_swapped(conn, before, done=True)


def test_without_a_primary_key_a_paused_rebuild_takes_resume(conn: Conn, db_dsn: str) -> None:
    """No key to capture changes by: the table is read-only from the copy to the swap, in one
    transaction that also records the dependents it makes. Paused there (binlog_mode), it
    takes RESUME at once (which waited for that transaction before, and it for RESUME)."""
    make_app(conn, SMALL)
    run_script(conn, "ALTER TABLE app.items DROP CONSTRAINT items_pkey;")
    before = catalog(conn)
    job = submit(conn, rebuild_statement("binlog_mode"))
    with traffic(db_dsn, SMALL) as t, a_worker(db_dsn):
        wait_for(lambda: job_row(conn, job)["paused"], timeout=60)
        assert blocked(db_dsn)
        with connect(db_dsn) as steer:
            steer.execute("SET statement_timeout = '10s'")
            execute_script_all(steer, f"RESUME '{job}';")
        wait_for(lambda: ended(conn, job), timeout=60)
    row = job_row(conn, job)
    assert (row["status"], row["error"]) == ("done", None), row
    check_traffic(t, conn)
    assert_not_half_swapped(conn, before, done=True)


def execute_script_all(conn: Conn, text: str) -> list[Any]:
    return list(execute_script(conn, text))


# ---- 3. SUSPEND, then RESUME or cleanup ------------------------------------------------------

def test_suspend_during_insert_then_cleanup_by_procedure_and_by_cli_then_resume(
        capsys: pytest.CaptureFixture[str], conn: Conn, db_dsn: str) -> None:
    make_app(conn, BIG)
    before = catalog(conn)
    with traffic(db_dsn, BIG) as t, a_worker(db_dsn):
        def suspend_while_copying() -> int:
            job = submit(conn, rebuild_statement(f"batch_rows = {BATCH}"))
            wait_for(lambda: copying(conn, job), timeout=60)
            execute_script_all(conn, f"SUSPEND '{job}';")
            wait_for(lambda: ended(conn, job), timeout=30)
            assert job_row(conn, job)["status"] == "suspended"
            assert step(conn, job, "insert")["status"] == "pending"
            assert leftovers(conn), "a suspended rebuild keeps what it made for RESUME"
            assert catalog(conn) == before
            return job

        cleaned = suspend_while_copying()
        conn.execute("CALL mvgraph.clean_rebuild_tmp_tables(%s)", [str(cleaned)])
        assert job_row(conn, cleaned)["status"] == "cancelled"
        assert_not_half_swapped(conn, before, done=False)

        by_cli = suspend_while_copying()
        code, out, err = cli(capsys, "--dsn", db_dsn, "rebuild", "cleanup", str(by_cli))
        assert code == 0, err
        assert f"rebuild {by_cli}: dropped" in out
        for made in ("items__rb", "items__rblog", "items__rbfn", "items__rbtg"):
            assert f"app.{made}{by_cli}" in out, out  # what it made, by name
        assert job_row(conn, by_cli)["status"] == "cancelled"
        assert_not_half_swapped(conn, before, done=False)

        job = suspend_while_copying()
        position = step(conn, job, "insert")["done"]
        execute_script_all(conn, f"RESUME '{job}';")
        wait_for(lambda: ended(conn, job) == "done", timeout=90)
    assert step(conn, job, "insert")["state"]["batches"] >= position
    check_traffic(t, conn)
    assert_not_half_swapped(conn, before, done=True)


# ---- 4. CANCEL -------------------------------------------------------------------------------

def test_cancel_during_insert_leaves_the_originals_and_nothing_else(
        conn: Conn, db_dsn: str) -> None:
    make_app(conn, BIG)
    before = catalog(conn)
    job = submit(conn, rebuild_statement(f"batch_rows = {BATCH}"))
    with traffic(db_dsn, BIG) as t, a_worker(db_dsn):
        wait_for(lambda: copying(conn, job), timeout=60)
        execute_script_all(conn, f"CANCEL JOB {job};")
        wait_for(lambda: ended(conn, job), timeout=30)
    row = job_row(conn, job)
    assert row["status"] == "cancelled", row
    assert step(conn, job, "insert")["shown"] == "error"
    check_traffic(t, conn)
    assert_not_half_swapped(conn, before, done=False)


def test_a_cancel_that_interrupts_the_bookkeeping_session_cancels_the_rebuild(
        conn: Conn, db_dsn: str) -> None:
    """CANCEL interrupts the backend its steps name (the rebuild's bookkeeping session, which
    reads the job's request between batches): the rebuild ends cancelled, not failed with
    'canceling statement due to user request', and drops what it made."""
    make_app(conn, BIG)
    before = catalog(conn)
    job = submit(conn, rebuild_statement(f"batch_rows = {BATCH}"))
    with traffic(db_dsn, BIG) as t, a_worker(db_dsn):
        wait_for(lambda: copying(conn, job), timeout=60)
        with connect(db_dsn) as steer, steer.transaction():
            steer.execute("SELECT FROM mvgraph.job_data WHERE id = %s FOR UPDATE", [job])
            wait_for(lambda: conn.execute(  # its next look at the request waits for the row
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                "AND wait_event_type = 'Lock'", [f"mvgraph rebuild {job}"]).fetchone() == (1,))
            steer.execute("SELECT mvgraph.cancel_job(%s)", [job])
        wait_for(lambda: ended(conn, job), timeout=30)
    row = job_row(conn, job)
    assert (row["status"], row["error"]) == ("cancelled", "cancelled"), row
    check_traffic(t, conn)
    assert_not_half_swapped(conn, before, done=False)


# ---- 5. a server restart ---------------------------------------------------------------------

def test_a_server_restart_during_insert_requeues_the_job_and_it_completes() -> None:
    with cluster(bindir()) as pg:
        with connect(pg.uri) as c:
            init(c)
            make_app(c, BIG)
            before = catalog(c)
            job = submit(c, rebuild_statement(f"batch_rows = {BATCH}"))
        with traffic(pg.uri, BIG) as t, a_worker(pg.uri) as proc:
            with connect(pg.uri) as c:
                wait_for(lambda: copying(c, job, 3), timeout=60)
            pg.restart(down_s=0.5)
            with connect(pg.uri) as c:
                wait_for(lambda: ended(c, job), timeout=90)
                assert proc.poll() is None
                row = job_row(c, job)
                assert (row["status"], row["error"]) == ("done", None), row
                assert row["attempt"] >= 2
            writes = t.writes
            wait_for(lambda: t.writes > writes + 5)
        with connect(pg.uri) as c:
            check_traffic(t, c)
            assert_not_half_swapped(c, before, done=True)
            assert c.execute("SELECT count(*) FROM mvgraph.job_step_data WHERE job_id = %s "
                             "AND status IN ('failed', 'cancelled')", [job]).fetchone() == (0,)


# ---- 6. rights -------------------------------------------------------------------------------

@pytest.fixture
def roles(conn: Conn) -> Iterator[tuple[str, str]]:
    """An owner of the schema ``app`` and an operator who does not own it (both may submit)."""
    suffix = conn.info.dbname
    owner, operator = f"rb_owner_{suffix}", f"rb_operator_{suffix}"
    run_script(conn, f"""
        CREATE ROLE {owner} LOGIN; CREATE ROLE {operator} LOGIN;
        SELECT mvgraph.grant_privileges('{owner}', 'operator');
        SELECT mvgraph.grant_privileges('{operator}', 'operator');
    """)
    try:
        yield owner, operator
    finally:
        for role in (owner, operator):
            run_script(conn, f"DROP OWNED BY {role} CASCADE; DROP ROLE {role};")


def test_only_the_owner_may_rebuild_and_the_job_runs_with_the_owners_login(
        conn: Conn, db_dsn: str, roles: tuple[str, str]) -> None:
    owner, operator = roles
    make_app(conn, SMALL)
    run_script(conn, f"""
        ALTER SCHEMA app OWNER TO {owner};
        ALTER TABLE app.items OWNER TO {owner}; ALTER VIEW app.l1 OWNER TO {owner};
        ALTER MATERIALIZED VIEW app.l2 OWNER TO {owner}; ALTER VIEW app.l3 OWNER TO {owner};
        GRANT USAGE ON SCHEMA app TO {operator};
    """)
    before = catalog(conn)
    as_role = psycopg.conninfo.make_conninfo

    def submit_as(role: str) -> int:
        with connect(as_role(db_dsn, user=role)) as c:
            return submit(c, rebuild_statement())

    with traffic(db_dsn, SMALL) as t, a_worker(db_dsn):
        refused = submit_as(operator)
        wait_for(lambda: ended(conn, refused), timeout=60)
        row = job_row(conn, refused)
        assert row["status"] == "failed", row
        error = str(row["error"])
        assert "\n" not in error and owner in error and "app.items" in error, error
        assert_not_half_swapped(conn, before, done=False)
        job = submit_as(owner)
        wait_for(lambda: ended(conn, job), timeout=60)
        row = job_row(conn, job)
        assert (row["status"], row["error"]) == ("done", None), row
    who = conn.execute("SELECT DISTINCT backend_pid IS NOT NULL FROM mvgraph.job_step_data "
                       "WHERE job_id = %s AND status = 'done'", [job]).fetchall()
    assert who == [(True,)]
    check_traffic(t, conn)
    assert_not_half_swapped(conn, before, done=True)
    owners = {r[3] for r in catalog(conn) if r[0] == "relation"}
    assert owners == {owner}


# ---- 7. two rebuilds of one table at once ----------------------------------------------------

def test_two_rebuilds_of_one_table_at_once_one_is_refused_and_the_table_stays_whole(
        conn: Conn, db_dsn: str) -> None:
    """Two workers' worth of slots, two rebuilds of one table: the one that comes second is
    refused at once, naming the other; the first completes; no write is lost."""
    make_app(conn, BIG)
    before = catalog(conn)
    note = "ALTER COLUMN note TYPE varchar(100)"
    with traffic(db_dsn, BIG) as t, a_worker(db_dsn, "--concurrency", "2"):
        first = submit(conn, rebuild_statement(f"batch_rows = {BATCH}"))
        second = submit(conn, rebuild_statement(f"batch_rows = {BATCH}", action=note))
        wait_for(lambda: ended(conn, first) and ended(conn, second), timeout=120)
    rows = {j: job_row(conn, j) for j in (first, second)}
    check_traffic(t, conn)
    assert leftovers(conn) == []
    done = [j for j, r in rows.items() if r["status"] == "done"]
    refused = [r for r in rows.values() if r["status"] == "failed"]
    assert len(done) == 1 and len(refused) == 1, rows
    assert re.search(r"being rebuilt by mvgraph rebuild [0-9]+", str(refused[0]["error"])), \
        refused
    assert "\n" not in str(refused[0]["error"])
    expected = (after_alter(before) if done == [first]
                else after_alter(before, "note", "character varying(100)"))
    now = catalog(conn)
    assert same_alias(now) == same_alias(expected), _diff(expected, now)


def test_a_rebuild_is_refused_while_another_of_the_table_is_suspended(
        conn: Conn, db_dsn: str) -> None:
    """A suspended rebuild keeps capturing the table's changes for its RESUME; a second
    rebuild would swap the table out from under it. The second is refused, naming the first
    and how to go on; the first, resumed, completes."""
    make_app(conn, BIG)
    before = catalog(conn)
    with traffic(db_dsn, BIG) as t, a_worker(db_dsn):
        first = submit(conn, rebuild_statement(f"batch_rows = {BATCH}"))
        wait_for(lambda: copying(conn, first), timeout=60)
        execute_script_all(conn, f"SUSPEND '{first}';")
        wait_for(lambda: ended(conn, first), timeout=30)
        second = submit(conn, rebuild_statement(action="ALTER COLUMN note TYPE varchar(100)"))
        wait_for(lambda: ended(conn, second), timeout=60)
        row = job_row(conn, second)
        assert row["status"] == "failed", row
        assert f"rebuild {first}" in row["error"] and f"RESUME '{first}'" in row["error"], row
        assert catalog(conn) == before
        execute_script_all(conn, f"RESUME '{first}';")
        wait_for(lambda: ended(conn, first), timeout=90)
    assert job_row(conn, first)["status"] == "done"
    check_traffic(t, conn)
    assert_not_half_swapped(conn, before, done=True)


# ---- the copy's position ---------------------------------------------------------------------

def test_a_copy_in_many_batches_goes_on_from_the_last_key_copied(conn: Conn,
                                                                  db_dsn: str) -> None:
    """Batches follow each other in key order, a composite key of mixed types included: every
    row is copied once, in as many batches as the rows need."""
    from mvgraph.model.status import RunStatus
    from mvgraph.rebuild import service

    run_script(conn, """
        CREATE TABLE pairs (k text, n integer, v integer, PRIMARY KEY (k, n));
        INSERT INTO pairs SELECT chr(97 + g % 5), g, g FROM generate_series(1, 100) g;
        ANALYZE pairs;
    """)
    with connect(db_dsn) as c:
        job, status = service.run_here(c, "REBUILD TABLE pairs WITH (batch_rows = 7) "
                                          "ALTER COLUMN v TYPE bigint")
    assert status is RunStatus.OK
    state = step(conn, job, "insert")["state"]
    assert (state["rows"], state["batches"]) == (100, 15), state
    assert conn.execute("SELECT count(*), count(DISTINCT (k, n)), sum(v) FROM pairs"
                        ).fetchone() == (100, 100, 5050)


# ---- a session lost between a step's commit and its record -----------------------------------

COMMITTED = {  # the work of a step (or phase) has committed when this counts 1
    "create_tmp_table": "SELECT count(*) FROM pg_class WHERE relname ~ '^items__rb[0-9]+$'",
    "get_src_table_snapshot": "SELECT count(*) FROM pg_class "
                              "WHERE relname ~ '^items__rblog[0-9]+$'",
    "indexes": "SELECT count(*) FROM pg_index x JOIN pg_class c ON c.oid = x.indrelid "
               "WHERE c.relname ~ '^items__rb[0-9]+$' AND x.indisprimary",
    "view_create_tmp_table": "SELECT count(*) FROM pg_class WHERE relname ~ '^l2__rb[0-9]+$'",
}
SAME_VIEW = "REBUILD MATERIALIZED VIEW app.l2 AS SELECT v, count(*) AS n FROM app.l1 GROUP BY v"


@pytest.mark.parametrize("moment", list(COMMITTED))
def test_a_session_lost_right_after_a_step_committed_resumes_without_redoing_it(
        conn: Conn, db_dsn: str, moment: str) -> None:
    """A worker killed (or a server stopped) right after the commit of a step's work, before
    anything else: the next attempt goes on from there; it does not make what exists again."""
    from mvgraph.model.status import RunStatus
    from mvgraph.rebuild import service
    from mvgraph.rebuild.parse import parse_rebuild
    from mvgraph.rebuild.runner import Runner

    make_app(conn, SMALL)
    before = catalog(conn)
    text = (SAME_VIEW if moment.startswith("view") else
            "REBUILD TABLE app.items ALTER COLUMN v TYPE bigint")
    with connect(db_dsn) as c:
        transaction = c.transaction
        fired: list[bool] = []

        @contextmanager
        def then_lost(*args: Any, **kwargs: Any) -> Iterator[Any]:
            with transaction(*args, **kwargs) as tx:
                yield tx
            if (not fired and c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
                    and conn.execute(COMMITTED[moment]).fetchone() == (1,)):
                fired.append(True)
                raise psycopg.OperationalError("simulated: the session was lost")

        c.transaction = then_lost  # type: ignore[method-assign]
        with pytest.raises(psycopg.OperationalError, match="simulated"):
            service.run_here(c, text)
    row = conn.execute("SELECT max(id) FROM mvgraph.job_data").fetchone()
    assert row is not None
    job = int(str(row[0]))
    assert job_row(conn, job)["status"] == "running"
    stmt = parse_rebuild(text)
    assert stmt is not None
    with connect(db_dsn) as c, service.twin(c, "resumed") as b:
        status = Runner(c, b, job, None, stmt, "public").run()
    assert status is RunStatus.OK, job_row(conn, job)
    if text == SAME_VIEW:  # the same query: the same catalog
        assert same_alias(catalog(conn)) == same_alias(before)
        assert leftovers(conn) == []
    else:
        assert_not_half_swapped(conn, before, done=True)
