"""Rebuild cases against a real server: the seed's examples verbatim through the SQL
front-end, partitioning, keep_source, what survives (grants, comments, indexes, owners,
policies, triggers, sequences), a middle materialized view of the analytics example, and
mvgraph's own state following the objects. A writer and a reader run through each."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

import mvgraph
from mvgraph.db.scripts import run_files
from mvgraph.errors import MvgraphError
from mvgraph.frontend import execute_script
from mvgraph.model.status import RunStatus
from mvgraph.rebuild import service
from tests.conftest import FIXTURES

Conn = psycopg.Connection[tuple[object, ...]]


@contextmanager
def traffic(dsn: str, write: str | None, read: str) -> Iterator[dict[str, list[str]]]:
    """A writer (``write``, run with an increasing integer) and a reader (``read``) in loops
    while the block runs; their errors are returned."""
    stop = threading.Event()
    errors: dict[str, list[str]] = {"write": [], "read": []}

    def loop(kind: str, text: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as c:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    c.execute(text, {"i": i} if "%(i)s" in text else None).fetchall() \
                        if kind == "read" else c.execute(text, {"i": i})
                except psycopg.Error as exc:
                    errors[kind].append(str(exc).splitlines()[0])

    threads = [threading.Thread(target=loop, args=("read", read))]
    if write:
        threads.append(threading.Thread(target=loop, args=("write", write)))
    for t in threads:
        t.start()
    try:
        yield errors
    finally:
        stop.set()
        for t in threads:
            t.join()


def run(dsn: str, text: str) -> list[object]:
    with psycopg.connect(dsn, autocommit=True) as c:
        return list(execute_script(c, text))


def wait_done(conn: Conn, job: int, dsn: str) -> str:
    """Run the queued rebuild here (as a worker would) and return its status."""
    from mvgraph.jobs.worker import Worker, WorkerConfig

    w = Worker(WorkerConfig(dsn, poll_s=0.1, heartbeat_s=0.5, lease_s=5))
    t = threading.Thread(target=w.run)
    t.start()
    try:
        import time
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            row = conn.execute("SELECT status FROM mvgraph.job WHERE id = %s", (job,)
                               ).fetchone()
            if row and row[0] in ("done", "failed", "cancelled"):
                return str(row[0])
            time.sleep(0.1)
        return "timeout"
    finally:
        w.stop()
        t.join(60)


def test_the_seed_examples_run_verbatim(conn: Conn, db_dsn: str) -> None:
    run(db_dsn, """
        CREATE TABLE rebuild_test (
            a TEXT,
            b TEXT,
            ds TEXT
        );
        INSERT INTO rebuild_test VALUES ('1', '1', '2025-04-01'), ('2', '2', '2025-04-02'),
                                        ('3', '3', '2025-04-03');
        CREATE VIEW rebuild_top AS SELECT a, ds FROM rebuild_test;""")
    with traffic(db_dsn, "INSERT INTO rebuild_test (a, b, ds) "
                         "VALUES ('w' || %(i)s, 'w', '2025-04-01')",
                 "SELECT * FROM rebuild_top") as errors:
        for text in ("ASYNC REBUILD TABLE rebuild_test ADD COLUMN c text NOT NULL DEFAULT 'a';",
                     "ASYNC REBUILD TABLE rebuild_test ALTER PRIMARY KEY (a);",
                     "ASYNC REBUILD TABLE rebuild_test \n    ALTER COLUMN ds SET NOT NULL,\n"
                     "    TO LOGICAL PARTITION BY LIST(ds);"):
            out = run(db_dsn, text)
            job = out[0].job  # type: ignore[attr-defined]
            assert wait_done(conn, job, db_dsn) == "done", conn.execute(
                "SELECT error FROM mvgraph.job WHERE id = %s", (job,)).fetchone()
            progress = conn.execute("SELECT step, status, progress FROM "
                                    "mvgraph.rebuild_progress(%s)", (str(job),)).fetchall()
            assert progress[0][:2] == ("prepare", "done")
    assert errors == {"write": [], "read": []}
    assert conn.execute("SELECT count(*) FROM rebuild_test WHERE b = 'w' AND c <> 'a'"
                        ).fetchone() == (0,)
    assert conn.execute("SELECT a, b, ds, c FROM rebuild_test WHERE b <> 'w' ORDER BY a"
                        ).fetchall() == [
        ("1", "1", "2025-04-01", "a"), ("2", "2", "2025-04-02", "a"),
        ("3", "3", "2025-04-03", "a")]
    assert conn.execute("SELECT relkind::text FROM pg_class WHERE relname = 'rebuild_test'"
                        ).fetchone() == ("p",)
    parts = conn.execute("SELECT count(*) FROM pg_inherits "
                         "WHERE inhparent = 'rebuild_test'::regclass").fetchone()
    assert parts == (4,)  # three values and the default partition
    # the seed's ALTER PRIMARY KEY (a), extended by the partition key (PostgreSQL's rule)
    assert conn.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = "
                        "'rebuild_test'::regclass AND contype = 'p'").fetchone() == (
        "PRIMARY KEY (a, ds)",)
    assert conn.execute("SELECT count(*) FROM rebuild_top").fetchone() == conn.execute(
        "SELECT count(*) FROM rebuild_test").fetchone()
    # the Hologres-only storage parameters: PostgreSQL's own error, nothing changed
    before = conn.execute("SELECT oid FROM pg_class WHERE relname = 'rebuild_test'").fetchone()
    out = run(db_dsn, """ASYNC REBUILD TABLE rebuild_test
        WITH (
            rebuild_guc_hg_computing_resource = 'serverless'
        )
        SET (
            distribution_key = 'a',
            clustering_key = 'a',
            orientation = 'row,column'
        );""")
    job = out[0].job  # type: ignore[attr-defined]
    assert wait_done(conn, job, db_dsn) == "failed"
    error = conn.execute("SELECT error FROM mvgraph.job WHERE id = %s", (job,)).fetchone()
    assert error is not None and "hg_computing_resource" in str(error[0])
    assert conn.execute("SELECT oid FROM pg_class WHERE relname = 'rebuild_test'"
                        ).fetchone() == before
    assert conn.execute("SELECT relname FROM pg_class WHERE relname LIKE '%%\\_\\_rb%%'"
                        ).fetchall() == []


@pytest.mark.parametrize(("method", "with_", "expected"), [
    ("HASH (id)", "WITH (hash_partitions = 3) ", 3),
    ("RANGE (day)", "WITH (partition_interval = 'month') ", 3 + 1),
    ("LIST (kind)", "", 2 + 1)])
def test_to_partition_by(conn: Conn, db_dsn: str, method: str, with_: str,
                         expected: int) -> None:
    conn.execute("CREATE TABLE ev (id int, day date NOT NULL, kind text NOT NULL, "
                 "PRIMARY KEY (id, day, kind))")
    conn.execute("INSERT INTO ev SELECT g, date '2024-01-01' + (g % 80), "
                 "CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END FROM generate_series(1, 2000) g")
    conn.execute("CREATE MATERIALIZED VIEW ev_n AS SELECT kind, count(*) AS n FROM ev GROUP BY 1")
    with traffic(db_dsn, "INSERT INTO ev VALUES (10000 + %(i)s, date '2024-02-01', 'a')",
                 "SELECT * FROM ev_n") as errors, psycopg.connect(db_dsn, autocommit=True) as c:
        job, status = service.run_here(c, f"REBUILD TABLE ev {with_}TO PARTITION BY "
                                          f"{method}")
    assert status is RunStatus.OK, conn.execute("SELECT error FROM mvgraph.job WHERE id = %s",
                                                (job,)).fetchone()
    assert errors == {"write": [], "read": []}
    assert conn.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = 'ev'::regclass"
                        ).fetchone() == (expected,)
    total = conn.execute("SELECT count(*) FROM ev").fetchone()
    assert total is not None and int(str(total[0])) >= 2000


def test_keep_source_and_what_survives(conn: Conn, db_dsn: str) -> None:
    role = f"rb_reader_{conn.info.backend_pid}"
    conn.execute(f"CREATE ROLE {role}")
    try:
        conn.execute(f"""
            CREATE TABLE acct (id serial PRIMARY KEY, owner_name text,
                               amount int CHECK (amount >= 0));
            CREATE INDEX acct_owner ON acct (owner_name);
            COMMENT ON TABLE acct IS 'accounts';
            COMMENT ON COLUMN acct.amount IS 'cents';
            GRANT SELECT ON acct TO {role};
            GRANT UPDATE (amount) ON acct TO {role};
            ALTER TABLE acct ENABLE ROW LEVEL SECURITY;
            CREATE POLICY mine ON acct FOR SELECT TO {role} USING (owner_name = current_user);
            CREATE TABLE audit (n int);
            CREATE FUNCTION audit_it() RETURNS trigger LANGUAGE plpgsql AS
              $$BEGIN INSERT INTO audit VALUES (1); RETURN NULL; END$$;
            CREATE TRIGGER acct_audit AFTER INSERT ON acct FOR EACH ROW EXECUTE FUNCTION audit_it();
            CREATE TABLE payment (id int, acct int REFERENCES acct (id));
            INSERT INTO acct (owner_name, amount) SELECT 'u' || g, g FROM generate_series(1, 100) g;
            INSERT INTO payment SELECT g, g FROM generate_series(1, 50) g;
            CREATE MATERIALIZED VIEW acct_sum AS SELECT sum(amount) AS s FROM acct;
            GRANT SELECT ON acct_sum TO {role};""")
        def facts() -> list[object]:
            return [
                conn.execute("SELECT obj_description('acct'::regclass, 'pg_class'), "
                             "col_description('acct'::regclass, 3)").fetchone(),
                conn.execute("SELECT relacl::text FROM pg_class WHERE oid = 'acct'::regclass"
                             ).fetchone(),
                conn.execute("SELECT attacl::text FROM pg_attribute WHERE attrelid = "
                             "'acct'::regclass AND attname = 'amount'").fetchone(),
                conn.execute("SELECT relacl::text FROM pg_class WHERE oid = 'acct_sum'::regclass"
                             ).fetchone(),
                conn.execute("SELECT indexname, regexp_replace(indexdef, 'bigint|integer', 'T')"
                             " FROM pg_indexes WHERE tablename = 'acct' ORDER BY 1").fetchall(),
                conn.execute("SELECT polname, pg_get_expr(polqual, polrelid) FROM pg_policy "
                             "WHERE polrelid = 'acct'::regclass").fetchall(),
                conn.execute("SELECT relrowsecurity FROM pg_class WHERE oid = 'acct'::regclass"
                             ).fetchone(),
                conn.execute("SELECT tgname, tgenabled::text FROM pg_trigger WHERE tgrelid = "
                             "'acct'::regclass AND NOT tgisinternal").fetchall(),
                conn.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                             "WHERE conrelid IN ('acct'::regclass, 'payment'::regclass) "
                             "ORDER BY 1").fetchall(),
                conn.execute("SELECT pg_get_serial_sequence('acct', 'id')").fetchone(),
            ]
        before = facts()
        # the reader's result type stays the same (a prepared statement reading acct_sum.s,
        # whose type changes from bigint to numeric, gets PostgreSQL's "cached plan must not
        # change result type" once, as after any ALTER ... TYPE)
        with traffic(db_dsn, "INSERT INTO acct (owner_name, amount) VALUES ('w', %(i)s)",
                     "SELECT s::text FROM acct_sum") as errors, \
                psycopg.connect(db_dsn, autocommit=True) as c:
            job, status = service.run_here(c, "REBUILD TABLE acct WITH (keep_source) "
                                              "ALTER COLUMN amount TYPE bigint")
        assert status is RunStatus.OK, conn.execute(
            "SELECT error FROM mvgraph.job WHERE id = %s", (job,)).fetchone()
        assert errors == {"write": [], "read": []}
        assert facts() == before
        assert conn.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                            "WHERE attrelid = 'acct'::regclass AND attname = 'amount'"
                            ).fetchone() == ("bigint",)
        assert conn.execute(f"SELECT count(*) FROM acct__old_{job}").fetchone() is not None
        n_acct = conn.execute("SELECT count(*) FROM acct").fetchone()
        n_audit = conn.execute("SELECT count(*) FROM audit").fetchone()
        assert n_acct is not None and n_audit is not None
        # the trigger fired once per row written by the setup and the writer, never for the
        # rebuild's copy or replay
        assert n_audit == n_acct
        conn.execute("INSERT INTO acct (owner_name, amount) VALUES ('after', 1)")  # the sequence
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("INSERT INTO payment VALUES (999, -5)")
        conn.execute(f"DROP TABLE acct__old_{job}")
    finally:
        conn.execute("DROP OWNED BY " + role)
        conn.execute("DROP ROLE " + role)


def test_a_middle_view_of_the_analytics_example_gets_a_new_query(conn: Conn,
                                                                    db_dsn: str) -> None:
    run_files(conn, sorted((FIXTURES / "analytics").glob("0*.sql")))
    mvgraph.track(conn, every=True)
    assert mvgraph.refresh(conn, "*").status == "ok"
    with traffic(db_dsn, None, "SELECT count(*) FROM staging.stg_orders") as errors, \
            psycopg.connect(db_dsn, autocommit=True) as c:
        job, status = service.run_here(c, """REBUILD MATERIALIZED VIEW staging.stg_orders AS
            SELECT order_id, customer_id, order_ts, order_date,
                   date_trunc('month', order_date)::date AS order_month,
                   status, channel, upper(currency) AS currency
              FROM staging.v_orders_clean""")
    assert status is RunStatus.OK, conn.execute("SELECT error FROM mvgraph.job WHERE id = %s",
                                                (job,)).fetchone()
    assert errors["read"] == []
    assert conn.execute("SELECT count(*) FROM pg_indexes WHERE indexname = "
                        "'stg_orders_order_id_uidx'").fetchone() == (1,)
    # every view still works, and mvgraph refreshes the rebuilt chain (never skips it)
    report = mvgraph.refresh(conn, "*")
    assert report.status == "ok"
    refreshed = {str(s.name) for s in report.steps if s.status.value == "done"}
    assert "staging.stg_orders" in refreshed


def test_a_role_that_does_not_own_the_table_is_refused(conn: Conn, db_dsn: str) -> None:
    role = f"rb_other_{conn.info.backend_pid}"
    conn.execute(f"CREATE ROLE {role} LOGIN")
    try:
        conn.execute("CREATE TABLE owned (id int PRIMARY KEY)")
        mvgraph.grant(conn, role, "operator")
        conn.execute(f"GRANT SELECT ON owned TO {role}")
        with psycopg.connect(db_dsn, autocommit=True) as c:
            c.execute(f"SET ROLE {role}")
            job, status = service.run_here(c, "REBUILD TABLE owned ADD COLUMN x int DEFAULT 1"
                                              " NOT NULL")
        assert status is RunStatus.FAILED
        error = conn.execute("SELECT error FROM mvgraph.job WHERE id = %s", (job,)).fetchone()
        assert error is not None and "owner" in str(error[0]) and "postgres" in str(error[0])
    finally:
        conn.execute("DROP OWNED BY " + role)
        conn.execute("DROP ROLE " + role)


def test_a_malformed_statement_is_refused_before_anything_runs(db_dsn: str) -> None:
    with pytest.raises(MvgraphError, match=r"<sql>:1: syntax error: unknown action .FROB"):
        run(db_dsn, "ASYNC REBUILD TABLE t FROB COLUMN x")


def test_a_partitioned_table_keeps_its_partitions(conn: Conn, db_dsn: str) -> None:
    conn.execute("CREATE TABLE m (id int, day date, v int, PRIMARY KEY (id, day)) "
                 "PARTITION BY RANGE (day)")
    conn.execute("CREATE TABLE m_2024 PARTITION OF m FOR VALUES FROM ('2024-01-01') TO "
                 "('2025-01-01')")
    conn.execute("CREATE TABLE m_rest PARTITION OF m DEFAULT")
    conn.execute("CREATE INDEX m_v ON m (v)")
    conn.execute("INSERT INTO m SELECT g, date '2024-06-01' + g % 400, g FROM "
                 "generate_series(1, 3000) g")
    conn.execute("CREATE VIEW m_top AS SELECT day, sum(v) AS s FROM m GROUP BY day")
    shape = ("SELECT c.relname, i.relname FROM pg_inherits h JOIN pg_class c ON c.oid = "
             "h.inhrelid LEFT JOIN pg_index x ON x.indrelid = c.oid LEFT JOIN pg_class i ON "
             "i.oid = x.indexrelid WHERE h.inhparent = 'm'::regclass ORDER BY 1, 2")
    before = conn.execute(shape).fetchall()
    with traffic(db_dsn, "INSERT INTO m VALUES (10000 + %(i)s, date '2024-07-01', 1)",
                 "SELECT count(*) FROM m_top") as errors, \
            psycopg.connect(db_dsn, autocommit=True) as c:
        job, status = service.run_here(c, "REBUILD TABLE m ALTER COLUMN v TYPE bigint")
    assert status is RunStatus.OK, conn.execute("SELECT error FROM mvgraph.job WHERE id = %s",
                                                (job,)).fetchone()
    assert errors == {"write": [], "read": []}
    assert conn.execute(shape).fetchall() == before
    assert conn.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE "
                        "attrelid = 'm_top'::regclass AND attname = 's'").fetchone() == ("numeric",)


def test_schedules_and_tracking_follow_the_rebuilt_objects(conn: Conn, db_dsn: str) -> None:
    """A rebuilt view keeps its schedule; a rebuilt tracked table stays tracked: a write
    after the rebuild makes its readers stale, and without one they are skipped."""
    conn.execute("CREATE TABLE src (id int PRIMARY KEY, v int)")
    conn.execute("INSERT INTO src SELECT g, g FROM generate_series(1, 100) g")
    conn.execute("CREATE MATERIALIZED VIEW agg AS SELECT sum(v) AS s FROM src")
    mvgraph.track(conn, ["src"])
    assert mvgraph.refresh(conn, "agg").status == "ok"
    mvgraph.add_schedule("agg", every="1 hour", dsn=db_dsn)
    with psycopg.connect(db_dsn, autocommit=True) as c:
        job, status = service.run_here(c, "REBUILD TABLE src ALTER COLUMN v TYPE bigint")
    assert status is RunStatus.OK, conn.execute("SELECT error FROM mvgraph.job WHERE id = %s",
                                                (job,)).fetchone()
    assert conn.execute("SELECT s.view_oid = 'agg'::regclass FROM mvgraph.schedule s "
                        ).fetchall() == [(True,)]
    assert conn.execute("SELECT mode FROM mvgraph.table_mode WHERE relid = 'src'::regclass"
                        ).fetchone() == ("triggers",)
    assert mvgraph.refresh(conn, "agg").status == "ok"  # the rebuilt view: refreshed
    assert [s.action.value for s in mvgraph.plan(conn, "agg").steps] == ["skip"]
    conn.execute("UPDATE src SET v = v + 1 WHERE id = 1")
    assert [s.action.value for s in mvgraph.plan(conn, "agg").steps] == ["refresh"]
    assert mvgraph.refresh(conn, "agg").status == "ok"
    assert conn.execute("SELECT s FROM agg").fetchone() == (5051,)


def test_if_exists_and_a_session_setting(conn: Conn, db_dsn: str) -> None:
    """IF EXISTS of a missing table ends done with every step skipped; rebuild_guc_* sets a
    setting of the rebuild's session (a bad one is PostgreSQL's error)."""
    with psycopg.connect(db_dsn, autocommit=True) as c:
        job, status = service.run_here(c, "REBUILD TABLE IF EXISTS nowhere ADD COLUMN x int "
                                          "DEFAULT random()::int")
    assert status is RunStatus.OK
    assert {r[1] for r in conn.execute("SELECT step, status FROM mvgraph.rebuild_progress(%s)",
                                       (str(job),)).fetchall()} == {None}
    conn.execute("CREATE TABLE g (id int PRIMARY KEY, v int)")
    conn.execute("CREATE VIEW g_v AS SELECT * FROM g")
    with psycopg.connect(db_dsn, autocommit=True) as c:
        _job, status = service.run_here(c, "REBUILD TABLE g WITH (rebuild_guc_maintenance_work_"
                                           "mem = '64MB') ALTER COLUMN v TYPE bigint")
        assert status is RunStatus.OK
        _job, status = service.run_here(c, "REBUILD TABLE g WITH (rebuild_guc_work_mem = "
                                           "'lots') ALTER COLUMN v TYPE int")
    assert status is RunStatus.FAILED
    assert conn.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE "
                        "attrelid = 'g_v'::regclass AND attname = 'v'").fetchone() == ("bigint",)


def test_ddl_made_during_a_rebuild_stops_it_before_the_swap(conn: Conn, db_dsn: str) -> None:
    """A column added (or a grant, an index...) between the rebuild's reading of the table and
    its swap would be lost by the swap: the rebuild stops instead, the originals as they are
    (with the DDL), nothing of the rebuild left."""
    from mvgraph.rebuild import book

    conn.execute("CREATE TABLE d (id int PRIMARY KEY, v int)")
    conn.execute("INSERT INTO d SELECT g, g FROM generate_series(1, 100) g")
    conn.execute("CREATE VIEW d_v AS SELECT id, v FROM d")
    original = book.Book.running

    def running(self: book.Book, name: str) -> book.Step:
        if name == "set_readonly":
            with psycopg.connect(db_dsn, autocommit=True) as other:
                other.execute("ALTER TABLE d ADD COLUMN added text")
        return original(self, name)

    book.Book.running = running  # type: ignore[method-assign]
    try:
        with psycopg.connect(db_dsn, autocommit=True) as c:
            job, status = service.run_here(c, "REBUILD TABLE d ALTER COLUMN v TYPE bigint")
    finally:
        book.Book.running = original  # type: ignore[method-assign]
    assert status is RunStatus.FAILED
    error = conn.execute("SELECT error FROM mvgraph.job WHERE id = %s", (job,)).fetchone()
    assert error is not None and "changed (DDL) since this rebuild read them" in str(error[0])
    assert conn.execute("SELECT attname FROM pg_attribute WHERE attrelid = 'd'::regclass "
                        "AND attnum > 0 ORDER BY attnum").fetchall() == [("id",), ("v",),
                                                                          ("added",)]
    assert conn.execute("SELECT relname FROM pg_class WHERE relname LIKE 'd\\_\\_%%'"
                        ).fetchall() == []
