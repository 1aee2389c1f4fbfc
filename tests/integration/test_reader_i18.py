"""Issue 18, items 21, 22 and 24: files and catalog agree on SETOF functions, views reading
themselves and extensions' relations."""

from __future__ import annotations

from pathlib import Path

from mvgraph import diff, load_graph
from mvgraph.db.connect import connect
from mvgraph.db.scripts import run_script

SETOF = """CREATE TABLE t (a int);
CREATE FUNCTION f() RETURNS SETOF t AS 'select * from t' LANGUAGE sql;
CREATE VIEW v AS SELECT * FROM f();
CREATE VIEW v2 AS SELECT f();
CREATE VIEW v3 AS SELECT a FROM f() AS x WHERE a > 1;
CREATE VIEW v4 AS SELECT count(*) FROM f();
"""

SELF = """CREATE OR REPLACE VIEW s AS SELECT 1 AS a;
CREATE OR REPLACE VIEW s AS TABLE s;
CREATE VIEW r AS SELECT a FROM s;
"""


def _edges(graph: object) -> list[tuple[str, str]]:
    return sorted((str(a), str(b)) for a, b in graph.g.edges)  # type: ignore[attr-defined]


def test_setof_function_edges_match_the_catalog(db_dsn: str, tmp_path: Path) -> None:
    with connect(db_dsn) as conn:
        run_script(conn, SETOF)
    path = tmp_path / "setof.sql"
    path.write_text(SETOF)
    from_files = load_graph(sql=[path], use_cache=False)
    from_db = load_graph(dsn=db_dsn)
    assert _edges(from_files) == _edges(from_db) == [("public.t", "public.v"),
                                                     ("public.t", "public.v3")]


def test_a_view_reading_itself_is_treated_alike(db_dsn: str, tmp_path: Path) -> None:
    with connect(db_dsn) as conn:
        run_script(conn, SELF)
    path = tmp_path / "self.sql"
    path.write_text(SELF)
    from_files = load_graph(sql=[path], use_cache=False)
    from_db = load_graph(dsn=db_dsn)
    with connect(db_dsn) as conn:
        version = conn.info.server_version
    # before PostgreSQL 16 every view's rule depends on the view itself: a self-reference cannot
    # be told apart in the catalog (the documented limit), so only the files are checked there
    for graph in (from_files, from_db) if version >= 160000 else (from_files,):
        assert sorted(map(str, graph.g.nodes)) == ["public.r"]
        assert [c.path for c in graph.cycles] == ["public.s -> public.s"]
        assert [w for w in graph.warnings if "reads itself" in w] == [
            "public.s reads itself (reading it fails with 'infinite recursion'); left out of "
            "the graph and of plans; public.r cannot be refreshed or read; fix it with CREATE "
            "OR REPLACE VIEW or DROP VIEW"]


def test_check_does_not_report_an_extensions_views(db_dsn: str, tmp_path: Path) -> None:
    with connect(db_dsn) as conn:
        run_script(conn, "CREATE EXTENSION pg_stat_statements;\nCREATE TABLE t (a int);")
    path = tmp_path / "t.sql"
    path.write_text("CREATE TABLE t (a int);\n")
    result = diff(load_graph(sql=[path], use_cache=False), load_graph(dsn=db_dsn))
    assert result.extra == ()
    assert not result.edges_extra
