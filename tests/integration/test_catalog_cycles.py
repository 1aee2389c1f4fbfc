"""What PostgreSQL allows in a catalog: a cycle among plain views (closed by CREATE OR REPLACE
VIEW), views over sequences and over system relations."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from mvgraph import Kind, RelationName, diff, load_graph
from mvgraph.db.connect import connect
from mvgraph.db.scripts import run_files, run_script
from tests.conftest import cli

Conn = psycopg.Connection[tuple[object, ...]]
CYCLE = "junk.v2 -> junk.v3 -> junk.v2"

SCHEMA = """
    CREATE TABLE good_t (id int PRIMARY KEY);
    CREATE MATERIALIZED VIEW good AS SELECT id FROM good_t;
    CREATE MATERIALIZED VIEW good2 AS SELECT id FROM good;
    CREATE SCHEMA junk;
    CREATE TABLE junk.t (a int);
    CREATE VIEW junk.v3 AS SELECT a FROM junk.t;
    CREATE VIEW junk.v2 AS SELECT a FROM junk.v3;
    CREATE MATERIALIZED VIEW junk.m AS SELECT a FROM junk.v2;
    CREATE MATERIALIZED VIEW junk.after_m AS SELECT a FROM junk.m;
    CREATE OR REPLACE VIEW junk.v3 AS SELECT a FROM junk.v2;
"""


@pytest.fixture
def cycle_dsn(db_dsn: str) -> str:
    with connect(db_dsn) as conn:
        run_script(conn, SCHEMA)
        with pytest.raises(psycopg.errors.InvalidObjectDefinition, match="infinite recursion"):
            conn.execute("SELECT * FROM junk.v2")
    return db_dsn


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning:")]


def test_unrelated_commands_work_with_one_warning(cycle_dsn: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["graph"], ["plan", "good"], ["refresh", "good", "--restrict"],
                 ["refresh", "good", "--cascade", "all"], ["status"], ["track", "--all"],
                 ["deps", "junk.t"], ["configure", "good", "--early-cutoff"]):
        code, _, err = cli(capsys, "--dsn", cycle_dsn, *args)
        assert code == 0, (args, err)
        warnings = _warnings(err)
        assert len(warnings) == 1 and CYCLE in warnings[0], (args, err)
        assert "junk.m cannot be refreshed" in warnings[0]


def test_graph_json_leaves_the_cycle_out_and_names_it(cycle_dsn: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, first, _ = cli(capsys, "--dsn", cycle_dsn, "graph", "-f", "json")
    assert code == 0
    code, second, _ = cli(capsys, "--dsn", cycle_dsn, "graph", "-f", "json")
    assert first == second
    data = json.loads(first)
    names = {n["name"] for n in data["nodes"]}
    assert "junk.v2" not in names and "junk.v3" not in names
    assert {"public.good", "junk.m", "junk.t"} <= names
    assert data["cycles"] == [{"members": ["junk.v2", "junk.v3"],
                               "read_by": [{"from": "junk.v2", "to": "junk.m"}]}]
    assert all(e["from"] in names and e["to"] in names for e in data["edges"])
    code, dot, _ = cli(capsys, "--dsn", cycle_dsn, "graph", "-f", "dot")
    assert code == 0 and f"// dependency cycle left out: {CYCLE}" in dot


def test_a_selection_needing_the_cycle_fails_clearly(cycle_dsn: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    cases = {
        ("refresh", "junk.m"): "junk.m depends on junk.v2",
        ("plan", "junk.after_m"): "junk.after_m depends on junk.v2",
        ("refresh", "junk.*"): "junk.m depends on junk.v2",
        ("plan", "good", "junk.m", "--restrict"): "junk.m depends on junk.v2",
        ("deps", "junk.v2"): "dependency cycle",
        ("deps", "v3"): "dependency cycle",
        ("deps", "junk.m", "--up"): "junk.m depends on junk.v2",
    }
    for args, expected in cases.items():
        code, _, err = cli(capsys, "--dsn", cycle_dsn, *args)
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 1, (args, err)
        assert len(errors) == 1 and expected in errors[0] and CYCLE in errors[0], (args, err)
    with connect(cycle_dsn) as conn:  # nothing ran: no job was recorded
        assert conn.execute("SELECT count(*) FROM mvgraph.job").fetchone() == (0,)


def test_status_names_the_cycle_for_the_views_that_need_it(
        cycle_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "--dsn", cycle_dsn, "status", "--json")
    assert code == 0
    views = {v["name"]: v for v in json.loads(out)["views"]}
    assert views["junk.m"]["fresh"] is False
    assert f"reads junk.v2, which is in a dependency cycle ({CYCLE})" in views["junk.m"]["reason"]
    assert views["junk.after_m"]["fresh"] is False
    assert "public.good" in views


def test_library_graph_order_stays_deterministic(cycle_dsn: str) -> None:
    g = load_graph(dsn=cycle_dsn)
    assert [c.path for c in g.cycles] == [CYCLE]
    order = [str(n) for n in g.order()]
    assert order == ["junk.m", "junk.after_m", "junk.t", "public.good_t", "public.good",
                     "public.good2"]
    assert g.upstream(RelationName("public", "good2")) == {RelationName("public", "good"),
                                                           RelationName("public", "good_t")}


SEQUENCES_AND_SYSTEM = """
CREATE SCHEMA app;
CREATE SEQUENCE app.order_no;
CREATE SEQUENCE IF NOT EXISTS public.unused_seq START 10;
CREATE TABLE app.orders (id serial PRIMARY KEY, n bigint);
CREATE SEQUENCE app.owned_seq OWNED BY app.orders.n;
CREATE TABLE app.pg_mine (a int);
SET search_path TO app, public;
CREATE VIEW next_no AS SELECT nextval('order_no') AS n;
CREATE VIEW seq_state AS SELECT last_value, is_called FROM order_no;
CREATE MATERIALIZED VIEW seq_mv AS SELECT last_value FROM app.order_no;
CREATE VIEW cur AS SELECT currval('app.order_no'::regclass) AS c, setval('order_no', 5) AS s;
CREATE VIEW oid_of AS SELECT 'orders'::regclass AS r, CAST('app.pg_mine' AS regclass) AS r2;
CREATE MATERIALIZED VIEW locks AS SELECT count(*) AS n FROM pg_locks;
CREATE VIEW sessions AS
    SELECT a.pid FROM pg_stat_activity a JOIN pg_catalog.pg_database d ON d.oid = a.datid;
CREATE VIEW rels AS SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace;
CREATE VIEW tabs AS SELECT table_name FROM information_schema.tables;
CREATE VIEW mine AS SELECT a FROM pg_mine;
CREATE MATERIALIZED VIEW orders_mv AS SELECT n FROM orders;
CREATE MATERIALIZED VIEW stats_mv AS SELECT n FROM locks, sessions;
"""


def test_sequences_and_system_relations_agree(conn: Conn, tmp_path: Path) -> None:
    path = tmp_path / "schema.sql"
    path.write_text(SEQUENCES_AND_SYSTEM)
    run_files(conn, [path])
    from_files = load_graph(sql=[path])
    from_db = load_graph(conn=conn)
    d = diff(from_files, from_db)
    assert d.empty, d.lines()
    assert not from_files.warnings and not from_db.warnings

    def kind(schema: str, name: str) -> Kind:
        return from_db.kind(RelationName(schema, name))

    assert kind("app", "order_no") is Kind.SEQUENCE
    for schema, name in [("pg_catalog", "pg_locks"), ("pg_catalog", "pg_class"),
                         ("pg_catalog", "pg_stat_activity"), ("information_schema", "tables")]:
        assert kind(schema, name) is Kind.SYSTEM
        assert from_db.inputs(RelationName(schema, name)) == []
    assert kind("app", "pg_mine") is Kind.TABLE
    # sequences no view reads (serial, OWNED BY, unused) are in neither graph
    assert not {"unused_seq", "owned_seq", "orders_id_seq"} & {n.name for n in from_db.g}
    assert from_db.inputs(RelationName("app", "next_no")) == [RelationName("app", "order_no")]


def test_views_over_sequences_and_system_relations_are_always_stale(
        db_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    with connect(db_dsn) as conn:
        run_script(conn, SEQUENCES_AND_SYSTEM)
    code, out, err = cli(capsys, "--dsn", db_dsn, "track", "--all")
    assert code == 0, err
    assert out.split() == ["app.orders:", "triggers"]  # no sequence, no system relation
    code, _, err = cli(capsys, "--dsn", db_dsn, "refresh", "app.*")
    assert code == 0, err
    code, out, _ = cli(capsys, "--dsn", db_dsn, "plan", "app.*", "--json")
    steps = {s["name"]: s for s in json.loads(out)["steps"]}
    assert steps["app.orders_mv"]["action"] == "skip"
    assert steps["app.seq_mv"]["action"] == "refresh"
    assert steps["app.seq_mv"]["reason"] == "reads sequence app.order_no (always stale)"
    assert steps["app.locks"]["reason"] == \
        "reads system relation pg_catalog.pg_locks (always stale)"
    assert steps["app.stats_mv"]["reason"] == (
        "reads system relation pg_catalog.pg_database, system relation "
        "pg_catalog.pg_stat_activity (always stale)")
    assert cli(capsys, "--dsn", db_dsn, "configure", "app.seq_mv", "--volatile", "never")[0] == 0
    code, out, _ = cli(capsys, "--dsn", db_dsn, "plan", "app.seq_mv", "--json")
    assert json.loads(out)["steps"][0]["action"] == "skip"
    code, _, err = cli(capsys, "--dsn", db_dsn, "track", "pg_class")
    assert code == 4 and "pg_catalog.pg_class is a system relation, not a table" in err
