"""Rebuild against a real server: a column used by three layers of views and materialized
views changes type with writers and readers running; a materialized view gets a new query;
failures leave the originals as they were; cleanup removes what an interrupted rebuild left."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
import pytest

from mvgraph.model.status import RunStatus
from mvgraph.rebuild import service
from mvgraph.rebuild.control import Control

Conn = psycopg.Connection[tuple[object, ...]]

SETUP = """
CREATE TABLE app.items (id integer PRIMARY KEY, v integer NOT NULL, note text);
COMMENT ON TABLE app.items IS 'the items';
INSERT INTO app.items SELECT g, g % 10, 'n' || g FROM generate_series(1, 5000) g;
CREATE INDEX items_v ON app.items (v);
CREATE VIEW app.l1 AS SELECT id, v, note FROM app.items WHERE v > 2;
CREATE MATERIALIZED VIEW app.l2 AS SELECT v, count(*) AS n FROM app.l1 GROUP BY v;
CREATE UNIQUE INDEX l2_v ON app.l2 (v);
COMMENT ON MATERIALIZED VIEW app.l2 IS 'per v';
CREATE VIEW app.l3 AS SELECT v, n * 2 AS n2 FROM app.l2;
"""


def catalog(conn: Conn) -> list[tuple[object, ...]]:
    """What a user sees of the schema: relations, columns and types, indexes, comments."""
    return conn.execute("""
        SELECT c.relname, c.relkind::text, a.attname, format_type(a.atttypid, a.atttypmod),
               obj_description(c.oid, 'pg_class'), pg_get_userbyid(c.relowner)
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
                                  AND NOT a.attisdropped
         WHERE n.nspname = 'app' ORDER BY 1, 3""").fetchall()


@pytest.fixture
def app(conn: Conn) -> Iterator[Conn]:
    conn.execute("CREATE SCHEMA app")
    for stmt in SETUP.split(";\n"):
        if stmt.strip():
            conn.execute(stmt)
    yield conn


def _writer(dsn: str, stop: threading.Event, acked: dict[int, int], errors: list[str]) -> None:
    with psycopg.connect(dsn, autocommit=True) as w:
        i = 0
        while not stop.is_set():
            i += 1
            key = 10_000 + i
            try:
                w.execute("INSERT INTO app.items VALUES (%s, %s, 'w')", (key, i % 10))
                w.execute("UPDATE app.items SET v = %s WHERE id = %s", (i % 7, i % 5000 + 1))
                acked[key] = i % 10
                acked[i % 5000 + 1] = i % 7
            except psycopg.Error as exc:
                errors.append(str(exc))


def _reader(dsn: str, stop: threading.Event, errors: list[str]) -> None:
    with psycopg.connect(dsn, autocommit=True) as r:
        while not stop.is_set():
            try:
                r.execute("SELECT count(*) FROM app.l3").fetchone()
            except psycopg.Error as exc:
                errors.append(str(exc))


def test_column_type_changes_under_three_layers_with_writers_and_readers(
        app: Conn, db_dsn: str) -> None:
    stop = threading.Event()
    acked: dict[int, int] = {}
    werr: list[str] = []
    rerr: list[str] = []
    threads = [threading.Thread(target=_writer, args=(db_dsn, stop, acked, werr)),
               threading.Thread(target=_reader, args=(db_dsn, stop, rerr))]
    for t in threads:
        t.start()
    try:
        with psycopg.connect(db_dsn, autocommit=True) as conn:
            job, status = service.run_here(conn, "REBUILD TABLE app.items "
                                           "ALTER COLUMN v TYPE bigint")
            worker_pid = conn.info.backend_pid
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert status is RunStatus.OK, app.execute("SELECT error FROM mvgraph.job WHERE id = %s",
                                                (job,)).fetchone()
    assert werr == [] and rerr == []
    types = dict(app.execute("""
        SELECT a.attrelid::regclass::text, format_type(a.atttypid, a.atttypmod)
          FROM pg_attribute a WHERE a.attname = 'v'
           AND a.attrelid IN ('app.items'::regclass, 'app.l1'::regclass, 'app.l2'::regclass,
                              'app.l3'::regclass)""").fetchall())
    assert set(types.values()) == {"bigint"}, types
    rows = dict(app.execute("SELECT id, v FROM app.items").fetchall())
    lost = {k: v for k, v in acked.items() if rows.get(k) != v}
    assert lost == {}
    assert app.execute("SELECT count(*) FROM app.l3").fetchone() is not None
    steps = [r[2:4] for r in service.progress(app, job)]
    assert ("swap", "done") in steps
    # the pid shown is the backend that did the copy (what a cancel interrupts)
    pids = {r[2]: r[7] for r in service.progress(app, job)}
    assert pids["insert"] == pids["swap"] == worker_pid


def test_a_materialized_view_gets_a_new_query(app: Conn, db_dsn: str) -> None:
    before = app.execute("SELECT n2 FROM app.l3 ORDER BY v").fetchall()
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        _job, status = service.run_here(
            conn, "REBUILD MATERIALIZED VIEW app.l2 AS "
                  "SELECT v, count(*) + 1 AS n FROM app.l1 GROUP BY v")
    assert status is RunStatus.OK
    after = app.execute("SELECT n2 FROM app.l3 ORDER BY v").fetchall()
    assert [a[0] for a in after] == [b[0] + 2 for b in before]
    assert app.execute("SELECT obj_description('app.l2'::regclass, 'pg_class')").fetchone() \
        == ("per v",)
    assert app.execute("SELECT count(*) FROM pg_indexes WHERE indexname = 'l2_v'").fetchone() \
        == (1,)


def test_a_dependent_that_no_longer_fits_fails_before_the_swap(app: Conn, db_dsn: str) -> None:
    before = catalog(app)
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        job, status = service.run_here(
            conn, "REBUILD MATERIALIZED VIEW app.l2 AS SELECT v FROM app.l1 GROUP BY v")
    assert status is RunStatus.FAILED
    error = app.execute("SELECT error FROM mvgraph.job WHERE id = %s", (job,)).fetchone()
    assert error is not None and "app.l3" in str(error[0]) and "n" in str(error[0])
    assert catalog(app) == before


def test_cancel_leaves_the_originals(app: Conn, db_dsn: str) -> None:
    before = catalog(app)
    control = Control()
    control.ask("cancel")
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        _job, status = service.run_here(conn, "REBUILD TABLE app.items ADD COLUMN w int "
                                        "DEFAULT random()::int", control)
    assert status is RunStatus.CANCELLED
    assert catalog(app) == before


def test_async_rebuild_runs_in_a_worker_and_cleanup_after_suspend(app: Conn, db_dsn: str,
                                                                   tmp_path: object) -> None:
    """ASYNC REBUILD through the SQL front-end returns the job id at once; a worker runs it;
    the seed's progress function shows its steps."""
    import subprocess
    import sys
    import time

    from mvgraph.frontend import execute_script

    with psycopg.connect(db_dsn, autocommit=True) as conn:
        out = list(execute_script(conn, "ASYNC REBUILD TABLE app.items "
                                        "ADD COLUMN c text NOT NULL DEFAULT 'a', "
                                        "ALTER PRIMARY KEY (id, v);"))
    job = out[0].job
    assert job is not None and out[0].rows == [(str(job),)]
    worker = subprocess.Popen([sys.executable, "-m", "mvgraph", "worker", "--dsn", db_dsn,
                               "--poll", "0.2"], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        status = ""
        while time.monotonic() < deadline:
            row = app.execute("SELECT status, error FROM mvgraph.job WHERE id = %s",
                              (job,)).fetchone()
            status = str(row[0]) if row else ""
            if status in ("done", "failed", "cancelled"):
                break
            time.sleep(0.2)
    finally:
        worker.terminate()
        worker.wait(30)
    assert status == "done", row
    steps = app.execute("SELECT step, status FROM mvgraph.rebuild_progress(%s)",
                        (str(job),)).fetchall()
    assert steps[0] == ("prepare", "done") and ("swap", "done") in steps
    assert app.execute("SELECT count(*) FROM app.items WHERE c = 'a'").fetchone() == (
        app.execute("SELECT count(*) FROM app.items").fetchone())
    key = app.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                      "WHERE conrelid = 'app.items'::regclass AND contype = 'p'").fetchone()
    assert key == ("PRIMARY KEY (id, v)",)


def test_failure_at_each_step_leaves_the_database_as_before(app: Conn, db_dsn: str) -> None:
    """A failure injected at every step before the swap (a cancel asked when that step
    starts) leaves the catalog exactly as it was and nothing of the rebuild behind."""
    from mvgraph.rebuild import book

    before = catalog(app)
    for step in ("create_tmp_table", "get_src_table_snapshot", "insert", "set_readonly"):
        control = Control()
        original = book.Book.running

        def running(self: book.Book, name: str, _step: str = step,
                    _original: object = original, _control: Control = control) -> book.Step:
            if name == _step:
                _control.ask("cancel")
                raise psycopg.errors.QueryCanceled(f"injected at {name}")
            return _original(self, name)  # type: ignore[operator, no-any-return]

        book.Book.running = running  # type: ignore[method-assign]
        try:
            with psycopg.connect(db_dsn, autocommit=True) as conn:
                _job, status = service.run_here(conn, "REBUILD TABLE app.items "
                                                "ALTER COLUMN v TYPE bigint", control)
        finally:
            book.Book.running = original  # type: ignore[method-assign]
        assert status is RunStatus.CANCELLED, step
        assert catalog(app) == before, step
