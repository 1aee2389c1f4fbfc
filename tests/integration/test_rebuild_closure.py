"""The rebuild's catalog side on a real server: read_closure, and recreating a closure against a
renamed copy of its table (rename_relations, attached_ddl)."""

from __future__ import annotations

import psycopg
from psycopg import sql

from mvgraph.db.scripts import run_script
from mvgraph.rebuild.closure import (
    Closure,
    QualifiedName,
    read_closure,
    rename_relations,
    temp_name,
)

Conn = psycopg.Connection[tuple[object, ...]]

LAYERS = """
    CREATE SCHEMA s; CREATE SCHEMA "Other Schema";
    CREATE TABLE s.t (id int PRIMARY KEY, "Big Col" text, "select" int, parent int);
    CREATE TABLE s.u (id int, x int);
    INSERT INTO s.t VALUES (1, 'a', 10, NULL), (2, 'b', 20, 1), (3, 'c', 30, 2);
    INSERT INTO s.u VALUES (1, 5), (2, 6);
    CREATE VIEW s.v1 AS SELECT id, "Big Col" FROM s.t WHERE id > 0;
    CREATE MATERIALIZED VIEW s."Join MV" AS
        SELECT a.id, b."Big Col" AS parent_col FROM s.t a JOIN s.t b ON a.parent = b.id;
    CREATE VIEW "Other Schema"."select" AS
        SELECT t.id, (SELECT count(*) FROM s.t t2 WHERE t2.id <= t.id) AS c, l.x
          FROM s.t LEFT JOIN LATERAL (SELECT x FROM s.u WHERE u.id = t.id) l ON true;
    CREATE VIEW s.v2 AS
        WITH x AS (SELECT * FROM s.v1) SELECT x.id, t.a, m.parent_col
          FROM x, s.t t(a, b, c), s."Join MV" m WHERE x.id = t.a AND m.id = t.a;
    CREATE MATERIALIZED VIEW s.m3 AS
        SELECT v2.id, s.id AS sid FROM s.v2 JOIN "Other Schema"."select" s USING (id)
        UNION ALL SELECT id, NULL FROM ONLY s.t WITH NO DATA;
    CREATE VIEW s.rows AS SELECT ROW(1, 'x', 2, 3)::s.t AS r;
"""


def oid_of(conn: Conn, name: str) -> int:
    row = conn.execute("SELECT %s::regclass::oid::bigint", [name]).fetchone()
    assert row is not None
    return int(str(row[0]))


def test_closure_content_and_order(conn: Conn) -> None:
    run_script(conn, LAYERS)
    closure = read_closure(conn, oid_of(conn, "s.t"))
    assert (closure.schema, closure.name, closure.kind) == ("s", "t", "r")
    assert [c.name for c in closure.columns] == ["id", "Big Col", "select", "parent"]
    assert closure.primary_key == ("id",) and closure.primary_key_name == "t_pkey"
    names = [(d.schema, d.name) for d in closure.dependents]
    assert set(names) == {("s", "v1"), ("s", "Join MV"), ("Other Schema", "select"),
                          ("s", "v2"), ("s", "m3"), ("s", "rows")}
    for d in closure.dependents:  # each after everything of the closure it reads
        assert all(p == ("s", "t") or names.index(p) < names.index((d.schema, d.name))
                   for p in d.depends_on)
    by_name = {d.name: d for d in closure.dependents}
    assert by_name["v2"].depends_on == (("s", "t"), ("s", "v1"), ("s", "Join MV"))
    assert set(by_name["m3"].depends_on) == {("s", "t"), ("s", "v2"), ("Other Schema", "select")}
    assert by_name["m3"].populated is False and by_name["Join MV"].populated is True
    assert by_name["Join MV"].kind == "m" and by_name["v1"].kind == "v"
    assert "FROM s.t" in by_name["v1"].definition  # qualified although s is not on the path
    assert not by_name["v1"].definition.endswith(";")
    assert closure.problems == ()
    assert conn.execute("SHOW search_path").fetchone() == ('"$user", public',)


def recreate(conn: Conn, closure: Closure, job: int) -> dict[QualifiedName, QualifiedName]:
    """CREATE TABLE LIKE the table, then every dependent against it, under temporary names."""
    renames = {(closure.schema, closure.name): (closure.schema, temp_name(closure.name, job))}
    new = sql.Identifier(*renames[(closure.schema, closure.name)])
    conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
        new, sql.Identifier(closure.schema, closure.name)))
    conn.execute(sql.SQL("INSERT INTO {} SELECT * FROM {}").format(
        new, sql.Identifier(closure.schema, closure.name)))
    for d in closure.dependents:
        renames[(d.schema, d.name)] = (d.schema, temp_name(d.name, job))
        kind = sql.SQL("VIEW" if d.kind == "v" else "MATERIALIZED VIEW")
        text = rename_relations(d.definition, renames)
        conn.execute(sql.SQL("CREATE {} {} AS {}{}").format(
            kind, sql.Identifier(*renames[(d.schema, d.name)]), sql.SQL(text),
            sql.SQL(" WITH NO DATA" if d.kind == "m" and not d.populated else "")))
    return renames


def reads(conn: Conn, name: QualifiedName) -> set[QualifiedName]:
    """The relations (row types as their relations) the view's rule depends on."""
    rows = conn.execute("""
        SELECT DISTINCT n.nspname, c.relname
          FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
          LEFT JOIN pg_type t ON d.refclassid = 'pg_type'::regclass AND t.oid = d.refobjid
          JOIN pg_class c ON c.oid = coalesce(t.typrelid, d.refobjid)
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE d.classid = 'pg_rewrite'::regclass AND r.ev_class = %s::regclass
           AND d.refobjid <> r.ev_class AND d.deptype = 'n'""",
                        [sql.Identifier(*name).as_string(conn)]).fetchall()
    return {(str(r[0]), str(r[1])) for r in rows}


def test_recreated_closure_reads_the_new_relations_only(conn: Conn) -> None:
    run_script(conn, LAYERS)
    closure = read_closure(conn, oid_of(conn, "s.t"))
    renames = recreate(conn, closure, 7)
    for d in closure.dependents:
        old, new = (d.schema, d.name), renames[(d.schema, d.name)]
        before = reads(conn, old)
        assert before and reads(conn, new) == {renames.get(x, x) for x in before}, d.name
        if d.kind == "v" or d.populated:
            rows_old = conn.execute(sql.SQL("SELECT * FROM {} ORDER BY 1").format(
                sql.Identifier(*old))).fetchall()
            rows_new = conn.execute(sql.SQL("SELECT * FROM {} ORDER BY 1").format(
                sql.Identifier(*new))).fetchall()
            assert rows_old == rows_new, d.name


def test_problems(conn: Conn) -> None:
    run_script(conn, """
        CREATE TABLE p (id int); CREATE TABLE c () INHERITS (p);
        CREATE TABLE parted (id int) PARTITION BY LIST (id);
        CREATE TABLE part1 PARTITION OF parted FOR VALUES IN (1);
        CREATE VIEW on_part AS SELECT * FROM part1;
        CREATE TABLE t (id int); CREATE VIEW v AS SELECT id FROM t;
        CREATE FUNCTION uses_row(x t) RETURNS int LANGUAGE sql AS 'SELECT 1';
        CREATE TABLE holder (r v);
        CREATE TABLE other (id int);
        CREATE RULE r AS ON INSERT TO other DO ALSO INSERT INTO t VALUES (new.id);
        CREATE FOREIGN DATA WRAPPER w; CREATE SERVER srv FOREIGN DATA WRAPPER w;
        CREATE FOREIGN TABLE ft (id int) SERVER srv;
    """)
    assert read_closure(conn, oid_of(conn, "p")).problems == (
        "public.p has inheritance children (public.c): remove the inheritance (ALTER TABLE ..."
        " NO INHERIT) first",)
    assert read_closure(conn, oid_of(conn, "c")).problems == (
        "public.c inherits from public.p: remove the inheritance (ALTER TABLE ... NO INHERIT)"
        " first",)
    assert read_closure(conn, oid_of(conn, "part1")).problems[0] == (
        "public.part1 is a partition of public.parted: rebuild public.parted instead")
    assert read_closure(conn, oid_of(conn, "parted")).problems == (
        "rule _RETURN on view public.on_part reads table public.part1: drop or change it first",)
    assert read_closure(conn, oid_of(conn, "t")).problems == (
        "function public.uses_row(public.t) depends on type public.t: drop or change it first",
        "rule r on table public.other reads table public.t: drop or change it first",
        "table public.holder depends on type public.v: drop or change it first")
    assert read_closure(conn, oid_of(conn, "ft")).problems == (
        "public.ft is a foreign table: only a table or a materialized view can be rebuilt",)
    assert read_closure(conn, oid_of(conn, "v")).problems[0] == (
        "public.v is a view: only a table or a materialized view can be rebuilt")
    with conn.transaction():
        conn.execute("CREATE TEMPORARY TABLE tmp (id int)")
        problems = read_closure(conn, oid_of(conn, "tmp")).problems
    assert problems == ("tmp is a temporary table: it cannot be rebuilt (its session owns it)",)


def test_referencing_objects(conn: Conn) -> None:
    run_script(conn, """
        CREATE TABLE t (id serial PRIMARY KEY, g int GENERATED ALWAYS AS IDENTITY,
                        x text COLLATE "C" DEFAULT 'd', y int GENERATED ALWAYS AS (id * 2) STORED);
        CREATE TABLE child (id int, tid int REFERENCES t);
        ALTER TABLE child ADD CONSTRAINT named FOREIGN KEY (tid) REFERENCES t (id) NOT VALID;
        CREATE PUBLICATION pub_rb FOR TABLE t;
    """)
    try:
        closure = read_closure(conn, oid_of(conn, "t"))
    finally:
        conn.execute("DROP PUBLICATION pub_rb")
    assert closure.referencing_fks == (
        (("public", "child"), "child_tid_fkey", "FOREIGN KEY (tid) REFERENCES public.t(id)"),
        (("public", "child"), "named", "FOREIGN KEY (tid) REFERENCES public.t(id) NOT VALID"))
    assert closure.owned_sequences == ((("public", "t_id_seq"), "id"),
                                       (("public", "t_g_seq"), "g"))
    assert closure.publications == ("pub_rb",)
    cols = {c.name: c for c in closure.columns}
    assert cols["id"].default_sql == "nextval('public.t_id_seq'::regclass)"
    assert cols["g"].identity == "a" and cols["g"].not_null
    assert cols["x"].collation == 'pg_catalog."C"' and cols["x"].default_sql == "'d'::text"
    assert cols["y"].generated and cols["y"].default_sql == "(id * 2)"
    assert closure.problems == ()
