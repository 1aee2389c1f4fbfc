"""Issue 18, items 2 and 18-25: the SQL reader on real SQL (hangs, syntax, lines, messages)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest

from mvgraph import load_graph
from mvgraph.errors import SqlLoadErrors, SqlParseError
from mvgraph.frontend import parse_job_statement
from mvgraph.sql.dialect import parse_script, split_statements

LIMIT = 5.0  # seconds any one adversarial file may take through the whole reader

_UNITS = {
    "spaces": " ", "backslashes": "\\", "quotes": "'", "dquotes": '"', "dollars": "$",
    "dollar tags": "$a$ ", "comments": "/*", "line comments": "-- x\n", "semicolons": "; ",
    "backslash space": "\\ ", "e-strings": "E'\\'", "params": "$1 ", "parens": "(",
    "copy": "COPY t FROM stdin;\n", "mix": "\\ ;  ' $$ /* -- \" E'\\' ",
}


def _adversarial() -> list[tuple[str, str]]:
    size = 100_000
    cases = [("foreign_data.sql", "\\set x 1\nselect 1;" + " " * 44 + "x\n")]
    for name, unit in _UNITS.items():
        run = unit * (size // len(unit) // 2)
        cases += [
            (name, run),
            (f"view then {name}", "CREATE VIEW v AS SELECT 1 FROM t WHERE x = '" + run),
            (f"backslash, ';' then {name}", "\\x\nselect '\\';" + run + ";" + " " * 5000),
            (f"{name} in a view", "CREATE VIEW v AS SELECT " + run + " FROM t;"),
        ]
    return cases


@pytest.mark.parametrize(("name", "text"), _adversarial(), ids=[c[0] for c in _adversarial()])
def test_no_file_makes_the_reader_hang(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / "adversarial.sql"
    path.write_text(text)
    start = time.perf_counter()
    split_statements(text)
    parse_script(text, keep_going=True)
    with contextlib.suppress(SqlLoadErrors):
        load_graph(sql=[path], use_cache=False, keep_going=True)
    assert time.perf_counter() - start < LIMIT, name


@pytest.mark.parametrize("text", [
    "CANCEL JOBS 1" + " " * 3000 + "x",
    "SET BACKGROUND_DDL = a" + " " * 30000 + "x",
    "SHOW JOBS" + " " * 30000 + "x",
])
def test_job_statements_are_recognised_in_linear_time(text: str) -> None:
    start = time.perf_counter()
    with contextlib.suppress(SqlParseError):  # CANCEL JOBS 1 ... x: not job ids
        assert parse_job_statement(text) is None
    assert time.perf_counter() - start < 1.0


def test_job_statements_still_take_a_trailing_semicolon() -> None:
    job = parse_job_statement("CANCEL JOBS 4, 7 ;  \n")
    assert job is not None and job.ids == (4, 7)
    show = parse_job_statement("SHOW JOBS ;")
    assert show is not None and show.verb == "show"


def _defs(text: str) -> dict[str, tuple[list[str], str | None]]:
    result = parse_script(text, path="f.sql")
    return {str(e.definition.name): (sorted(map(str, e.definition.reads)), e.definition.source)
            for e in result.events if hasattr(e, "definition")}


def test_search_and_cycle_clauses_of_recursive_ctes() -> None:
    text = """CREATE TABLE g (f int, t int);
CREATE VIEW d AS WITH RECURSIVE s(f, t) AS (SELECT f, t FROM g UNION ALL
  SELECT g.f, g.t FROM g, s WHERE g.f = s.t) SEARCH DEPTH FIRST BY f, t SET seq SELECT * FROM s;
CREATE VIEW b AS WITH RECURSIVE s(f) AS MATERIALIZED (SELECT f FROM g UNION ALL
  SELECT g.f FROM g JOIN s ON g.f = s.f) SEARCH BREADTH FIRST BY f SET ord SELECT * FROM s;
CREATE VIEW c AS WITH RECURSIVE s(f, t) AS (SELECT f, t FROM g UNION ALL
  SELECT g.f, g.t FROM g, s WHERE g.f = s.t) CYCLE f, t SET is_cycle USING path SELECT * FROM s;
CREATE VIEW e AS WITH RECURSIVE s(f) AS (SELECT f FROM g UNION ALL SELECT g.f FROM g, s)
  SEARCH DEPTH FIRST BY f SET o CYCLE f SET c TO 'y' DEFAULT 'n' USING p SELECT * FROM s;
"""
    defs = _defs(text)
    for view in ("d", "b", "c", "e"):
        assert defs[f"public.{view}"][0] == ["public.g"], view


def test_create_table_tablespace_as_and_as_execute() -> None:
    defs = _defs("CREATE TABLE x TABLESPACE pg_default AS SELECT 1 AS a;\n"
                 "CREATE TABLE y WITHOUT OIDS AS EXECUTE p(1);\n"
                 "CREATE TEMP TABLE z ON COMMIT DROP AS SELECT 1;\n")
    assert set(defs) == {"public.x", "public.y", "public.z"}


def test_psql_backslash_semicolon_separates_statements() -> None:
    text = "CREATE TABLE a (x int) \\;\nCREATE VIEW v AS SELECT x FROM a;\n"
    assert _defs(text) == {"public.a": ([], "f.sql:1"), "public.v": (["public.a"], "f.sql:2")}
    assert [s for _, s in split_statements("select 1 \\; select 2")] == ["select 1", "select 2"]


LINES = """-- parameters ($1) and dollar quotes before definitions
PREPARE p (int) AS SELECT $1
  , $1 + 1;
CREATE FUNCTION f(int) RETURNS int AS 'select $1
  + 1' LANGUAGE sql;
CREATE TABLE t (a int);
CREATE VIEW v1 AS SELECT a FROM t
  WHERE a = $1 OR a = $2;
CREATE FUNCTION g() RETURNS int AS $$ select 1 $$ LANGUAGE sql; CREATE VIEW v2 AS
  SELECT a
  FROM t;


CREATE MATERIALIZED VIEW m AS SELECT a FROM v2 WHERE a = ANY ($3::int[])
WITH NO DATA;
CREATE VIEW bad AS SELECT a FROM t WHERE a = $1
  AND a > ;
"""


def test_every_line_is_the_statements_real_line(tmp_path: Path) -> None:
    result = parse_script(LINES, path="f.sql", keep_going=True)
    lines = LINES.split("\n")
    for event in result.events:
        definition = getattr(event, "definition", None)
        if definition is None:
            continue
        line = int(str(definition.source).rpartition(":")[2])
        assert f" {definition.name.name} " in f" {lines[line - 1]} ", definition
    assert {str(e.definition.name): e.definition.source for e in result.events
            if hasattr(e, "definition")} == {"public.t": "f.sql:6", "public.v1": "f.sql:7",
                                             "public.v2": "f.sql:9", "public.m": "f.sql:14"}
    (error,) = result.errors
    assert error.line == 16 and error.at == (17, 9)
    assert str(error).startswith('f.sql:17:9: syntax error at or near ">"')


@pytest.mark.parametrize("text", [
    "CREATE VIEW v AS SELECT FROM t WHERE;",
    "CREATE VIEW v AS SELECT 1 FROM;",
    "CREATE VIEW v AS SELECT a FROM t t2 t3 t4;",
    "CREATE MATERIALIZED VIEW mv AS SELECT a FROM t WHERE a = ) WITH NO DATA;",
    "CREATE VIEW v AS\n  SELECT a\n  FROM t WHERE a >>>>= 1 ORDER;",
    "CREATE VIEW v AS WITH x AS (SELECT 1) ;",
])
def test_messages_name_no_parser_internals(text: str) -> None:
    (error,) = parse_script(text, path="bad.sql", keep_going=True).errors
    message = str(error)
    for internal in ("<class", "<Token", "SENTINEL", "Required keyword", "(line ", "column "):
        assert internal not in message
    assert error.at is not None
    assert message.startswith(f"bad.sql:{error.at[0]}:{error.at[1]}: ")


def test_an_unterminated_string_names_no_text() -> None:
    (error,) = parse_script("CREATE VIEW v AS SELECT 'abc\n  more", path="b.sql",
                            keep_going=True).errors
    assert "more" not in error.message and "unterminated" in error.message


def test_returns_setof_a_table_is_read_where_its_columns_are() -> None:
    defs = _defs("""CREATE TABLE t (a int);
CREATE FUNCTION f() RETURNS SETOF t AS 'select * from t' LANGUAGE sql;
CREATE FUNCTION n() RETURNS SETOF int AS 'select 1' LANGUAGE sql;
CREATE VIEW v AS SELECT * FROM f();
CREATE VIEW v2 AS SELECT f();
CREATE VIEW v3 AS SELECT a FROM f() AS x WHERE a > 1;
CREATE VIEW v4 AS SELECT count(*) FROM f();
CREATE VIEW v5 AS SELECT * FROM n();
""")
    assert {name: reads for name, (reads, _) in defs.items()} == {
        "public.t": [], "public.v": ["public.t"], "public.v2": [], "public.v3": ["public.t"],
        "public.v4": [], "public.v5": []}


def test_a_view_reading_itself_is_a_warning_and_left_out(tmp_path: Path) -> None:
    path = tmp_path / "self.sql"
    path.write_text("CREATE OR REPLACE VIEW s AS SELECT 1 AS a;\n"
                    "CREATE OR REPLACE VIEW s AS TABLE s;\nCREATE VIEW r AS SELECT a FROM s;\n")
    graph = load_graph(sql=[path], use_cache=False)
    assert [str(n) for n in graph.g.nodes] == ["public.r"]
    assert [c.path for c in graph.cycles] == ["public.s -> public.s"]
    assert any(w.startswith("public.s reads itself") for w in graph.warnings)


def test_a_file_of_bare_queries_is_warned_about(tmp_path: Path) -> None:
    views = tmp_path / "db" / "views"
    views.mkdir(parents=True)
    (views / "orders_v01.sql").write_text("SELECT id, total FROM orders\n")
    (views / "real.sql").write_text("CREATE TABLE orders (id int, total int);\n")
    graph = load_graph(sql=[views], use_cache=False)
    assert [w for w in graph.warnings if "defines no view" in w] == [
        f"{views / 'orders_v01.sql'} defines no view or table: its statement is not CREATE "
        "[MATERIALIZED] VIEW or CREATE TABLE (a file holding only a view's query needs CREATE "
        "VIEW name AS before it)"]
