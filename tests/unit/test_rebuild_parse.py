"""mvgraph.rebuild.parse: Hologres' [ASYNC] REBUILD (seed 002) read into mvgraph.rebuild.spec,
and the front-end's SUSPEND / RESUME '<id>'."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mvgraph.errors import SqlParseError
from mvgraph.frontend import JobStatement, parse_job_statement
from mvgraph.rebuild.parse import parse_actions, parse_rebuild
from mvgraph.rebuild.spec import (
    Action,
    AddColumn,
    AlterPrimaryKey,
    AlterType,
    DropDefault,
    DropNotNull,
    PartitionBy,
    RebuildParams,
    RebuildStatement,
    SetDefault,
    SetNotNull,
    SetStorage,
)


def table(*actions: Action, params: RebuildParams | None = None) -> RebuildStatement:
    return RebuildStatement("table", None, "rebuild_test", params or RebuildParams(), actions)


def error(text: str, parse: Callable[[str], object] = parse_rebuild) -> str:
    with pytest.raises(SqlParseError) as info:
        parse(text)
    assert "\n" not in info.value.message
    return info.value.message


# -- the seed's "Examples" section, verbatim (trailing blanks and indentation included) --------

SEED_REBUILDS = [
    ("ASYNC REBUILD TABLE rebuild_test ADD COLUMN c text NOT NULL DEFAULT 'a';",
     table(AddColumn("c", "text NOT NULL DEFAULT 'a'"))),
    ("ASYNC REBUILD TABLE rebuild_test ALTER PRIMARY KEY (a);",
     table(AlterPrimaryKey(("a",)))),
    ("ASYNC REBUILD TABLE rebuild_test \n"
     "WITH (\n"
     "    rebuild_guc_hg_computing_resource = 'serverless'\n"
     ")\n"
     "SET (\n"
     "    distribution_key = 'a',\n"
     "    clustering_key = 'a',\n"
     "    orientation = 'row,column'\n"
     ");",
     table(SetStorage((("distribution_key", "'a'"), ("clustering_key", "'a'"),
                       ("orientation", "'row,column'"))),
           params=RebuildParams(gucs=(("hg_computing_resource", "serverless"),)))),
    ("ASYNC REBUILD TABLE rebuild_test \n"
     "    ALTER COLUMN ds SET NOT NULL,\n"
     "    TO LOGICAL PARTITION BY LIST(ds);",
     table(SetNotNull("ds"), PartitionBy("list", ("ds",), logical=True))),
]
SEED_BINLOG = ("    ASYNC REBUILD TABLE rebuild_test \n"
               "    WITH (\n"
               "      binlog_mode\n"
               "    )\n"
               "    <YOUR_ACTION>;")
SEED_OTHERS = [  # the rest of the seed's SQL: none is a rebuild statement
    "CREATE TABLE rebuild_test (\n    a TEXT,\n    b TEXT,\n    ds TEXT\n);",
    "INSERT INTO rebuild_test VALUES ('1', '1', '2025-04-01'), ('2', '2', '2025-04-02'), "
    "('3', '3', '2025-04-03');",
    "SELECT step, status, progress FROM hologres.rebuild_progress('<query_id>');",
    "SELECT * FROM hologres.rebuild_progress('<rebuild_query_id>');",
    "    CALL hg_clean_rebuild_tmp_tables('<query_id>');",
    "      ALTER TABLE <table_name> SET (readonly = false);",
    "      ALTER TABLE <table_name> SET RESET (ddl_options,write_options);",
    "    RESUME '<query_id>';",
    "    SUSPEND '<query_id>';",
]


@pytest.mark.parametrize(("text", "expected"), SEED_REBUILDS)
def test_the_seed_examples(text: str, expected: RebuildStatement) -> None:
    assert parse_rebuild(text) == expected


def test_the_seed_binlog_example_with_its_placeholder_and_with_an_action() -> None:
    assert "unknown action '<YOUR_ACTION>'" in error(SEED_BINLOG)
    stmt = parse_rebuild(SEED_BINLOG.replace("<YOUR_ACTION>", "ALTER PRIMARY KEY (a, b)"))
    assert stmt == table(AlterPrimaryKey(("a", "b")), params=RebuildParams(binlog_mode=True))


@pytest.mark.parametrize("text", SEED_OTHERS)
def test_the_seeds_other_statements_are_not_rebuilds(text: str) -> None:
    assert parse_rebuild(text) is None


# -- names, forms, parameters ------------------------------------------------------------------

def test_names_fold_unless_quoted_and_the_synchronous_form() -> None:
    stmt = parse_rebuild('REBUILD TABLE IF EXISTS "A""b".Orders ALTER "Qty" DROP DEFAULT')
    assert stmt == RebuildStatement("table", 'A"b', "orders", actions=(DropDefault("Qty"),),
                                    if_exists=True, asynchronous=False)
    stmt = parse_rebuild("async rebuild table Sales.\"Big Orders\" alter column X drop not null")
    assert stmt is not None and (stmt.schema, stmt.name) == ("sales", "Big Orders")
    assert stmt.actions == (DropNotNull("x"),) and stmt.asynchronous


def test_with_parameters() -> None:
    stmt = parse_rebuild("ASYNC REBUILD TABLE t WITH (Keep_Source, binlog_mode, "
                         "REBUILD_GUC_work_mem = '64''k' -- c\n 'B', hash_partitions = 8, "
                         "partition_interval = 'month', x, rebuild_guc_a.b = on) ADD c int")
    assert stmt is not None and stmt.params == RebuildParams(
        keep_source=True, binlog_mode=True, gucs=(("work_mem", "64'kB"), ("a.b", "on")),
        extra=(("hash_partitions", "8"), ("partition_interval", "month"), ("x", None)))


def test_materialized_view_form() -> None:
    text = ("ASYNC REBUILD MATERIALIZED VIEW IF EXISTS s.Mv WITH (keep_source, "
            "rebuild_guc_work_mem = '1GB')\nAS  /* new */ SELECT a, 'x;y' FROM t -- end\n;\n")
    assert parse_rebuild(text) == RebuildStatement(
        "materialized view", "s", "mv",
        RebuildParams(keep_source=True, gucs=(("work_mem", "1GB"),)),
        query="SELECT a, 'x;y' FROM t", if_exists=True)
    stmt = parse_rebuild("REBUILD MATERIALIZED VIEW v AS WITH w AS (SELECT 1) SELECT * FROM w")
    assert stmt is not None and not stmt.asynchronous
    assert stmt.query == "WITH w AS (SELECT 1) SELECT * FROM w"


def test_every_action_and_text_kept_as_written() -> None:
    actions = parse_actions(
        "ALTER COLUMN x TYPE numeric(10,2) USING round(x::numeric, 2),\n"
        "ADD COLUMN c text DEFAULT 'a,b' /* kept */ NOT NULL,\n"
        "ADD d timestamp  with time zone,\n"
        "ALTER y SET DATA TYPE int[],\n"
        "ALTER COLUMN z SET DEFAULT $f$a,b$f$ || ',' ,\n"
        "ALTER COLUMN w SET NOT NULL, ALTER w DROP NOT NULL, ALTER w DROP DEFAULT,\n"
        "ALTER PRIMARY KEY (a, \"B\"),\n"
        "TO PARTITION BY RANGE (ds), TO LOGICAL PARTITION BY hash(a,b),\n"
        "SET (fillfactor = 70, toast.autovacuum_enabled, orientation = 'row,column', n = -1)")
    assert actions == (
        AlterType("x", "numeric(10,2)", "round(x::numeric, 2)"),
        AddColumn("c", "text DEFAULT 'a,b' /* kept */ NOT NULL"),
        AddColumn("d", "timestamp  with time zone"),
        AlterType("y", "int[]"),
        SetDefault("z", "$f$a,b$f$ || ','"),
        SetNotNull("w"), DropNotNull("w"), DropDefault("w"),
        AlterPrimaryKey(("a", "B")),
        PartitionBy("range", ("ds",)), PartitionBy("hash", ("a", "b"), logical=True),
        SetStorage((("fillfactor", "70"), ("toast.autovacuum_enabled", None),
                    ("orientation", "'row,column'"), ("n", "-1"))),
    )


def test_parse_actions_takes_a_trailing_semicolon_and_comments() -> None:
    assert parse_actions("-- why\nADD c int; ") == (AddColumn("c", "int"),)


# -- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "says"), [
    ("ASYNC REBUILD TABLE t", "no action given; a table's rebuild takes one or more of: ADD"),
    ("ASYNC REBUILD TABLE t WITH (keep_source)", "no action given"),
    ("ASYNC REBUILD TABLE t DROP COLUMN c", "unknown action 'DROP COLUMN c'; a rebuild takes: "
                                            "ADD [COLUMN]"),
    ("ASYNC REBUILD TABLE t RENAME TO u", "(anything else: ALTER TABLE)"),
    ("ASYNC REBUILD TABLE t AS SELECT 1", "AS query rebuilds a materialized view"),
    ("ASYNC REBUILD MATERIALIZED VIEW v", "write REBUILD MATERIALIZED VIEW v AS SELECT"),
    ("ASYNC REBUILD MATERIALIZED VIEW v AS ;", "AS SELECT"),
    ("ASYNC REBUILD MATERIALIZED VIEW v ADD c int", "found 'ADD c int'"),
    ("ASYNC REBUILD MATERIALIZED VIEW v WITH (binlog_mode) AS SELECT 1",
     "WITH (binlog_mode) is for tables"),
    ("ASYNC REBUILD MATERIALIZED VIEW v WITH (hash_partitions = 8) AS SELECT 1",
     "takes keep_source and rebuild_guc_<name> = 'value'"),
    ("ASYNC REBUILD INDEX i", "REBUILD takes TABLE t action, ... or MATERIALIZED VIEW v AS "
                              "query, not 'INDEX i'"),
    ("REBUILD", "not nothing"),
    ("ASYNC REBUILD TABLE 't' ADD c int", "expected the name to rebuild"),
    ("ASYNC REBUILD TABLE d.s.t ADD c int", "schema.name (no database part)"),
    ("ASYNC REBUILD TABLE t WITH keep_source ADD c int", "WITH (keep_source, ...)"),
    ("ASYNC REBUILD TABLE t WITH (keep_source = true) ADD c int", "write WITH (keep_source)"),
    ("ASYNC REBUILD TABLE t WITH (rebuild_guc_x) ADD c int", "rebuild_guc_x = 'value'"),
    ("ASYNC REBUILD TABLE t WITH (rebuild_guc_x = E'a') ADD c int", "plain 'string'"),
    ("ASYNC REBUILD TABLE t WITH (a = b c) ADD c int", "one word, number or 'string'"),
    ("ASYNC REBUILD TABLE t WITH (keep_source ADD c int", "'(' not closed"),
    ("ASYNC REBUILD TABLE t SET ()", "empty parameter in SET (...)"),
    ("ASYNC REBUILD TABLE t SET (a = 1) x", "unknown action 'SET (a = 1) x'"),
    ("ASYNC REBUILD TABLE t ADD c int,", "empty action"),
    ("ASYNC REBUILD TABLE t ADD c int,, ADD d int", "empty action"),
    ("ASYNC REBUILD TABLE t ADD c numeric(10,2", "'(' not closed"),
    ("ASYNC REBUILD TABLE t ADD c int)", "')'"),
    ("ASYNC REBUILD TABLE t ADD c int; DROP TABLE x", "text after ';' (DROP TABLE x)"),
    ("ASYNC REBUILD TABLE t ADD c int DEFAULT 'x", "unterminated string"),
    ("ASYNC REBUILD TABLE t ADD c int /* x", "unterminated /* comment"),
    ("ASYNC REBUILD TABLE t ADD c", "ADD COLUMN c needs a type"),
    ("ASYNC REBUILD TABLE t ADD COLUMN", "expected the new column's name"),
    ("ASYNC REBUILD TABLE t ADD PRIMARY KEY (a)", "ALTER PRIMARY KEY (c, ...)"),
    ("ASYNC REBUILD TABLE t ADD COLUMN IF NOT EXISTS c int", "name a new column"),
    ("ASYNC REBUILD TABLE t ALTER c TYPE", "ALTER COLUMN c TYPE needs a type"),
    ("ASYNC REBUILD TABLE t ALTER c TYPE int USING", "USING c::bigint"),
    ("ASYNC REBUILD TABLE t ALTER c SET DEFAULT", "SET DEFAULT <expr>"),
    ("ASYNC REBUILD TABLE t ALTER c SET STATISTICS 5", "not 'SET STATISTICS 5'"),
    ("ASYNC REBUILD TABLE t ALTER PRIMARY KEY a", "ALTER PRIMARY KEY (a, b)"),
    ("ASYNC REBUILD TABLE t ALTER PRIMARY KEY ()", "(a, b), not '()'"),
    ("ASYNC REBUILD TABLE t TO PARTITION", "write TO PARTITION BY LIST (col)"),
    ("ASYNC REBUILD TABLE t TO LOGICAL PARTITION", "write TO LOGICAL PARTITION BY LIST (col)"),
    ("ASYNC REBUILD TABLE t TO PARTITION BY KEY (a)", "LIST, RANGE or HASH"),
    ("ASYNC REBUILD TABLE t TO PARTITION BY LIST ((a + b))", "column names, not expressions"),
    ("ASYNC REBUILD TABLE t TO TABLESPACE x", "TO PARTITION BY LIST (col)"),
])
def test_malformed_statements_say_what_to_write(text: str, says: str) -> None:
    assert says in error(text)


def test_parse_actions_errors() -> None:
    assert "no action given" in error("", parse_actions)
    assert "no action given" in error("  -- nothing\n", parse_actions)
    assert "unknown action 'DROP DEFAULT'" in error("ALTER x TYPE int, DROP DEFAULT",
                                                   parse_actions)


@pytest.mark.parametrize("text", ["ASYNC SELECT 1", "SELECT 'ASYNC REBUILD TABLE t'",
                                  "-- ASYNC REBUILD TABLE t\nSELECT 1", "rebuilds", ""])
def test_other_statements_are_none(text: str) -> None:
    assert parse_rebuild(text) is None


@settings(max_examples=300, deadline=None, derandomize=True)
@given(head=st.sampled_from(["ASYNC REBUILD TABLE t ", "REBUILD MATERIALIZED VIEW v ",
                             "ASYNC REBUILD TABLE t WITH (", "ASYNC REBUILD TABLE t ADD c ",
                             ""]),
       tail=st.text(alphabet="(),;'\"$ -/*\nabcASDTYPEUSINGLTR=.0", max_size=40))
@example(head="ASYNC REBUILD TABLE t ", tail="SET (a='b'\n'c')")
def test_any_text_is_a_form_none_or_a_one_line_error(head: str, tail: str) -> None:
    for parse in (parse_rebuild, parse_actions):
        try:
            parse(head + tail)
        except SqlParseError as exc:
            assert "\n" not in exc.message


# -- SUSPEND / RESUME '<id>' (Hologres) --------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("SUSPEND '12';", JobStatement("suspend", (12,))),
    ("    RESUME '12';", JobStatement("resume", (12,))),
    ("resume 7 -- bare", JobStatement("resume", (7,))),
    ("SUSPEND /* c */ '0042' ;", JobStatement("suspend", (42,))),
    ("SUSPEND JOB 3", JobStatement("suspend", (3,))),  # the existing forms stay
    ("RESUME JOBS 3;", JobStatement("resume", (3,))),
])
def test_suspend_and_resume_with_a_quoted_or_bare_id(text: str, expected: JobStatement) -> None:
    assert parse_job_statement(text) == expected


@pytest.mark.parametrize("text", ["    RESUME '<query_id>';", "SUSPEND", "RESUME 1, 2",
                                  "RESUME 12; DROP TABLE x", "SUSPEND '12", "RESUME 1.5",
                                  "RESUME E'12'", "SUSPEND abc"])
def test_suspend_and_resume_malformed(text: str) -> None:
    assert "takes one job id, e.g." in error(text, parse_job_statement)


@pytest.mark.parametrize("text", ["SUSPENDED 1", "SUSPEND JOB", "SELECT 'RESUME 1'"])
def test_suspend_and_resume_lookalikes_are_not_job_statements(text: str) -> None:
    assert parse_job_statement(text) is None


@pytest.mark.parametrize(("action", "in_place"), [
    ("ADD COLUMN c text NOT NULL DEFAULT 'a'", True),
    ("ADD COLUMN c int", True),
    ("ADD COLUMN c text DEFAULT 'x'::text NOT NULL", True),
    ("ALTER COLUMN c SET DEFAULT now()", True),
    ("ALTER COLUMN c DROP NOT NULL", True),
    ("SET (fillfactor = 70)", True),
    ("ADD COLUMN c int DEFAULT random()::int", False),
    ("ADD COLUMN c timestamptz DEFAULT now()", False),
    ("ADD COLUMN c serial", False),
    ("ADD COLUMN c int UNIQUE", False),
    ("ALTER COLUMN c SET NOT NULL", False),
    ("ALTER COLUMN c TYPE bigint", False),
])
def test_what_postgresql_does_in_place(action: str, in_place: bool) -> None:
    """Actions PostgreSQL does without rewriting the table go to ALTER TABLE directly."""
    from mvgraph.rebuild.table import _in_place

    assert [_in_place(a) for a in parse_actions(action)] == [in_place]
