"""rename_relations over the shapes pg_get_viewdef (search_path '') writes, and temp_name."""

from __future__ import annotations

import pytest

from mvgraph.rebuild.closure import rename_relations, temp_name

T = ("s", "t")
NEW = {T: ("s", "t__rb1")}


@pytest.mark.parametrize(("before", "after"), [
    # no alias: the old name becomes the alias, so t.col and bare columns still resolve
    (" SELECT id,\n    \"Big Col\"\n   FROM s.t\n  WHERE (id > 0);",
     " SELECT id,\n    \"Big Col\"\n   FROM \"s\".\"t__rb1\" \"t\"\n  WHERE (id > 0);"),
    # an alias, an alias with a column list, a quoted alias
    ("SELECT a.id FROM s.t a", 'SELECT a.id FROM "s"."t__rb1" a'),
    ("SELECT t.a FROM x,\n    s.t t(a, b, c)", 'SELECT t.a FROM x,\n    "s"."t__rb1" t(a, b, c)'),
    ('SELECT id FROM s.t "select"', 'SELECT id FROM "s"."t__rb1" "select"'),
    ("SELECT id FROM s.t AS x", 'SELECT id FROM "s"."t__rb1" AS x'),
    # joins, parenthesised join trees, LATERAL
    ("SELECT a.id FROM (s.t a\n     JOIN s.t b ON ((a.id = b.id)))",
     'SELECT a.id FROM ("s"."t__rb1" a\n     JOIN "s"."t__rb1" b ON ((a.id = b.id)))'),
    ("SELECT t.id FROM (s.t\n     LEFT JOIN LATERAL ( SELECT u.x FROM s.u WHERE (u.x = t.id)) l"
     " ON (true))",
     'SELECT t.id FROM ("s"."t__rb1" "t"\n     LEFT JOIN LATERAL ( SELECT u.x FROM s.u WHERE'
     ' (u.x = t.id)) l ON (true))'),
    ("SELECT 1 FROM ((s.t JOIN s.u USING (id)) CROSS JOIN s.t t_1)",
     'SELECT 1 FROM (("s"."t__rb1" "t" JOIN s.u USING (id)) CROSS JOIN "s"."t__rb1" t_1)'),
    # subqueries, CTEs, set operations, ONLY, TABLESAMPLE, comma lists
    (" WITH x AS (\n         SELECT t_1.id\n           FROM s.t t_1\n        )\n SELECT x.id\n"
     "   FROM x, s.t\n  WHERE (x.id = t.id)",
     ' WITH x AS (\n         SELECT t_1.id\n           FROM "s"."t__rb1" t_1\n        )\n'
     ' SELECT x.id\n   FROM x, "s"."t__rb1" "t"\n  WHERE (x.id = t.id)'),
    ("SELECT 1 AS x FROM s.u, s.t UNION SELECT 2 AS x FROM s.t;",
     'SELECT 1 AS x FROM s.u, "s"."t__rb1" "t" UNION SELECT 2 AS x FROM "s"."t__rb1" "t";'),
    ("SELECT id FROM ONLY s.t", 'SELECT id FROM ONLY "s"."t__rb1" "t"'),
    ("SELECT id FROM s.t TABLESAMPLE system (10)",
     'SELECT id FROM "s"."t__rb1" "t" TABLESAMPLE system (10)'),
    ("SELECT (EXISTS ( SELECT 1 FROM s.t WHERE (t.id = u.id))) AS e FROM s.u",
     'SELECT (EXISTS ( SELECT 1 FROM "s"."t__rb1" "t" WHERE (t.id = u.id))) AS e FROM s.u'),
    ("SELECT ARRAY( SELECT t.id FROM s.t) AS a",
     'SELECT ARRAY( SELECT t.id FROM "s"."t__rb1" "t") AS a'),
    ("SELECT id FROM s.t GROUP BY id", 'SELECT id FROM "s"."t__rb1" "t" GROUP BY id'),
    # a row type after :: is renamed without alias
    ("SELECT ROW(1, 'a'::text)::s.t AS r", "SELECT ROW(1, 'a'::text)::\"s\".\"t__rb1\" AS r"),
])
def test_view_shapes(before: str, after: str) -> None:
    assert rename_relations(before, NEW) == after


@pytest.mark.parametrize("text", [
    "SELECT s.t(1) AS f FROM s.u",  # a function call
    "SELECT db.s.t FROM s.u",  # three parts: not a relation
    "SELECT s.t FROM s.u s",  # column t of the alias s
    "SELECT EXTRACT(year FROM s.t) AS y FROM s.u s",  # FROM inside a call
    "SELECT (a IS DISTINCT FROM s.t) AS d FROM s.u s",
    "SELECT x FROM s.u s WHERE (s.t > 0) ORDER BY s.t",
    "SELECT 's.t' AS lit, \"s.t\" FROM s.u -- FROM s.t\n",  # a string, a one-part name, comment
    "SELECT x FROM s.u s GROUP BY s.t, s.x",
])
def test_left_alone(text: str) -> None:
    assert rename_relations(text, NEW) == text


def test_quoted_names_with_dots_quotes_and_keywords() -> None:
    odd = ('Odd.Sch"ema', 'T.ab"le')
    renames = {odd: (odd[0], 'T.ab"le__rb7'), ("s", "select"): ("s", "select__rb7")}
    text = 'SELECT b.x, "select".y FROM ("Odd.Sch""ema"."T.ab""le" b JOIN s."select" USING (x))'
    assert rename_relations(text, renames) == (
        'SELECT b.x, "select".y FROM ("Odd.Sch""ema"."T.ab""le__rb7" b JOIN '
        '"s"."select__rb7" "select" USING (x))')
    # unquoted words fold to lower case; a quoted name keeps its case
    assert rename_relations('SELECT 1 FROM S.T, "S"."T" x', NEW) == (
        'SELECT 1 FROM "s"."t__rb1" "t", "S"."T" x')


def test_ddl_positions() -> None:
    index = "CREATE UNIQUE INDEX t_a ON s.t USING btree (a) WHERE (a > 0)"
    assert rename_relations(index, NEW, alias=False) == (
        'CREATE UNIQUE INDEX t_a ON "s"."t__rb1" USING btree (a) WHERE (a > 0)')
    fk = "FOREIGN KEY (parent) REFERENCES s.t(id) ON DELETE CASCADE"
    assert rename_relations(fk, NEW) == (
        'FOREIGN KEY (parent) REFERENCES "s"."t__rb1"(id) ON DELETE CASCADE')
    trigger = ("CREATE TRIGGER x AFTER UPDATE OF a ON s.t FOR EACH ROW WHEN ((new.a > 0)) "
               "EXECUTE FUNCTION s.t()")
    assert rename_relations(trigger, NEW, alias=False) == (
        'CREATE TRIGGER x AFTER UPDATE OF a ON "s"."t__rb1" FOR EACH ROW WHEN ((new.a > 0)) '
        "EXECUTE FUNCTION s.t()")
    rule = ("CREATE RULE r AS\n    ON UPDATE TO s.t DO INSTEAD  UPDATE s.t SET a = new.a\n"
            "  WHERE (t.id = old.id);")
    assert rename_relations(rule, NEW) == (
        'CREATE RULE r AS\n    ON UPDATE TO "s"."t__rb1" DO INSTEAD  UPDATE "s"."t__rb1" "t" '
        "SET a = new.a\n  WHERE (t.id = old.id);")
    assert rename_relations("DELETE FROM s.t WHERE (t.id = old.id)", NEW) == (
        'DELETE FROM "s"."t__rb1" "t" WHERE (t.id = old.id)')
    stats = "CREATE STATISTICS s.st (ndistinct) ON a, b FROM s.t"
    assert rename_relations(stats, NEW, alias=False) == stats.replace(
        "FROM s.t", 'FROM "s"."t__rb1"')


def test_temp_name_fits_in_63_bytes() -> None:
    assert temp_name("orders", 12) == "orders__rb12"
    assert temp_name("orders", 12, "ix") == "orders__ix12"
    long = "x" * 63
    assert temp_name(long, 123456) == "x" * 53 + "__rb123456"
    for char in ("é", "€", "😀"):  # 2, 3, 4 bytes: never cut inside one
        name = temp_name(char * 40, 99)
        assert len(name.encode()) <= 63
        assert name.endswith("__rb99") and set(name[:-6]) == {char}
    with pytest.raises(ValueError):
        temp_name("x", 10**70)
