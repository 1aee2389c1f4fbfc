"""The status enums are the database's CHECK constraints, one to one."""

from __future__ import annotations

import re

import psycopg

from mvgraph.model.status import CHECKED, StepStatus


def check_values(conn: psycopg.Connection[tuple[object, ...]], table: str,
                 column: str) -> set[str]:
    rows = conn.execute(
        "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c "
        "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey) "
        "WHERE c.conrelid = coalesce(to_regclass(%s), %s::regclass) AND c.contype = 'c' "
        "AND a.attname = %s AND c.conname = %s",  # CHECKs of several columns: not the vocabulary
        # the queue's tables keep their data under *_data (the old names are views, 0015)
        [f"mvgraph.{table}_data", f"mvgraph.{table}", column, f"{table}_{column}_check"]
    ).fetchall()
    assert len(rows) == 1, f"one CHECK on {table}.{column}"
    return set(re.findall(r"'([^']*)'::text", str(rows[0][0])))


def test_every_enum_matches_its_check(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    for (table, column), enum in CHECKED.items():
        assert check_values(conn, table, column) == {m.value for m in enum}, (table, column)


def test_refresh_step_outcome_is_a_step_status(
        conn: psycopg.Connection[tuple[object, ...]]) -> None:
    body = conn.execute("SELECT prosrc FROM pg_proc WHERE proname = 'refresh_step' AND "
                        "pronamespace = 'mvgraph'::regnamespace").fetchone()
    assert body is not None
    outcomes = set(re.findall(r"RETURN QUERY SELECT '(\w+)'::text", str(body[0])))
    assert outcomes == {StepStatus.DONE.value, "raced"}
