"""mvgraph's own schema: installed by numbered migrations, recorded, upgradable."""

from __future__ import annotations

import psycopg

from mvgraph.db.connect import connect
from mvgraph.db.install import init
from mvgraph.db.migrate import current_version, latest_version, migrate, migrations

SNAPSHOT = """
SELECT c.relname, c.relkind::text, c.relpersistence::text, a.attname,
       format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
 WHERE n.nspname = 'mvgraph' AND c.relname <> 'schema_version'
 ORDER BY 1, 4
"""
EXTRA = """
SELECT 'index', indexdef FROM pg_indexes WHERE schemaname = 'mvgraph'
UNION ALL SELECT 'function', p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'mvgraph'
UNION ALL SELECT 'constraint', conname || ' ' || pg_get_constraintdef(c.oid)
  FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = 'mvgraph'
ORDER BY 1, 2
"""


def snapshot(conn: psycopg.Connection[tuple[object, ...]]) -> list[tuple[object, ...]]:
    return conn.execute(SNAPSHOT).fetchall() + conn.execute(EXTRA).fetchall()


def test_fresh_install_equals_stepwise_upgrade(empty_db_dsn: str, db_dsn: str) -> None:
    with connect(empty_db_dsn) as conn:
        for m in migrations():  # one version per run, as successive releases would
            migrate(conn, target=m.version)
            assert current_version(conn) == m.version
        stepwise = snapshot(conn)
    with connect(db_dsn) as conn:  # the template was installed in one go
        fresh = snapshot(conn)
    assert stepwise == fresh
    assert fresh, "the schema has objects"


def test_versions_recorded_and_rerun_is_a_no_op(empty_db_dsn: str) -> None:
    with connect(empty_db_dsn) as conn:
        assert current_version(conn) == 0
        applied = migrate(conn)
        assert [m.version for m in applied] == [m.version for m in migrations()]
        assert current_version(conn) == latest_version()
        assert migrate(conn) == []
        assert init(conn).applied == ()
        rows = conn.execute("SELECT version FROM mvgraph.schema_version ORDER BY 1").fetchall()
        assert [r[0] for r in rows] == [m.version for m in migrations()]


def test_upgrade_to_3_keeps_the_recorded_inputs(empty_db_dsn: str) -> None:
    """Version 3 moves each view's inputs from rows of mv_input into arrays of its state row."""
    with connect(empty_db_dsn) as conn:
        migrate(conn, target=2)
        conn.execute("INSERT INTO mvgraph.mv_state (mv, name) VALUES (100, 'a.v'), (200, 'b.w')")
        conn.execute("INSERT INTO mvgraph.mv_input VALUES (100, 11, NULL, NULL), "
                     "(100, 10, 5, 7), (100, 12, 6, 8)")
        migrate(conn, target=3)
        rows = conn.execute("SELECT mv, inputs::text, stat_inputs::text, stat_counters::text, "
                            "stat_filenodes::text FROM mvgraph.mv_state ORDER BY mv").fetchall()
    assert rows == [(100, "{10,11,12}", "{10,12}", "{5,6}", "{7,8}"), (200, "{}", "{}", "{}", "{}")]
