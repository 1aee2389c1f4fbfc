"""The SQL front end: GaussDB clauses, dependency extraction and script events (no database)."""

from __future__ import annotations

import doctest
import pickle
import time

import pytest
import sqlglot
from sqlglot import exp
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers
from sqlglot.optimizer.scope import traverse_scope

import mvgraph.sql.dialect as dialect_module
from mvgraph.errors import SqlParseError
from mvgraph.model.definitions import Definition, Kind, Schedule
from mvgraph.model.names import RelationName
from mvgraph.sql.dialect import (
    VOLATILE_FUNCTIONS,
    AlterSchedule,
    Define,
    Drop,
    MvgraphPostgres,
    Rename,
    ScriptResult,
    dependencies,
    parse_alter_refresh,
    parse_script,
    split_statements,
)

R = RelationName


def defines(result: ScriptResult) -> list[Definition]:
    return [e.definition for e in result.events if isinstance(e, Define)]


def one(sql: str, **kwargs: object) -> Definition:
    result = parse_script(sql, **kwargs)  # type: ignore[arg-type]
    found = defines(result)
    assert len(found) == 1, result
    return found[0]


def deps(query: str, search_path: tuple[str, ...] = ("public",)) -> set[str]:
    tree = sqlglot.parse_one(query, dialect=MvgraphPostgres)
    return {str(name) for name in dependencies(tree, search_path)}


# --------------------------------------------------------------------------- GaussDB clauses

TS = "'2020-01-01 12:12:12'::timestamptz"
BEHAVIOURS = [
    ("DEFAULT", "DEFAULT"),
    ("restrict", "RESTRICT"),
    ("CASCADE FORWARD", "CASCADE FORWARD"),
    ("cascade Backward", "CASCADE BACKWARD"),
    ("Cascade   ALL", "CASCADE ALL"),
]


@pytest.mark.parametrize(("written", "normalised"), BEHAVIOURS)
def test_create_refresh_behaviours(written: str, normalised: str) -> None:
    d = one(
        f"CREATE MATERIALIZED VIEW v REFRESH {written} START WITH ({TS}) "
        "EVERY (interval '1 s') AS select a from t;"
    )
    assert d.kind is Kind.MATVIEW
    assert d.schedule == Schedule(behavior=normalised, start=TS, every="interval '1 s'")
    assert d.sql == "select a from t"
    assert d.reads == {R("public", "t")}


@pytest.mark.parametrize(("clause", "schedule"), [
    ("REFRESH", Schedule()),
    ("REFRESH DEFAULT", Schedule(behavior="DEFAULT")),
    (f"REFRESH START WITH ({TS})", Schedule(start=TS)),
    ("REFRESH EVERY (interval '1 day')", Schedule(every="interval '1 day'")),
    (f"REFRESH START WITH ({TS}) EVERY (interval '2 h')",
     Schedule(start=TS, every="interval '2 h'")),
    ("REFRESH CASCADE ALL EVERY ( interval '5 min' )",
     Schedule(behavior="CASCADE ALL", every="interval '5 min'")),
    (f"REFRESH RESTRICT START WITH ({TS}) EVERY (interval '1 s') ENABLE QUERY REWRITE",
     Schedule("RESTRICT", TS, "interval '1 s'", True)),
    ("REFRESH EVERY (interval '1 s') disable query rewrite",
     Schedule(every="interval '1 s'", query_rewrite=False)),
    ("ENABLE QUERY REWRITE", Schedule(query_rewrite=True)),
    ("DISABLE QUERY REWRITE", Schedule(query_rewrite=False)),
    ("BUILD IMMEDIATE REFRESH CASCADE FORWARD", Schedule(behavior="CASCADE FORWARD")),
])
def test_create_refresh_forms(clause: str, schedule: Schedule) -> None:
    d = one(f"CREATE MATERIALIZED VIEW s.v {clause} AS SELECT 1 FROM t")
    assert d.name == R("s", "v")
    assert d.schedule == schedule
    assert d.populated is True


def test_matview_without_clauses_has_no_schedule() -> None:
    d = one("CREATE MATERIALIZED VIEW v AS SELECT 1")
    assert d.schedule is None and d.populated is True


def test_build_deferred_means_not_populated() -> None:
    d = one("CREATE MATERIALIZED VIEW v BUILD DEFERRED REFRESH DEFAULT AS SELECT 1")
    assert d.populated is False
    assert d.schedule == Schedule(behavior="DEFAULT")


def test_refresh_expressions_keep_source_text() -> None:
    d = one(
        "CREATE MATERIALIZED VIEW v REFRESH START WITH (now() + interval '1 day') "
        "EVERY (interval '1' hour) AS SELECT 1"
    )
    assert d.schedule == Schedule(start="now() + interval '1 day'", every="interval '1' hour")


@pytest.mark.parametrize(("statement", "expected"), [
    ("ALTER MATERIALIZED VIEW v REFRESH default;", Schedule(behavior="DEFAULT")),
    ("alter materialized view v refresh cascade all", Schedule(behavior="CASCADE ALL")),
    ("ALTER MATERIALIZED VIEW v REFRESH RESTRICT", Schedule(behavior="RESTRICT")),
    ("ALTER MATERIALIZED VIEW v REFRESH CASCADE FORWARD", Schedule(behavior="CASCADE FORWARD")),
    ("ALTER MATERIALIZED VIEW v REFRESH CASCADE BACKWARD",
     Schedule(behavior="CASCADE BACKWARD")),
    (f"ALTER MATERIALIZED VIEW v REFRESH START WITH ({TS})", Schedule(start=TS)),
    ("ALTER MATERIALIZED VIEW v REFRESH EVERY (interval '1 s')",
     Schedule(every="interval '1 s'")),
    (f"ALTER MATERIALIZED VIEW v REFRESH CASCADE ALL START WITH ({TS}) EVERY (interval '1 s')",
     Schedule("CASCADE ALL", TS, "interval '1 s'")),
    ("ALTER MATERIALIZED VIEW v ENABLE QUERY REWRITE", Schedule(query_rewrite=True)),
    ("ALTER MATERIALIZED VIEW IF EXISTS v DISABLE QUERY REWRITE", Schedule(query_rewrite=False)),
])
def test_alter_refresh_forms(statement: str, expected: Schedule) -> None:
    result = parse_script(statement)
    assert result.events == (AlterSchedule(R("public", "v"), expected),)
    assert parse_alter_refresh(statement) == (R("public", "v"), expected)


def test_parse_alter_refresh_names_and_rejections() -> None:
    assert parse_alter_refresh('ALTER MATERIALIZED VIEW "Sales".Mv REFRESH DEFAULT') == (
        R("Sales", "mv"), Schedule(behavior="DEFAULT"))
    found = parse_alter_refresh("ALTER MATERIALIZED VIEW mv REFRESH DEFAULT",
                                search_path=["$user", "app"])
    assert found is not None and found[0] == R("app", "mv")
    assert parse_alter_refresh("ALTER MATERIALIZED VIEW v RENAME TO w") is None
    assert parse_alter_refresh("ALTER TABLE t ADD COLUMN x int") is None
    assert parse_alter_refresh("SELECT 1") is None
    assert parse_alter_refresh("ALTER MATERIALIZED VIEW v OWNER TO bob") is None
    with pytest.raises(SqlParseError):
        parse_alter_refresh("ALTER MATERIALIZED VIEW v REFRESH CASCADE SIDEWAYS")
    with pytest.raises(SqlParseError):
        parse_alter_refresh("ALTER MATERIALIZED VIEW v REFRESH START WITH ()")


@pytest.mark.parametrize("bad", [
    "CREATE MATERIALIZED VIEW v REFRESH CASCADE AS SELECT 1",
    "CREATE MATERIALIZED VIEW v REFRESH START WITH (1 +) AS SELECT 1",
    "CREATE MATERIALIZED VIEW v REFRESH EVERY (interval '1 s') EVERY (interval '2 s') AS SELECT 1",
    "CREATE MATERIALIZED VIEW v BUILD LATER AS SELECT 1",
    "CREATE VIEW v REFRESH DEFAULT AS SELECT 1",
    "CREATE MATERIALIZED VIEW v ENABLE QUERY AS SELECT 1",
    "CREATE VIEW v AS SELECT 1 WITH NO DATA",
    "CREATE MATERIALIZED VIEW v AS SELECT 1 WITH CHECK OPTION",
])
def test_malformed_gaussdb_clauses_raise(bad: str) -> None:
    with pytest.raises(SqlParseError):
        parse_script(bad)


# --------------------------------------------------------------------------- the dialect


def test_dialect_parses_refresh_into_stock_nodes() -> None:
    tree = sqlglot.parse_one(
        f"CREATE MATERIALIZED VIEW v REFRESH CASCADE ALL START WITH ({TS}) "
        "EVERY (interval '1 s') ENABLE QUERY REWRITE AS SELECT a FROM t WITH NO DATA",
        dialect=MvgraphPostgres,
    )
    assert isinstance(tree, exp.Create)
    refresh = tree.find(exp.RefreshTriggerProperty)
    assert refresh is not None
    assert refresh.args["method"].name == "CASCADE ALL"
    assert isinstance(refresh.args["starts"], exp.Cast)
    assert isinstance(refresh.args["every"], exp.Interval)
    assert isinstance(tree.expression, exp.Select)
    assert tree.find(exp.WithDataProperty) is not None


def test_dialect_regenerates_and_round_trips() -> None:
    source = (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS s.v (a) BUILD DEFERRED REFRESH CASCADE ALL "
        f"START WITH ({TS}) EVERY (interval '1 s') DISABLE QUERY REWRITE "
        "AS SELECT a FROM t WITH NO DATA"
    )
    out = sqlglot.parse_one(source, dialect=MvgraphPostgres).sql(dialect=MvgraphPostgres)
    assert out.startswith("CREATE MATERIALIZED VIEW IF NOT EXISTS s.v (a) ")
    assert "BUILD DEFERRED REFRESH CASCADE ALL START WITH (" in out
    assert out.endswith(
        "EVERY (INTERVAL '1 SECOND') DISABLE QUERY REWRITE AS SELECT a FROM t WITH NO DATA"
    )
    tree = sqlglot.parse_one(source, dialect=MvgraphPostgres)
    assert tree.sql(dialect=MvgraphPostgres, copy=False) == out
    assert tree.find(exp.RefreshTriggerProperty).args["every"] is not None  # type: ignore[union-attr]
    again = one(out)
    assert again.schedule is not None
    assert again.schedule.behavior == "CASCADE ALL"
    assert again.schedule.every == "INTERVAL '1 SECOND'"
    assert again.schedule.query_rewrite is False
    assert again.populated is False and again.columns == ("a",)


@pytest.mark.parametrize(("source", "expected"), [
    ("ALTER MATERIALIZED VIEW v REFRESH default",
     "ALTER MATERIALIZED VIEW v REFRESH DEFAULT"),
    ("ALTER MATERIALIZED VIEW v REFRESH START WITH (now()) EVERY (interval '1 s')",
     "ALTER MATERIALIZED VIEW v REFRESH START WITH (CURRENT_TIMESTAMP) "
     "EVERY (INTERVAL '1 SECOND')"),
    ("ALTER MATERIALIZED VIEW v ENABLE QUERY REWRITE",
     "ALTER MATERIALIZED VIEW v ENABLE QUERY REWRITE"),
    ('ALTER MATERIALIZED VIEW IF EXISTS v SET SCHEMA "Archive"',
     'ALTER MATERIALIZED VIEW IF EXISTS v SET SCHEMA "Archive"'),
    ("ALTER VIEW s.v RENAME TO w", "ALTER VIEW s.v RENAME TO w"),
    ("CREATE VIEW v WITH (security_barrier) AS SELECT 1 WITH LOCAL CHECK OPTION",
     "CREATE VIEW v WITH (security_barrier=TRUE) AS SELECT 1 WITH LOCAL CHECK OPTION"),
    ("CREATE OR REPLACE TEMP VIEW v AS SELECT 1", "CREATE OR REPLACE TEMPORARY VIEW v AS SELECT 1"),
    ("SELECT a FROM t", "SELECT a FROM t"),
    ("INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (1)"),
])
def test_dialect_generate(source: str, expected: str) -> None:
    assert sqlglot.transpile(source, read=MvgraphPostgres, write=MvgraphPostgres) == [expected]


def test_dialect_splits_scripts_and_leaves_postgres_alone() -> None:
    trees = sqlglot.parse(
        "CREATE MATERIALIZED VIEW v REFRESH DEFAULT AS SELECT 1; SELECT 2;",
        dialect=MvgraphPostgres,
    )
    assert [type(t).__name__ for t in trees] == ["Create", "Select"]
    # The stock Postgres dialect is not patched: it still treats the clause as unsupported.
    plain = sqlglot.parse_one("ALTER MATERIALIZED VIEW v REFRESH DEFAULT", dialect="postgres")
    assert isinstance(plain, exp.Command)


def test_dialect_expands_recursive_views() -> None:
    d = one("CREATE RECURSIVE VIEW nums (n) AS SELECT 1 UNION ALL SELECT n + 1 FROM nums "
            "WHERE n < (SELECT max(x) FROM lim)")
    assert d.kind is Kind.VIEW and d.columns == ("n",)
    assert d.reads == {R("public", "lim")}
    assert d.sql is not None and d.sql.startswith("WITH RECURSIVE nums(n) AS (SELECT 1 UNION")
    with pytest.raises(SqlParseError):
        parse_script("CREATE RECURSIVE VIEW nums AS SELECT 1")


# --------------------------------------------------------------------------- dependencies

DEPENDENCY_CASES = [
    ("cte_vs_table", "WITH c AS (SELECT * FROM a) SELECT * FROM c JOIN b ON true",
     {"public.a", "public.b"}),
    ("cte_shadows_table", "WITH a AS (SELECT * FROM a WHERE x > 0) SELECT * FROM a",
     {"public.a"}),
    ("cte_shadows_later", "WITH x AS (SELECT 1), a AS (SELECT * FROM x JOIN a ON true) "
     "SELECT * FROM a", {"public.a"}),
    ("cte_forward_ref_is_table", "WITH a1 AS (SELECT * FROM b1), b1 AS (SELECT 1) "
     "SELECT * FROM a1", {"public.b1"}),
    ("recursive_cte", "WITH RECURSIVE r(n) AS (SELECT n FROM seed UNION ALL "
     "SELECT n + 1 FROM r WHERE n < 10) SELECT * FROM r", {"public.seed"}),
    ("recursive_cte_nested", "WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM "
     "(SELECT * FROM r) x WHERE EXISTS (SELECT 1 FROM r2)) SELECT * FROM r", {"public.r2"}),
    ("cte_case_folding", 'WITH Foo AS (SELECT 1) SELECT * FROM foo, FOO, "Foo"',
     {'public."Foo"'}),
    ("nested_cte_scope", "SELECT * FROM (WITH q AS (SELECT * FROM base) SELECT * FROM q) s, q",
     {"public.base", "public.q"}),
    ("cte_in_subquery", "WITH q AS (SELECT 1) SELECT * FROM x WHERE EXISTS (SELECT 1 FROM q)",
     {"public.x"}),
    ("cte_in_lateral", "WITH c AS (SELECT 1) SELECT * FROM a, LATERAL (SELECT * FROM c) l",
     {"public.a"}),
    ("union", "SELECT a FROM t1 UNION SELECT b FROM t2 INTERSECT SELECT c FROM t3 "
     "EXCEPT SELECT d FROM t4", {"public.t1", "public.t2", "public.t3", "public.t4"}),
    ("union_parenthesised", "(SELECT 1 FROM u1) UNION ALL (SELECT 2 FROM u2) ORDER BY 1",
     {"public.u1", "public.u2"}),
    ("lateral_comma", "SELECT * FROM a, LATERAL (SELECT * FROM b WHERE b.x = a.x) l",
     {"public.a", "public.b"}),
    ("lateral_join", "SELECT * FROM a JOIN LATERAL (SELECT * FROM b WHERE b.x = a.x) l ON true",
     {"public.a", "public.b"}),
    ("lateral_function", "SELECT * FROM a CROSS JOIN LATERAL generate_series(1, a.n) g",
     {"public.a"}),
    ("subquery_in_select", "SELECT (SELECT max(x) FROM b) AS m, ARRAY(SELECT 1 FROM c) FROM a",
     {"public.a", "public.b", "public.c"}),
    ("subquery_in_where", "SELECT * FROM a WHERE EXISTS (SELECT 1 FROM b WHERE b.id = a.id) "
     "AND a.x IN (SELECT x FROM c) AND a.y = ANY (SELECT y FROM d) AND a.z > ALL "
     "(SELECT z FROM e)", {"public.a", "public.b", "public.c", "public.d", "public.e"}),
    ("subquery_elsewhere", "SELECT count(*) FILTER (WHERE x IN (SELECT 1 FROM f)) FROM a "
     "GROUP BY x HAVING count(*) > (SELECT 1 FROM h) ORDER BY (SELECT 1 FROM o)",
     {"public.a", "public.f", "public.h", "public.o"}),
    ("joins_parenthesised", "SELECT * FROM ((a JOIN b ON true) LEFT JOIN (c JOIN d USING (id)) "
     "ON true) NATURAL JOIN e", {"public.a", "public.b", "public.c", "public.d", "public.e"}),
    ("self_join_and_schema", "SELECT * FROM a JOIN a a2 ON true JOIN s.a ON true",
     {"public.a", "s.a"}),
    ("quoted_mixed_case", 'SELECT * FROM "Sales"."Big Orders" o JOIN Sales.Orders p ON true '
     'JOIN "Mixed" ON true', {'"Sales"."Big Orders"', "sales.orders", 'public."Mixed"'}),
    ("three_part_name", "SELECT * FROM db.sch.tbl", {"sch.tbl"}),
    ("table_functions", "SELECT * FROM generate_series(1, 10) AS g(n), unnest(ARRAY[1]) u, "
     "my_func(3) f, s.fn(1) ff, ROWS FROM (generate_series(1, 2)) r", set()),
    ("function_args_subquery", "SELECT * FROM unnest(ARRAY(SELECT x FROM arr_t)) u, "
     "generate_series(1, (SELECT max(n) FROM mx)) g", {"public.arr_t", "public.mx"}),
    ("values", "SELECT * FROM (VALUES (1, 2), (3, 4)) AS v(a, b) JOIN t ON true "
     "WHERE v.a IN (VALUES (1))", {"public.t"}),
    ("columns_and_functions", "SELECT a.b, x.y.z, count(*), lower(a.name), now() FROM a",
     {"public.a"}),
    ("derived_alias_is_not_a_table_elsewhere",
     "SELECT * FROM (SELECT 1 FROM src) AS t, LATERAL (SELECT * FROM t) z", {"public.src",
                                                                            "public.t"}),
    ("row_locks_name_aliases", "SELECT * FROM orders o FOR UPDATE OF o", {"public.orders"}),
    ("only_and_table_query", "SELECT * FROM ONLY parent_t UNION ALL TABLE tq",
     {"public.parent_t", "public.tq"}),
]


@pytest.mark.parametrize(("query", "expected"), [c[1:] for c in DEPENDENCY_CASES],
                         ids=[c[0] for c in DEPENDENCY_CASES])
def test_dependencies(query: str, expected: set[str]) -> None:
    assert deps(query) == expected


@pytest.mark.parametrize("query", [c[1] for c in DEPENDENCY_CASES],
                         ids=[c[0] for c in DEPENDENCY_CASES])
def test_cte_fallback_agrees_with_scope(query: str) -> None:
    """The CTE-visibility walk used as a safety net classifies every table as scope does."""
    tree = sqlglot.parse_one(query, dialect=MvgraphPostgres)
    normalize_identifiers(tree, dialect="postgres")
    sources: set[int] = set()
    for scope in traverse_scope(tree):
        sources.update(id(s) for s in scope.sources.values() if isinstance(s, exp.Table))
    for table in tree.find_all(exp.Table):
        if isinstance(table.this, exp.Identifier) and dialect_module._in_from_or_join(table):
            assert (id(table) in sources) != dialect_module._names_cte(table), table.sql()


FLAT_CASES = [
    "SELECT a.id, b.x, count(*) FROM a JOIN b ON a.id = b.a_id WHERE b.x > 1 GROUP BY 1, 2",
    'SELECT * FROM "Sales"."Big Orders" o, s.t, ONLY p CROSS JOIN generate_series(1, 3) g',
    "SELECT 1",
    "SELECT * FROM a LEFT JOIN b USING (id) WHERE a.x IN (1, 2)",
]


@pytest.mark.parametrize("query", FLAT_CASES + [c[1] for c in DEPENDENCY_CASES])
def test_flat_shortcut_agrees_with_scope(query: str) -> None:
    """The single-SELECT shortcut, wherever it applies, gives what scope analysis gives."""
    tree = sqlglot.parse_one(query, dialect=MvgraphPostgres)
    by_scope = dialect_module._references(tree.copy())
    applies = dialect_module._is_flat(query) and (
        dialect_module._flat_select_tables(tree) is not None)
    assert applies or query not in FLAT_CASES
    assert dialect_module._references(tree.copy(), query) == by_scope


def test_dependencies_search_path_and_no_mutation() -> None:
    tree = sqlglot.parse_one("WITH Q AS (SELECT 1) SELECT * FROM Foo, q", dialect=MvgraphPostgres)
    before = tree.sql()
    assert dependencies(tree, ["$user", "app", "public"]) == {R("app", "foo")}
    assert tree.sql() == before


def test_view_bodies_from_values() -> None:
    d = one("CREATE VIEW v AS VALUES (1), ((SELECT max(x) FROM t))")
    assert d.reads == {R("public", "t")}


# --------------------------------------------------------------------------- scripts


def test_views_matviews_and_columns() -> None:
    result = parse_script(
        "CREATE VIEW v (a, \"B\") AS SELECT 1, 2;\n"
        "CREATE OR REPLACE VIEW v2 AS SELECT * FROM v;\n"
        "CREATE TEMP VIEW tv AS SELECT 1;\n"
        "CREATE MATERIALIZED VIEW IF NOT EXISTS mv (x) AS SELECT a FROM v WITH NO DATA;\n"
        "CREATE MATERIALIZED VIEW mv2 AS SELECT 1 WITH DATA;\n"
        "CREATE MATERIALIZED VIEW mv3 USING heap WITH (fillfactor = 70) TABLESPACE pg_default "
        "AS SELECT 1;\n",
        path="views.sql",
    )
    v, v2, tv, mv, mv2, mv3 = defines(result)
    assert (v.kind, v.columns, v.populated) == (Kind.VIEW, ("a", "B"), None)
    assert v.source == "views.sql:1"
    assert v2.reads == {R("public", "v")} and v2.sql == "SELECT * FROM v"
    assert tv.kind is Kind.VIEW
    assert (mv.kind, mv.populated, mv.columns, mv.source) == (Kind.MATVIEW, False, ("x",),
                                                              "views.sql:4")
    assert mv.sql == "SELECT a FROM v"
    assert mv2.populated is True and mv3.populated is True
    assert result.ignored == 0


def test_tables_of_every_kind() -> None:
    result = parse_script(
        "CREATE TABLE t (id int PRIMARY KEY, \"Name\" text, CONSTRAINT c CHECK (id > 0),\n"
        "  PRIMARY KEY (id), FOREIGN KEY (id) REFERENCES u (a), UNIQUE (\"Name\"));\n"
        "CREATE UNLOGGED TABLE IF NOT EXISTS u (a int);\n"
        "CREATE TEMPORARY TABLE tmp (a int) ON COMMIT DROP;\n"
        "CREATE TABLE p (a int, b date) PARTITION BY RANGE (b);\n"
        "CREATE TABLE p1 PARTITION OF p FOR VALUES FROM ('2020-01-01') TO ('2021-01-01');\n"
        "CREATE FOREIGN TABLE f (a int) SERVER s OPTIONS (table_name 'x');\n"
        "CREATE TABLE ctas (x, y) AS SELECT a, b FROM p WITH NO DATA;\n"
        "CREATE TABLE ctas2 AS SELECT * FROM t;\n"
    )
    got = [(str(d.name), d.kind, d.reads, d.columns) for d in defines(result)]
    assert got == [
        ("public.t", Kind.TABLE, frozenset(), ("id", "Name")),
        ("public.u", Kind.TABLE, frozenset(), ("a",)),
        ("public.tmp", Kind.TABLE, frozenset(), ("a",)),
        ("public.p", Kind.PARTITIONED_TABLE, frozenset(), ("a", "b")),
        ("public.p1", Kind.TABLE, frozenset(), ()),
        ("public.f", Kind.FOREIGN_TABLE, frozenset(), ("a",)),
        ("public.ctas", Kind.TABLE, frozenset(), ("x", "y")),
        ("public.ctas2", Kind.TABLE, frozenset(), ()),
    ]


def test_quoted_and_qualified_targets() -> None:
    d = one('CREATE MATERIALIZED VIEW "Sales"."Big Orders" AS SELECT * FROM Sales.Orders')
    assert d.name == R("Sales", "Big Orders")
    assert d.reads == {R("sales", "orders")}


def test_search_path_changes_resolution() -> None:
    result = parse_script(
        "CREATE TABLE base (a int);\n"                      # public.base
        "SET search_path TO app, \"$user\", public;\n"
        "CREATE TABLE own (a int);\n"                       # app.own
        "CREATE VIEW v AS SELECT * FROM base, own, other;\n"
        "SET search_path = 'Odd', public;\n"
        "CREATE VIEW w AS SELECT * FROM own;\n"
        "SET LOCAL search_path TO DEFAULT;\n"
        "CREATE VIEW x AS SELECT 1;\n"
        "SET search_path TO app;\n"
        "RESET search_path;\n"
        "CREATE VIEW y AS SELECT 1;\n",
        search_path=("public",),
    )
    assert result.ignored == 0
    _base, own, v, w, x, y = result.events
    assert isinstance(v, Define) and isinstance(w, Define)
    assert own.definition.name == R("app", "own")  # type: ignore[union-attr]
    assert v.definition.name == R("app", "v")
    # base was defined in a later schema of the path; other is unknown: first schema.
    assert v.definition.reads == {R("public", "base"), R("app", "own"), R("app", "other")}
    assert v.unqualified == {"base", "own", "other"}
    assert v.search_path == ("app", "public")
    assert w.definition.name == R("Odd", "w")
    assert w.definition.reads == {R("Odd", "own")}
    assert w.search_path == ("Odd", "public")
    assert x.definition.name == R("public", "x")  # type: ignore[union-attr]
    assert y.definition.name == R("public", "y")  # type: ignore[union-attr]


def test_qualified_reads_are_not_unqualified() -> None:
    result = parse_script("CREATE VIEW v AS SELECT * FROM s.t", search_path=["app"])
    event = result.events[0]
    assert isinstance(event, Define)
    assert event.unqualified == frozenset() and event.search_path == ("app",)


def test_renames_set_schema_and_drops() -> None:
    result = parse_script(
        "ALTER TABLE t RENAME TO t2;\n"
        "ALTER TABLE IF EXISTS ONLY s.t RENAME TO u;\n"
        "ALTER VIEW v RENAME TO \"V2\";\n"
        "ALTER MATERIALIZED VIEW mv RENAME TO mv2;\n"
        "ALTER FOREIGN TABLE f SET SCHEMA remote;\n"
        "ALTER MATERIALIZED VIEW IF EXISTS app.mv SET SCHEMA archive;\n"
        "DROP TABLE IF EXISTS a, s.b CASCADE;\n"
        "DROP MATERIALIZED VIEW mv2;\n"
        "DROP VIEW IF EXISTS \"V2\" RESTRICT;\n"
        "DROP FOREIGN TABLE remote.f;\n"
        "DROP INDEX i;\n"
        "ALTER TABLE t2 ADD COLUMN c int;\n"
        "ALTER TABLE t2 RENAME COLUMN c TO d;\n"
        "ALTER MATERIALIZED VIEW x OWNER TO bob;\n"
    )
    assert result.events == (
        Rename(R("public", "t"), R("public", "t2")),
        Rename(R("s", "t"), R("s", "u")),
        Rename(R("public", "v"), R("public", "V2")),
        Rename(R("public", "mv"), R("public", "mv2")),
        Rename(R("public", "f"), R("remote", "f")),
        Rename(R("app", "mv"), R("archive", "mv")),
        Drop(R("public", "a")),
        Drop(R("s", "b")),
        Drop(R("public", "mv2")),
        Drop(R("public", "V2")),
        Drop(R("remote", "f")),
    )
    assert result.ignored == 4


def test_renamed_and_dropped_names_follow_the_search_path() -> None:
    result = parse_script(
        "SET search_path TO a, b;\n"
        "CREATE TABLE b.t (x int);\n"
        "CREATE VIEW v1 AS SELECT * FROM t;\n"     # b.t: defined earlier in b
        "ALTER TABLE t RENAME TO t2;\n"            # b.t -> b.t2
        "CREATE VIEW v2 AS SELECT * FROM t2;\n"    # b.t2
        "DROP TABLE t2;\n"                         # b.t2 gone
        "CREATE VIEW v3 AS SELECT * FROM t2;\n"    # unknown again: a.t2
    )
    by_name = {str(d.name): d for d in defines(result)}
    assert by_name["a.v1"].reads == {R("b", "t")}
    assert result.events[2] == Rename(R("b", "t"), R("b", "t2"))
    assert by_name["a.v2"].reads == {R("b", "t2")}
    assert result.events[4] == Drop(R("b", "t2"))
    assert by_name["a.v3"].reads == {R("a", "t2")}


def test_ignored_statements_are_counted() -> None:
    script = """
    BEGIN;
    CREATE SCHEMA IF NOT EXISTS app;
    CREATE TABLE app.t (id int, note text);
    INSERT INTO app.t VALUES (1, 'semi; colon'), (2, $$dollar; quoted$$);
    CREATE INDEX ON app.t (id);
    CREATE UNIQUE INDEX t_id ON app.t (id);
    COMMENT ON TABLE app.t IS 'a table; really';
    GRANT SELECT ON app.t TO PUBLIC;
    CREATE FUNCTION app.f() RETURNS int LANGUAGE plpgsql AS $body$
    BEGIN
        PERFORM 1; PERFORM 2;
        RETURN 3;
    END;
    $body$;
    CREATE OR REPLACE FUNCTION app.g() RETURNS int LANGUAGE sql
    BEGIN ATOMIC
        SELECT 1;
        SELECT CASE WHEN true THEN 2 END;
    END;
    DO $$ BEGIN RAISE NOTICE 'x;y'; END $$;
    DO LANGUAGE plpgsql $do$ BEGIN NULL; END $do$;
    CREATE SEQUENCE app.s;
    CREATE TYPE app.mood AS ENUM ('a', 'b');
    CREATE EXTENSION IF NOT EXISTS pgcrypto;
    REFRESH MATERIALIZED VIEW app.mv;
    ANALYZE app.t;
    SELECT 1; ; ;
    UPDATE app.t SET note = 'x';
    CREATE VIEW app.v AS SELECT id FROM app.t WHERE note <> ';';
    COMMIT;
    """
    result = parse_script(script)
    assert [str(d.name) for d in defines(result)] == ["app.t", "app.s", "app.v"]
    assert result.ignored == 18  # CREATE SEQUENCE defines a node (a view may read it)


def test_psql_meta_commands_end_at_the_line_end() -> None:
    result = parse_script(
        "\\restrict key\nSET statement_timeout = 0;\n\\connect db\nCREATE TABLE t (a int);\n"
        "\\unrestrict key\n"
    )
    assert [str(d.name) for d in defines(result)] == ["public.t"]
    assert result.ignored == 1  # the SET; psql's meta-commands are skipped, not statements


def test_untokenisable_irrelevant_statement_is_ignored() -> None:
    result = parse_script("CREATE VIEW v AS SELECT 1;\nSELECT 'unterminated;\n")
    assert [str(d.name) for d in defines(result)] == ["public.v"]
    assert result.ignored == 1


def test_untokenisable_relevant_statement_names_its_line() -> None:
    with pytest.raises(SqlParseError) as info:
        parse_script("SELECT 1;\n-- note\nCREATE VIEW v AS SELECT 'oops;\n", path="bad.sql")
    assert info.value.path == "bad.sql" and info.value.line == 3
    assert info.value.statement.startswith("CREATE VIEW v")


@pytest.mark.parametrize(("script", "line"), [
    ("SELECT 1;\n\n-- a comment\nCREATE VIEW v AS\n  SELECT FROM WHERE;\n", 4),
    ("CREATE MATERIALIZED VIEW mv AS SELECT (1;\n", 1),
    ("SELECT 1;\nCREATE TABLE (a int);\n", 2),
    ("SELECT 1;\nCREATE TABLE t (a int;\n", 2),
    ("\n\nCREATE VIEW v AS;\n", 3),
    ("CREATE VIEW v AS SELECT 1;\nDROP TABLE a b;\n", 2),
    ("ALTER TABLE t RENAME TO s.u;\n", 1),
])
def test_parse_errors_name_path_and_line(script: str, line: int) -> None:
    with pytest.raises(SqlParseError) as info:
        parse_script(script, path="defs/x.sql")
    err = info.value
    assert err.path == "defs/x.sql" and err.line == line
    # file:line:column of the error itself (issue 18, item 25), else file:line of the statement
    where = f"defs/x.sql:{err.at[0]}:{err.at[1]}: " if err.at else f"defs/x.sql:{line}: "
    assert str(err).startswith(where) and (err.at is None or err.at[0] >= line)
    assert err.statement and "\n" not in err.statement


@pytest.mark.parametrize(("query", "expected"), [
    ("SELECT now(), CURRENT_TIMESTAMP, random() FROM t", ("current_timestamp", "now", "random")),
    ("SELECT nextval('s'), pg_catalog.clock_timestamp(), current_date FROM t",
     ("clock_timestamp", "current_date", "nextval")),
    ("SELECT localtimestamp, gen_random_uuid(), txid_current()",
     ("gen_random_uuid", "localtimestamp", "txid_current")),
    ("SELECT t.now, 'random()', \"current_date\" FROM t", ()),
    ("SELECT count(*) FROM t", ()),
])
def test_volatile_functions(query: str, expected: tuple[str, ...]) -> None:
    assert one(f"CREATE MATERIALIZED VIEW mv AS {query}").volatile_functions == expected


def test_volatile_function_list() -> None:
    assert {"now", "random", "nextval", "pg_current_xact_id"} <= VOLATILE_FUNCTIONS
    assert "lower" not in VOLATILE_FUNCTIONS


def test_split_statements() -> None:
    script = (
        "select ';' as x;\n"
        "-- a comment; with a semicolon\n"
        "REFRESH MATERIALIZED VIEW s.mv CASCADE ALL;\n"
        "DO $$ BEGIN PERFORM 1; END $$;\n"
        "CREATE FUNCTION g() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT 1;\nEND;\n"
        "\\restrict key\n"
        "SELECT 2; ;"
    )
    assert split_statements(script) == [
        (1, "select ';' as x"),
        (3, "REFRESH MATERIALIZED VIEW s.mv CASCADE ALL"),
        (4, "DO $$ BEGIN PERFORM 1; END $$"),
        (5, "CREATE FUNCTION g() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT 1;\nEND"),
        (9, "\\restrict key"),
        (10, "SELECT 2"),
    ]
    # A script that does not tokenise is split lexically.
    assert split_statements("select 1;\n/* c */ select 'oops;\nmore") == [
        (1, "select 1"), (2, "select 'oops;\nmore")]


def test_sources_and_query_text_keep_the_original() -> None:
    result = parse_script(
        "-- header\n\nCREATE MATERIALIZED VIEW mv\n  REFRESH DEFAULT\nAS\n"
        "  SELECT a /* keep me */\n  FROM t;\n",
        path="a.sql",
    )
    d = defines(result)[0]
    assert d.source == "a.sql:3"
    assert d.sql == "SELECT a /* keep me */\n  FROM t"


def test_results_pickle() -> None:
    result = parse_script(f"CREATE MATERIALIZED VIEW mv REFRESH EVERY (interval '1 s') AS "
                          f"SELECT * FROM t; ALTER MATERIALIZED VIEW mv REFRESH START WITH ({TS});"
                          " DROP VIEW x; ALTER VIEW a RENAME TO b;")
    assert pickle.loads(pickle.dumps(result)) == result


def test_many_statements_parse_quickly() -> None:
    text = "\n".join(
        f"CREATE MATERIALIZED VIEW v{i} AS SELECT a.id, b.x FROM a JOIN b ON a.id = b.a_id;"
        for i in range(2000)
    )
    start = time.process_time()
    result = parse_script(text)
    elapsed = time.process_time() - start
    assert len(result.events) == 2000
    assert elapsed < 5.0


def test_docstring_examples() -> None:
    failures, _ = doctest.testmod(dialect_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert failures == 0
