"""The rebuild's catalog side on a real server: read_closure, and recreating a closure against a
renamed copy of its table (rename_relations, attached_ddl)."""

from __future__ import annotations

import difflib
import json
import re

import psycopg
from psycopg import sql

from mvgraph.db.scripts import run_script
from mvgraph.rebuild.closure import (
    PARTS,
    Attached,
    Closure,
    QualifiedName,
    attached_ddl,
    qualified_names,
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


DESCRIBE = """
SELECT jsonb_build_object(
  'kind', c.relkind, 'owner', pg_get_userbyid(c.relowner), 'options', c.reloptions,
  'toast', (SELECT reloptions FROM pg_class WHERE oid = c.reltoastrelid),
  'rls', ARRAY[c.relrowsecurity, c.relforcerowsecurity], 'identity', c.relreplident,
  'populated', c.relispopulated, 'comment', obj_description(c.oid, 'pg_class'),
  'acl', (SELECT jsonb_agg(ARRAY[pg_get_userbyid(a.grantee), a.privilege_type,
                                 a.is_grantable::text])
            FROM aclexplode(c.relacl) a),
  'columns', (SELECT jsonb_agg(jsonb_build_object(
        'name', a.attname, 'type', format_type(a.atttypid, a.atttypmod),
        'not_null', a.attnotnull, 'default', pg_get_expr(d.adbin, d.adrelid),
        'generated', a.attgenerated, 'identity', a.attidentity, 'options', a.attoptions,
        'stattarget', a.attstattarget, 'collation', a.attcollation,
        'comment', col_description(c.oid, a.attnum),
        'acl', (SELECT jsonb_agg(ARRAY[pg_get_userbyid(x.grantee), x.privilege_type,
                                       x.is_grantable::text])
                  FROM aclexplode(a.attacl) x)) ORDER BY a.attnum)
      FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
  'indexes', (SELECT jsonb_agg(ARRAY[pg_get_indexdef(x.indexrelid), x.indisclustered::text,
                                    x.indisreplident::text,
                                    obj_description(x.indexrelid, 'pg_class')])
                FROM pg_index x WHERE x.indrelid = c.oid),
  'constraints', (SELECT jsonb_agg(ARRAY[conname, pg_get_constraintdef(oid),
                                        convalidated::text, obj_description(oid, 'pg_constraint')]
                                 )
                    FROM pg_constraint WHERE conrelid = c.oid),
  'triggers', (SELECT jsonb_agg(ARRAY[pg_get_triggerdef(oid), tgenabled::text,
                                     obj_description(oid, 'pg_trigger')])
                 FROM pg_trigger WHERE tgrelid = c.oid AND NOT tgisinternal),
  'rules', (SELECT jsonb_agg(ARRAY[pg_get_ruledef(oid), ev_enabled::text,
                                  obj_description(oid, 'pg_rewrite')])
              FROM pg_rewrite WHERE ev_class = c.oid AND rulename <> '_RETURN'),
  'policies', (SELECT jsonb_agg(ARRAY[polname, polpermissive::text, polcmd::text,
                                     (SELECT string_agg(CASE WHEN r = 0 THEN 'PUBLIC'
                                              ELSE pg_get_userbyid(r) END, ',')
                                        FROM unnest(polroles) r),
                                     pg_get_expr(polqual, polrelid),
                                     pg_get_expr(polwithcheck, polrelid),
                                     obj_description(oid, 'pg_policy')])
                 FROM pg_policy WHERE polrelid = c.oid),
  'statistics', (SELECT jsonb_agg(ARRAY[pg_get_statisticsobjdef(oid), stxstattarget::text,
                                       obj_description(oid, 'pg_statistic_ext')])
                   FROM pg_statistic_ext WHERE stxrelid = c.oid))
  FROM pg_class c WHERE c.oid = %s::regclass
"""


def describe(conn: Conn, name: QualifiedName, job: int | None = None) -> str:
    """What the catalog says of a relation and everything attached to it, as text; with
    ``job``, the temporary names made for that job read as the originals."""
    with qualified_names(conn):
        row = conn.execute(DESCRIBE, [sql.Identifier(*name).as_string(conn)]).fetchone()
    assert row is not None
    return json.dumps(_normalised(row[0], f"__rb{job}" if job is not None else None),
                      sort_keys=True, indent=1)


SELF_ALIAS = re.compile(r'(\.("[^"]+"|\w+)) \2(?=[\s)])')


def _normalised(value: object, suffix: str | None) -> object:
    """``value`` with ``suffix`` taken out of every string and lists of lists sorted."""
    if isinstance(value, str):  # and "s.t t" (the alias a renamed reference gets) as "s.t"
        return SELF_ALIAS.sub(r"\1", value.replace(suffix, "")) if suffix else value
    if isinstance(value, dict):
        return {k: _normalised(v, suffix) for k, v in value.items()}
    if isinstance(value, list):
        items = [_normalised(v, suffix) for v in value]
        if all(isinstance(v, list) for v in items):
            items.sort(key=json.dumps)
        return items
    return value


def test_attached_ddl_recreates_everything(conn: Conn) -> None:
    tag = str(conn.info.dbname)
    own, rd, wr = f"own_{tag}", f"rd_{tag}", f"wr_{tag}"
    run_script(conn, f"CREATE ROLE {own}; CREATE ROLE {rd}; CREATE ROLE {wr};")
    try:
        run_script(conn, EVERYTHING.format(own=own, rd=rd, wr=wr))
        check_recreated(conn, 5)
    finally:
        run_script(conn, f"""
            DROP SCHEMA s, "Other S" CASCADE;
            DROP OWNED BY {own}, {rd}, {wr} CASCADE; DROP ROLE {own}, {rd}, {wr};""")


def check_recreated(conn: Conn, job: int) -> None:
    """Recreate the table (LIKE + attached_ddl) and its closure; compare catalogs."""
    closure = read_closure(conn, oid_of(conn, 's."Big T"'))
    assert closure.problems == ()
    assert [(d.schema, d.name) for d in closure.dependents] == [
        ("s", "positive"), ("s", "Totals MV"), ("Other S", "Join View"), ("s", "top")]
    old = (closure.schema, closure.name)
    renames = {old: (closure.schema, temp_name(closure.name, job))}
    conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING GENERATED "
                         "INCLUDING IDENTITY)").format(sql.Identifier(*renames[old]),
                                                       sql.Identifier(*old)))
    run(conn, attached_ddl(conn, closure.oid, renames[old], job, include=PARTS))
    for d in closure.dependents:
        new = renames[(d.schema, d.name)] = (d.schema, temp_name(d.name, job))
        conn.execute(sql.SQL("CREATE {} {} AS {}{}").format(
            sql.SQL("VIEW" if d.kind == "v" else "MATERIALIZED VIEW"), sql.Identifier(*new),
            sql.SQL(rename_relations(d.definition, renames)),
            sql.SQL(" WITH NO DATA" if d.kind == "m" and not d.populated else "")))
        run(conn, attached_ddl(conn, d.oid, new, job, include=PARTS, renames=renames))
    for name, new in renames.items():
        before, after = describe(conn, name), describe(conn, new, job)
        assert before == after, "\n".join(difflib.unified_diff(
            before.splitlines(), after.splitlines(), str(name), str(new), lineterm=""))


def run(conn: Conn, statements: list[Attached]) -> None:
    for a in statements:
        assert a.part in PARTS
        conn.execute(a.statement)


EVERYTHING = """
CREATE SCHEMA s; CREATE SCHEMA "Other S";
CREATE TABLE s.ref (id int PRIMARY KEY);
INSERT INTO s.ref VALUES (1), (2);
CREATE TABLE s."Big T" (
    id serial PRIMARY KEY,
    ident int GENERATED ALWAYS AS IDENTITY,
    "Code" text NOT NULL COLLATE "C",
    amount numeric CHECK (amount >= 0),
    ref_id int REFERENCES s.ref,
    parent int REFERENCES s."Big T",
    doubled numeric GENERATED ALWAYS AS (amount * 2) STORED
) WITH (fillfactor = 70, toast.autovacuum_enabled = false);
ALTER TABLE s."Big T" ADD CONSTRAINT "positive amount" CHECK (amount > -1) NOT VALID;
ALTER TABLE s."Big T" ALTER COLUMN amount SET STATISTICS 300,
                      ALTER COLUMN ref_id SET (n_distinct = 2);
INSERT INTO s."Big T" ("Code", amount, ref_id, parent)
    VALUES ('a', 5, 1, NULL), ('b', 15, 2, 1), ('c', 0, 1, 2);
CREATE UNIQUE INDEX "Big T code" ON s."Big T" ("Code");
ALTER TABLE s."Big T" ADD CONSTRAINT uq_ident UNIQUE (ident) DEFERRABLE;
CREATE INDEX big_amount ON s."Big T" USING btree (amount DESC) INCLUDE (ref_id)
    WITH (fillfactor = 50) WHERE amount > 10;
CREATE INDEX big_ref ON s."Big T" (ref_id);
ALTER TABLE s."Big T" CLUSTER ON big_ref;
ALTER TABLE s."Big T" REPLICA IDENTITY USING INDEX "Big T code";
CREATE TABLE s.child (id int, big int REFERENCES s."Big T");
CREATE FUNCTION s.trg() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN new; END';
CREATE TRIGGER on_ins BEFORE INSERT ON s."Big T" FOR EACH ROW EXECUTE FUNCTION s.trg();
CREATE TRIGGER "Off Upd" AFTER UPDATE OF amount ON s."Big T" FOR EACH ROW
    WHEN (new.amount > old.amount) EXECUTE FUNCTION s.trg();
ALTER TABLE s."Big T" DISABLE TRIGGER "Off Upd";
CREATE TRIGGER rep AFTER DELETE ON s."Big T" FOR EACH STATEMENT EXECUTE FUNCTION s.trg();
ALTER TABLE s."Big T" ENABLE REPLICA TRIGGER rep;
CREATE RULE no_truncate_log AS ON DELETE TO s."Big T" DO ALSO NOTIFY big_t;
ALTER TABLE s."Big T" ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY "Read Own" ON s."Big T" FOR SELECT TO {rd}, {wr}
    USING (amount > 0 AND EXISTS (SELECT 1 FROM s."Big T" p WHERE p.id = "Big T".parent));
CREATE POLICY ins ON s."Big T" AS RESTRICTIVE FOR INSERT WITH CHECK (amount < 1000);
CREATE STATISTICS s.big_stats (dependencies) ON amount, ref_id FROM s."Big T";
ALTER STATISTICS s.big_stats SET STATISTICS 50;
GRANT SELECT, INSERT ON s."Big T" TO {rd} WITH GRANT OPTION;
GRANT UPDATE ("Code"), SELECT (amount) ON s."Big T" TO {wr};
GRANT SELECT ON s."Big T" TO PUBLIC;
REVOKE TRUNCATE ON s."Big T" FROM postgres;
COMMENT ON TABLE s."Big T" IS 'the table''s comment';
COMMENT ON COLUMN s."Big T"."Code" IS 'a code';
COMMENT ON INDEX s.big_amount IS 'partial';
COMMENT ON CONSTRAINT "Big T_pkey" ON s."Big T" IS 'the key';
COMMENT ON CONSTRAINT "positive amount" ON s."Big T" IS 'check';
COMMENT ON CONSTRAINT "Big T_parent_fkey" ON s."Big T" IS 'fk';
COMMENT ON TRIGGER on_ins ON s."Big T" IS 'trigger';
COMMENT ON POLICY ins ON s."Big T" IS 'policy';
COMMENT ON RULE no_truncate_log ON s."Big T" IS 'rule';
COMMENT ON STATISTICS s.big_stats IS 'stats';
ALTER TABLE s."Big T" OWNER TO {own};

CREATE VIEW s.positive WITH (check_option = local, security_barrier = true) AS
    SELECT id, "Code", amount, ref_id FROM s."Big T" WHERE amount > 0;
ALTER VIEW s.positive ALTER COLUMN amount SET DEFAULT 1;
CREATE MATERIALIZED VIEW s."Totals MV" WITH (fillfactor = 60) AS
    SELECT ref_id, sum(amount) AS total FROM s."Big T" GROUP BY ref_id;
CREATE UNIQUE INDEX totals_ref ON s."Totals MV" (ref_id);
GRANT SELECT ON s."Totals MV" TO {rd};
GRANT SELECT (total) ON s."Totals MV" TO {wr} WITH GRANT OPTION;
COMMENT ON MATERIALIZED VIEW s."Totals MV" IS 'totals';
CREATE VIEW "Other S"."Join View" AS
    SELECT p.id, p."Code", t.total, b.parent
      FROM s.positive p JOIN s."Big T" b USING (id)
      LEFT JOIN s."Totals MV" t ON t.ref_id = b.ref_id;
COMMENT ON VIEW "Other S"."Join View" IS 'joined';
COMMENT ON COLUMN "Other S"."Join View".total IS 'the total';
CREATE TRIGGER instead INSTEAD OF INSERT ON "Other S"."Join View" FOR EACH ROW
    EXECUTE FUNCTION s.trg();
CREATE RULE upd AS ON UPDATE TO "Other S"."Join View" DO INSTEAD
    UPDATE s."Big T" SET amount = new.total WHERE "Big T".id = old.id;
ALTER VIEW "Other S"."Join View" OWNER TO {own};
CREATE MATERIALIZED VIEW s.top AS
    SELECT "Code", total FROM "Other S"."Join View" WHERE total IS NOT NULL WITH NO DATA;
CREATE INDEX top_total ON s.top (total);
ALTER MATERIALIZED VIEW s.top OWNER TO {own};
"""


def test_partitioned_table(conn: Conn) -> None:
    run_script(conn, """
        CREATE TABLE pt (id int, at date, v text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
        CREATE TABLE pt_2025 PARTITION OF pt FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
        CREATE INDEX pt_v ON pt (v);
        CREATE VIEW pv AS SELECT id, v FROM pt;
    """)
    closure = read_closure(conn, oid_of(conn, "pt"))
    assert closure.kind == "p" and closure.problems == ()
    assert [d.name for d in closure.dependents] == ["pv"]
    conn.execute("CREATE TABLE pt__rb3 (LIKE pt) PARTITION BY RANGE (at)")
    conn.execute("CREATE TABLE pt__rb3_2025 PARTITION OF pt__rb3 "
                 "FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')")
    made = attached_ddl(conn, closure.oid, ("public", "pt__rb3"), 3, include=PARTS)
    assert [a.index for a in made if a.index] == [("pt_pkey__rb3", "pt_pkey"),
                                                  ("pt_v__rb3", "pt_v")]
    run(conn, made)
    assert describe(conn, ("public", "pt__rb3"), 3) == describe(conn, ("public", "pt"))
    indexes = conn.execute("SELECT count(*) FROM pg_index WHERE indrelid = "
                           "'pt__rb3_2025'::regclass").fetchone()
    assert indexes == (2,)  # made on the partition too (no ONLY)


def test_unknown_part_and_long_names(conn: Conn) -> None:
    long = "i" * 63
    run_script(conn, f"CREATE TABLE t (id int); CREATE INDEX {long} ON t (id);")
    oid = oid_of(conn, "t")
    try:
        attached_ddl(conn, oid, ("public", "t2"), 1, include=frozenset({"indexes", "colour"}))
    except ValueError as e:
        assert "colour" in str(e)
    else:
        raise AssertionError("an unknown part was accepted")
    conn.execute("CREATE TABLE t2 (LIKE t)")
    made = attached_ddl(conn, oid, ("public", "t2"), 123, include=frozenset({"indexes"}))
    assert [a.index for a in made] == [("i" * 56 + "__rb123", long)]
    run(conn, made)
