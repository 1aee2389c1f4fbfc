"""The server as the parser of last resort: views sqlglot cannot parse, resolved by PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.pq import TransactionStatus
from sqlglot.errors import ParseError

from mvgraph import RelationName, load_graph
from mvgraph.db.connect import connect
from mvgraph.db.scripts import run_script
from mvgraph.errors import SqlLoadErrors
from mvgraph.sql.dialect import parse_script
from tests.conftest import cli

Conn = psycopg.Connection[tuple[object, ...]]

# Valid PostgreSQL that sqlglot cannot parse today (a user-defined operator, a built-in pattern
# operator). The syntax work may teach sqlglot some of them: the first that still fails is used.
CANDIDATES = ["g.w ##> t.w", "t.x ~>=~ 'a'", "g.w <^> t.w"]

SCHEMA = """\
CREATE FUNCTION sp_gt(int, int) RETURNS bool LANGUAGE sql IMMUTABLE AS 'SELECT $1 > $2';
CREATE OPERATOR ##> (FUNCTION = sp_gt, LEFTARG = int, RIGHTARG = int);
CREATE OPERATOR <^> (FUNCTION = sp_gt, LEFTARG = int, RIGHTARG = int);
CREATE TABLE t (w int, x text);
CREATE TABLE u (w int);
CREATE VIEW good AS SELECT w FROM t;
CREATE MATERIALIZED VIEW odd AS SELECT t.w FROM t JOIN good g ON {cond}
  WHERE EXISTS (SELECT 1 FROM u);
CREATE VIEW top AS SELECT w FROM odd;
"""
ODD_LINE = 7

SNAPSHOT = """
SELECT (SELECT array_agg(nspname::text ORDER BY nspname) FROM pg_namespace),
       (SELECT array_agg(c.oid::bigint ORDER BY c.oid) FROM pg_class c),
       (SELECT count(*) FROM pg_proc), (SELECT count(*) FROM pg_operator),
       (SELECT count(*) FROM pg_depend)
"""


def _fails(cond: str) -> bool:
    result = parse_script(SCHEMA.format(cond=cond), keep_going=True)
    return any(e.line == ODD_LINE for e in result.errors)


@pytest.fixture
def schema_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The schema with a view sqlglot cannot parse at ODD_LINE."""
    cond = next((c for c in CANDIDATES if _fails(c)), None)
    if cond is None:  # sqlglot learnt them all: make it fail on purpose
        import mvgraph.sql.dialect as dialect

        real = dialect._parse_view

        def failing(cur: object, parser: object, *args: object) -> object:
            stmt = cur.stmt  # type: ignore[attr-defined]
            if "##>" in stmt.text(stmt.tokens[0], stmt.tokens[-1]):  # this statement only
                raise ParseError("made to fail")
            return real(cur, parser, *args)  # type: ignore[arg-type]

        monkeypatch.setattr(dialect, "_parse_view", failing)
        monkeypatch.setenv("MVGRAPH_CACHE_DIR", str(tmp_path / "cache"))
        cond = CANDIDATES[0]
    path = tmp_path / "schema.sql"
    path.write_text(SCHEMA.format(cond=cond))
    yield path


def _snapshot(dsn: str) -> tuple[object, ...]:
    with connect(dsn) as c:
        row = c.execute(SNAPSHOT).fetchone()
    assert row is not None
    return tuple(row)


def _edges(out: str) -> set[tuple[str, str]]:
    return {(e["from"], e["to"]) for e in json.loads(out)["edges"]}


def test_graph_from_sql_with_a_server_resolves_what_sqlglot_cannot(
        capsys: pytest.CaptureFixture[str], empty_db_dsn: str, schema_file: Path) -> None:
    before = _snapshot(empty_db_dsn)
    code, out, err = cli(capsys, "graph", "--from-sql", str(schema_file), "--dsn", empty_db_dsn,
                         "-f", "json")
    assert code == 0, err
    data = json.loads(out)
    assert _edges(out) == {("public.t", "public.good"), ("public.t", "public.odd"),
                           ("public.good", "public.odd"), ("public.u", "public.odd"),
                           ("public.odd", "public.top")}
    odd = next(n for n in data["nodes"] if n["name"] == "public.odd")
    assert odd["kind"] == "matview"
    assert odd["populated"] is True
    assert odd["source"] == f"{schema_file}:{ODD_LINE} (resolved by the server)"
    assert "CREATE MATERIALIZED VIEW odd" in odd["definition"]
    top = next(n for n in data["nodes"] if n["name"] == "public.top")
    assert top["source"] == f"{schema_file}:{ODD_LINE + 2}"  # parsed by sqlglot, as before
    assert _snapshot(empty_db_dsn) == before  # nothing created in the server survives


def test_without_a_server_it_stays_a_parse_error(capsys: pytest.CaptureFixture[str],
                                                 schema_file: Path) -> None:
    code, _, err = cli(capsys, "graph", "--from-sql", str(schema_file))
    assert code == 1
    assert f"{schema_file}:{ODD_LINE}:" in err
    with pytest.raises(SqlLoadErrors):  # the parse cache keeps sqlglot's answer only
        load_graph(sql=[schema_file])


def test_check_is_in_sync_when_the_database_matches(capsys: pytest.CaptureFixture[str],
                                                    db_dsn: str, schema_file: Path) -> None:
    with connect(db_dsn) as c:
        run_script(c, schema_file.read_text())
    before = _snapshot(db_dsn)
    code, out, err = cli(capsys, "check", "--from-sql", str(schema_file), "--dsn", db_dsn)
    assert code == 0, out + err
    assert "in sync" in out
    assert _snapshot(db_dsn) == before


def test_check_reports_a_real_difference_of_a_resolved_view(
        capsys: pytest.CaptureFixture[str], db_dsn: str, schema_file: Path) -> None:
    text = schema_file.read_text()
    with connect(db_dsn) as c:  # the database's odd does not read u
        run_script(c, text.replace("WHERE EXISTS (SELECT 1 FROM u)", ""))
    code, out, _ = cli(capsys, "check", "--from-sql", str(schema_file), "--dsn", db_dsn)
    assert code == 1
    assert "public.u -> public.odd" in out
    assert "public.t -> public.odd" not in out


def test_a_statement_the_server_refuses_keeps_its_parse_error(
        capsys: pytest.CaptureFixture[str], empty_db_dsn: str, schema_file: Path) -> None:
    schema_file.write_text(schema_file.read_text().replace("FROM u)", "FROM nowhere)"))
    before = _snapshot(empty_db_dsn)
    code, _, err = cli(capsys, "graph", "--from-sql", str(schema_file), "--dsn", empty_db_dsn)
    assert code == 1
    line = next(x for x in err.splitlines() if f"{schema_file}:{ODD_LINE}:" in x)
    assert 'PostgreSQL refused it too: relation "nowhere" does not exist' in line
    assert _snapshot(empty_db_dsn) == before


def test_library_resolve_with_a_connection(conn: Conn, schema_file: Path) -> None:
    g = load_graph(sql=[schema_file], resolve_with=conn)
    assert set(g.inputs(RelationName("public", "odd"))) == {
        RelationName("public", n) for n in ("t", "good", "u")}
    assert conn.info.transaction_status == TransactionStatus.IDLE
    again = load_graph(sql=[schema_file], resolve_with=conn)  # a warm parse cache, same answer
    assert set(again.g.edges) == set(g.g.edges)


def test_the_server_is_not_contacted_when_everything_parses(tmp_path: Path) -> None:
    path = tmp_path / "ok.sql"
    path.write_text("CREATE TABLE t (w int);\nCREATE VIEW v AS SELECT w FROM t;\n")
    g = load_graph(sql=[path], resolve_with="postgresql://nobody@127.0.0.1:1/none")
    assert set(g.g.edges) == {(RelationName("public", "t"), RelationName("public", "v"))}


def test_a_failing_view_may_read_another(empty_db_dsn: str, schema_file: Path) -> None:
    text = schema_file.read_text()
    cond = next(c for c in CANDIDATES if c in text)
    schema_file.write_text(text + "CREATE SCHEMA s2;\nCREATE VIEW s2.odd2 AS SELECT o.w FROM odd o,"
                                  f" t JOIN good g ON {cond};\n")
    before = _snapshot(empty_db_dsn)
    g = load_graph(sql=[schema_file], resolve_with=empty_db_dsn)
    assert set(g.inputs(RelationName("s2", "odd2"))) == {
        RelationName("public", n) for n in ("odd", "t", "good")}
    assert g.g.nodes[RelationName("s2", "odd2")]["source"].endswith("(resolved by the server)")
    assert _snapshot(empty_db_dsn) == before
