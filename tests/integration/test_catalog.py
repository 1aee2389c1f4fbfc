"""The graph read from the live catalog equals the graph parsed from the same SQL files."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from fixtures.synthetic import generate
from mvgraph import Kind, RelationName, diff, load_graph
from mvgraph.db.scripts import run_files, run_script
from tests.conftest import FIXTURES

Conn = psycopg.Connection[tuple[object, ...]]


def sql_files(name: str) -> list[Path]:
    return sorted((FIXTURES / name).glob("*.sql"))


@pytest.mark.parametrize("fixture", ["gaussdb_nested", "analytics"])
def test_files_and_catalog_agree(conn: Conn, fixture: str) -> None:
    files = sql_files(fixture)
    run_files(conn, files)
    from_files = load_graph(sql=files)
    from_db = load_graph(conn=conn)
    d = diff(from_files, from_db)
    assert d.empty, d.lines()
    assert not from_files.warnings


def test_synthetic_graph_agrees(conn: Conn, tmp_path: Path) -> None:
    schema = generate(200, depth=6, fan_in=3, seed=7)
    files = schema.sql_files(tmp_path, per_file=60)
    run_files(conn, files)
    d = diff(load_graph(sql=files), load_graph(conn=conn))
    assert d.empty, d.lines()


def test_analytics_fixture_is_big_enough(conn: Conn) -> None:
    run_files(conn, sql_files("analytics"))
    g = load_graph(conn=conn)
    mvs = [n for n in g.g if g.kind(n) is Kind.MATVIEW]
    assert len(mvs) >= 30
    assert len({n.schema for n in mvs}) >= 3
    assert any(g.kind(n) is Kind.VIEW for n in g.g)


def test_catalog_attributes(conn: Conn) -> None:
    run_script(conn, """
        CREATE TABLE t (id int PRIMARY KEY, v int);
        CREATE MATERIALIZED VIEW m_idx AS SELECT id, v FROM t;
        CREATE UNIQUE INDEX ON m_idx (id);
        CREATE MATERIALIZED VIEW m_partial AS SELECT id, v FROM t;
        CREATE UNIQUE INDEX ON m_partial (id) WHERE v > 0;
        CREATE MATERIALIZED VIEW m_expr AS SELECT id, v FROM t;
        CREATE UNIQUE INDEX ON m_expr ((id + 1));
        CREATE MATERIALIZED VIEW m_nodata AS SELECT id FROM t WITH NO DATA;
        CREATE MATERIALIZED VIEW m_now AS SELECT id, now() AS at, random() AS r FROM t;
        CREATE VIEW v AS SELECT id FROM m_idx;
    """)
    g = load_graph(conn=conn)

    def a(name: str) -> dict[str, object]:
        return g.attrs(RelationName("public", name))

    assert a("m_idx")["concurrent_index"] is True
    assert a("m_partial")["concurrent_index"] is False
    assert a("m_expr")["concurrent_index"] is False
    assert a("m_nodata")["populated"] is False
    assert a("m_idx")["populated"] is True
    assert a("m_now")["volatile_functions"] == ("now", "random")
    assert a("m_idx")["owner"] == "postgres"
    assert "FROM t" in str(a("m_idx")["definition"])
    assert g.kind(RelationName("public", "v")) is Kind.VIEW
    assert g.inputs(RelationName("public", "v")) == [RelationName("public", "m_idx")]


def test_schema_filter_keeps_direct_inputs(conn: Conn) -> None:
    run_script(conn, """
        CREATE SCHEMA a; CREATE SCHEMA b;
        CREATE TABLE a.t (id int);
        CREATE MATERIALIZED VIEW b.m AS SELECT id FROM a.t;
        CREATE MATERIALIZED VIEW a.other AS SELECT id FROM a.t;
    """)
    g = load_graph(conn=conn, schemas=["b"])
    assert sorted(str(n) for n in g.g) == ["a.t", "b.m"]


def test_mvgraph_schema_is_not_in_the_graph(conn: Conn) -> None:
    g = load_graph(conn=conn)
    assert all(n.schema != "mvgraph" for n in g.g)
