"""START WITH / EVERY clauses are values: what is accepted, what it is rebuilt into (nothing a
user could define: pg_catalog functions and operators, grammar type names, quoted literals),
and what is refused with a one-line message. Pure: no database."""

from __future__ import annotations

import re

import pytest

from mvgraph.errors import SqlParseError
from mvgraph.model.definitions import Schedule
from mvgraph.scheduler.clauses import ClauseError, check_clause, clause_message, compile_clause
from mvgraph.scheduler.service import check_clauses
from mvgraph.scheduler.statements import classify

ACCEPTED = [
    # GaussDB's examples (seed 003)
    ("'2020-01-01 12:12:12'::timestamptz",
     "(CAST('2020-01-01 12:12:12' AS timestamp with time zone))"),
    ("interval '1 s'", "(interval '1 s')"),
    ("interval '10 s'", "(interval '10 s')"),
    # literals, typed literals, casts
    ("'2020-01-01'", "('2020-01-01')"),
    ("'1 hour'", "('1 hour')"),
    ("timestamp '2020-01-01 06:00'",
     "(CAST('2020-01-01 06:00' AS timestamp without time zone))"),
    ("timestamptz '2020-01-01 06:00+01'",
     "(CAST('2020-01-01 06:00+01' AS timestamp with time zone))"),
    ("date '2020-01-01'", "(CAST('2020-01-01' AS pg_catalog.date))"),
    ("CAST('2020-01-01' AS timestamp with time zone)",
     "(CAST('2020-01-01' AS timestamp with time zone))"),
    ("CAST('2020-01-01' AS timestamp(0) without time zone)",
     "(CAST('2020-01-01' AS timestamp(0) without time zone))"),
    ("'2020-01-01'::pg_catalog.timestamptz",
     "(CAST('2020-01-01' AS timestamp with time zone))"),
    ("'90'::interval minute", "(CAST('90' AS interval MINUTE))"),
    ("interval '1' hour", "(interval '1' HOUR)"),
    ("interval '1:30' hour to minute", "(interval '1:30' HOUR TO MINUTE)"),
    ("interval '1.5' second(3)", "(interval '1.5' SECOND(3))"),
    ("'it''s'", "('it''s')"),
    # the clock
    ("now()", "(pg_catalog.now())"),
    ("pg_catalog.now()", "(pg_catalog.now())"),
    ("current_timestamp", "(CURRENT_TIMESTAMP)"),
    ("CURRENT_TIMESTAMP(0)", "(CURRENT_TIMESTAMP(0))"),
    ("current_date", "(CURRENT_DATE)"),
    ("localtimestamp", "(LOCALTIMESTAMP)"),
    ("sysdate", "(LOCALTIMESTAMP(0))"),
    ("to_date('2020-01-01', 'YYYY-MM-DD')", "(pg_catalog.to_date('2020-01-01', 'YYYY-MM-DD'))"),
    ("date_trunc('day', now())", "(pg_catalog.date_trunc('day', pg_catalog.now()))"),
    # arithmetic
    ("now() + interval '1 day'",
     "(((pg_catalog.now()) OPERATOR(pg_catalog.+) (interval '1 day')))"),
    ("interval '1 hour' * 2", "(((interval '1 hour') OPERATOR(pg_catalog.*) (2)))"),
    ("interval '1 hour' / 2.5", "(((interval '1 hour') OPERATOR(pg_catalog./) (2.5)))"),
    ("-interval '1 hour'", "((OPERATOR(pg_catalog.-) interval '1 hour'))"),
    ("1 + 2 * 3", "(((1) OPERATOR(pg_catalog.+) (((2) OPERATOR(pg_catalog.*) (3)))))"),
    ("(1 + 2) * 3",
     "((((((1) OPERATOR(pg_catalog.+) (2)))) OPERATOR(pg_catalog.*) (3)))"),
    ("  now()  -- a comment\n + interval '1 h' /* another */",
     "(((pg_catalog.now()) OPERATOR(pg_catalog.+) (interval '1 h')))"),
]


@pytest.mark.parametrize(("text", "sql_text"), ACCEPTED)
def test_values_are_rebuilt_with_nothing_a_user_defines(text: str, sql_text: str) -> None:
    assert check_clause(text) is None
    assert compile_clause(text).as_string(None) == sql_text


def test_rebuilt_sql_names_only_pg_catalog_functions_and_operators() -> None:
    for text, _ in ACCEPTED:
        out = compile_clause(text).as_string(None)
        without_strings = re.sub(r"'(?:[^']|'')*'", "''", out)
        calls = re.findall(r"([\w.]+)\s*\(", without_strings)
        assert all(c.startswith("pg_catalog.") or c.upper() in {
            "CAST", "AS", "OPERATOR", "TIMESTAMP", "CURRENT_TIMESTAMP", "LOCALTIMESTAMP",
            "SECOND"} for c in calls), (text, out)


HOSTILE = [
    ("evil()", "evil(...) is a function call"),
    ("public.evil()", "public.evil(...) is a function call"),
    ("pg_catalog.pg_sleep(1)", "pg_catalog.pg_sleep(...) is a function call"),
    ("now() + evil()", "evil(...) is a function call"),
    ("'2020-01-01'::timestamptz + (SELECT interval '1 s')", "a subquery is not a value"),
    ("(select max(at) from t)", "a subquery is not a value"),
    ("x", "x is a name"),
    ("t.x + interval '1 s'", "t.x is a name"),
    ('"now"()', '"now" is a quoted name'),
    ("'1 hour'::text", "only timestamp, timestamptz, date and interval"),
    ("'x'::evil_type", "only timestamp, timestamptz, date and interval"),
    ("CAST('x' AS public.timestamptz)", "only timestamp, timestamptz, date and interval"),
    ("'a' || 'b'", "unexpected '||'"),
    ("now() AT TIME ZONE 'UTC'", "unexpected 'AT'"),
    ("1 = 1", "unexpected '='"),
    ("E'1 hour'", "plain '...' literals"),
    ("$$1 hour$$", "plain '...' literals"),
    ("$f$1 hour$f$", "plain '...' literals"),
    ("interval '1 s'; DROP TABLE t", "unexpected ';'"),
    ("to_date(evil(), 'YYYY')", "must be a plain '...' string"),
    ("date_trunc('day', evil())", "evil(...) is a function call"),
    ("current_user", "'current_user' is not allowed"),
    ("now", "now is a name"),
    ("interval '1' hour to year", "not an interval range"),
    ("current_timestamp(99)", "precision"),
    ("'unterminated", "does not read as SQL"),
    ("", "empty"),
    ("interval '1 s' interval '2 s'", "unexpected 'interval'"),
    ("now() ->> 'x'", "unexpected"),
]


@pytest.mark.parametrize(("text", "reason"), HOSTILE)
def test_anything_but_a_value_is_refused_naming_it(text: str, reason: str) -> None:
    with pytest.raises(ClauseError) as caught:
        compile_clause(text)
    assert reason in str(caught.value)
    assert check_clause(text) == str(caught.value)
    message = clause_message("START WITH", text, str(caught.value))
    assert "\n" not in message and message.startswith("START WITH (")


def test_the_message_is_one_line_with_the_fix() -> None:
    text = "now()\n  + evil()"
    message = clause_message("EVERY", text, check_clause(text) or "")
    assert message == (
        "EVERY (now() + evil()) is not a value: evil(...) is a function call; a schedule clause "
        "may hold a literal, interval '...', a cast of a literal, now() / current_timestamp / "
        "current_date / localtimestamp / sysdate, and + - * / on them (nothing in it is run)")


def test_mvgraph_sql_refuses_the_statement_before_anything_runs() -> None:
    """classify (pure, done for every statement of a script before the first one runs)."""
    with pytest.raises(SqlParseError) as caught:
        classify("CREATE MATERIALIZED VIEW v REFRESH START WITH (evil()) "
                 "EVERY (interval '1 s') AS SELECT 1")
    assert "START WITH (evil()) is not a value: evil(...) is a function call" in str(
        caught.value)
    with pytest.raises(SqlParseError, match=r"EVERY \(\(select interval '1 s'\)\) is not a "):
        classify("ALTER MATERIALIZED VIEW v REFRESH EVERY ((select interval '1 s'))")
    ok = classify("ALTER MATERIALIZED VIEW v REFRESH START WITH (now() + interval '1' hour) "
                  "EVERY (interval '1 s' * 2)")
    assert ok is not None and ok.clause is not None


def test_sync_names_file_and_line() -> None:
    with pytest.raises(SqlParseError) as caught:
        check_clauses(Schedule(start="evil()", every="interval '1 s'"), "sql/views.sql:12")
    assert str(caught.value).startswith("sql/views.sql:12: START WITH (evil()) is not a value")
    check_clauses(Schedule(start="'2020-01-01'::timestamptz", every="interval '1 s'"), "x:1")
