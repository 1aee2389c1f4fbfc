"""Schedule clauses from the attacker's side (issue 17, item 3), run as a superuser caller the
way an administrator would: a START WITH / EVERY that calls a function, holds a subquery, or
counts on a search_path that shadows pg_catalog's functions, operators and types must run
nothing. The canary is a sequence that every hostile object bumps: it must not move."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from mvgraph.db.connect import connect
from mvgraph.db.scripts import run_script
from tests.conftest import cli

Conn = psycopg.Connection[tuple[object, ...]]

HOSTILE_OBJECTS = """
CREATE SEQUENCE public.canary;
CREATE FUNCTION public.evil() RETURNS timestamptz LANGUAGE sql
    AS $$ SELECT nextval('public.canary'); SELECT pg_catalog.now() $$;
CREATE FUNCTION public.evil_iv() RETURNS interval LANGUAGE sql
    AS $$ SELECT nextval('public.canary'); SELECT interval '1 hour' $$;
CREATE TABLE public.base (a int);
CREATE MATERIALIZED VIEW public.mv AS SELECT a FROM public.base;
"""

# What a database owner could do to an administrator's sessions: a schema searched before
# pg_catalog, with functions, operators and a type named like the built-in ones.
SHADOWS = """
CREATE SCHEMA shadow;
CREATE FUNCTION shadow.now() RETURNS timestamptz LANGUAGE sql
    AS $$ SELECT nextval('public.canary'); SELECT pg_catalog.now() $$;
CREATE FUNCTION shadow.date_part(text, interval) RETURNS double precision LANGUAGE sql
    AS $$ SELECT nextval('public.canary'); SELECT pg_catalog.date_part($1, $2) $$;
CREATE FUNCTION shadow.date_trunc(text, timestamptz) RETURNS timestamptz LANGUAGE sql
    AS $$ SELECT nextval('public.canary'); SELECT pg_catalog.date_trunc($1, $2) $$;
CREATE FUNCTION shadow.set_config(text, text, boolean) RETURNS text LANGUAGE sql
    AS $$ SELECT nextval('public.canary'); SELECT pg_catalog.set_config($1, $2, $3) $$;
CREATE FUNCTION shadow.current_setting(text) RETURNS text LANGUAGE sql
    AS $$ SELECT nextval('public.canary'); SELECT pg_catalog.current_setting($1) $$;
CREATE FUNCTION shadow.times(interval, integer) RETURNS interval LANGUAGE sql
    AS $$ SELECT nextval('public.canary'); SELECT $1 OPERATOR(pg_catalog.*) $2 $$;
CREATE OPERATOR shadow.* (LEFTARG = interval, RIGHTARG = integer, FUNCTION = shadow.times);
CREATE FUNCTION shadow.plus(timestamptz, interval) RETURNS timestamptz LANGUAGE sql
    AS $$ SELECT nextval('public.canary'); SELECT $1 OPERATOR(pg_catalog.+) $2 $$;
CREATE OPERATOR shadow.+ (LEFTARG = timestamptz, RIGHTARG = interval, FUNCTION = shadow.plus);
CREATE FUNCTION shadow.eq(double precision, integer) RETURNS boolean LANGUAGE sql
    AS $$ SELECT nextval('public.canary'); SELECT $1 OPERATOR(pg_catalog.=) $2 $$;
CREATE OPERATOR shadow.= (LEFTARG = double precision, RIGHTARG = integer, FUNCTION = shadow.eq);
CREATE FUNCTION shadow.tick(text) RETURNS boolean LANGUAGE sql
    AS $$ SELECT nextval('public.canary') > 0 $$;
CREATE DOMAIN shadow.timestamptz AS text CHECK (shadow.tick(VALUE));
CREATE DOMAIN shadow.date AS text CHECK (shadow.tick(VALUE));
"""


@pytest.fixture
def hostile(db_dsn: str) -> str:
    with connect(db_dsn) as conn:
        run_script(conn, HOSTILE_OBJECTS)
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
                            ).fetchone() == (True,), "the caller is a superuser, as an admin"
    return db_dsn


def canary(dsn: str) -> tuple[object, ...] | None:
    with connect(dsn) as conn:
        return conn.execute("SELECT last_value, is_called FROM public.canary").fetchone()


UNTOUCHED = (1, False)


def schedules(dsn: str) -> list[tuple[object, ...]]:
    with connect(dsn) as conn:
        return conn.execute("SELECT view_name, start_at, every, every_text "
                            "FROM mvgraph.schedule ORDER BY 1").fetchall()


def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(("clause", "label", "shown", "reason"), [
    ("START WITH (evil()) EVERY (interval '1 s')", "START WITH", "evil()",
     "evil(...) is a function call"),
    ("START WITH (now() + public.evil_iv()) EVERY (interval '1 s')", "START WITH",
     "now() + public.evil_iv()", "public.evil_iv(...) is a function call"),
    ("EVERY (evil_iv())", "EVERY", "evil_iv()", "evil_iv(...) is a function call"),
    ("EVERY ((SELECT evil_iv()))", "EVERY", "(SELECT evil_iv())", "a subquery is not a value"),
    ("START WITH ('2020-01-01'::timestamptz + (SELECT evil_iv())) EVERY (interval '1 s')",
     "START WITH", "'2020-01-01'::timestamptz + (SELECT evil_iv())",
     "a subquery is not a value"),
])
def test_schedule_sync_from_sql_runs_nothing_of_a_hostile_clause(
        hostile: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], clause: str,
        label: str, shown: str, reason: str) -> None:
    sql_file = tmp_path / "views.sql"
    sql_file.write_text("CREATE TABLE base (a int);\n"
                        "-- the schedule\n"
                        f"CREATE MATERIALIZED VIEW mv REFRESH {clause} AS\n"
                        "SELECT a FROM base;\n")
    code, _out, err = cli(capsys, "schedule", "sync", "--from-sql", str(sql_file),
                          "--dsn", hostile)
    assert code == 1, err
    line = one_line(err)
    assert f"{sql_file}:3: {label} ({shown}) is not a value: {reason}" in line, line
    assert "a schedule clause may hold" in line  # the fix
    assert canary(hostile) == UNTOUCHED
    assert schedules(hostile) == []


def test_mvgraph_sql_runs_nothing_of_a_hostile_create_or_alter(
        hostile: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    script = tmp_path / "script.sql"
    script.write_text("CREATE TABLE before_it (x int);\n"
                      "CREATE MATERIALIZED VIEW mv2 REFRESH cascade all\n"
                      "  START WITH (evil()) EVERY (interval '1 s') AS SELECT a FROM base;\n")
    code, _out, err = cli(capsys, "sql", "-f", str(script), "--dsn", hostile)
    assert code == 1, err
    assert f"{script}:2: START WITH (evil()) is not a value: evil(...) is a function call" \
        in one_line(err)
    with connect(hostile) as conn:  # checked before the script's first statement ran
        assert conn.execute("SELECT to_regclass('before_it'), to_regclass('mv2')"
                            ).fetchone() == (None, None)
    script.write_text("ALTER MATERIALIZED VIEW mv REFRESH EVERY ((SELECT evil_iv()));\n")
    code, _out, err = cli(capsys, "sql", "-f", str(script), "--dsn", hostile)
    assert code == 1, err
    assert f"{script}:1: EVERY ((SELECT evil_iv())) is not a value: a subquery" in one_line(err)
    code, _out, err = cli(capsys, "sql", "ALTER MATERIALIZED VIEW mv REFRESH START WITH (evil())",
                          "--dsn", hostile)
    assert code == 1 and "START WITH (evil()) is not a value" in one_line(err)
    assert canary(hostile) == UNTOUCHED
    assert schedules(hostile) == []


@pytest.mark.parametrize("option", [("--start", "evil()"), ("--start", "now() + evil_iv()"),
                                    ("--every", "evil_iv()"), ("--every", "(SELECT evil_iv())"),
                                    ("--start", "2020-01-01'::timestamptz + evil_iv() --")])
def test_schedule_add_takes_values_never_sql(
        hostile: str, capsys: pytest.CaptureFixture[str], option: tuple[str, str]) -> None:
    args = ["--every", "1 hour", *option] if option[0] == "--start" else [*option]
    code, _out, err = cli(capsys, "schedule", "add", "mv", *args, "--dsn", hostile)
    assert code == 2, err
    assert "is not a valid" in one_line(err)
    assert canary(hostile) == UNTOUCHED
    assert schedules(hostile) == []


def test_a_search_path_shadowing_pg_catalog_changes_nothing(
        hostile: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The accepted forms, with a database default search_path that puts functions,
    operators and types named like pg_catalog's first: the same values, and none of them
    called."""
    with connect(hostile) as conn:
        run_script(conn, SHADOWS)
        db = conn.execute("SELECT current_database()").fetchone()
        assert db is not None
        conn.execute(f'ALTER DATABASE "{db[0]}" SET search_path = shadow, pg_catalog, public')
    with connect(hostile) as conn:  # the shadows would be called by the clauses as written
        row = conn.execute("SELECT now(), interval '1 s' * 2, '2020-01-01'::timestamptz"
                           ).fetchone()
        assert row is not None and isinstance(row[2], str)
        conn.execute("SELECT setval('public.canary', 1, false)")
    assert canary(hostile) == UNTOUCHED

    script = tmp_path / "script.sql"
    script.write_text(
        "CREATE MATERIALIZED VIEW public.mv3 REFRESH "
        "START WITH ('2020-01-01 12:12:12'::timestamptz) EVERY (interval '1 s' * 2) "
        "AS SELECT a FROM public.base;\n"
        "ALTER MATERIALIZED VIEW mv REFRESH START WITH (now() + interval '1 hour') "
        "EVERY (interval '1' hour);\n"
        "ALTER MATERIALIZED VIEW mv REFRESH START WITH (date_trunc('day', now()) "
        "+ interval '6 hours') EVERY (interval '1 day' / 2);\n")
    before = datetime.now(UTC)
    code, out, err = cli(capsys, "sql", "-f", str(script), "--dsn", hostile)
    assert code == 0, err
    assert "schedule added" in out + err and "schedule altered" in out + err
    assert canary(hostile) == UNTOUCHED
    found = {str(r[0]): r[1:] for r in schedules(hostile)}
    assert found["public.mv3"][:2] == (datetime(2020, 1, 1, 12, 12, 12, tzinfo=UTC),
                                       timedelta(seconds=2))
    start, every, _text = found["public.mv"]
    assert every == timedelta(hours=12)
    midnight = before.replace(hour=0, minute=0, second=0, microsecond=0)
    assert isinstance(start, datetime) and start in (midnight + timedelta(hours=6),
                                                     midnight + timedelta(days=1, hours=6))

    code, _out, err = cli(capsys, "schedule", "remove", "mv", "--dsn", hostile)
    assert code == 0, err
    code, _out, err = cli(capsys, "schedule", "add", "mv", "--every", "2 hours", "--dsn",
                          hostile)
    assert code == 0, err
    code, _out, err = cli(capsys, "schedule", "alter", "mv", "--every", "1 hour", "--start",
                          "2021-06-01 06:00", "--tz", "Europe/Berlin", "--dsn", hostile)
    assert code == 0, err
    assert canary(hostile) == UNTOUCHED
    found = {str(r[0]): r[1:] for r in schedules(hostile)}
    assert found["public.mv"][:2] == (datetime(2021, 6, 1, 4, 0, tzinfo=UTC),
                                      timedelta(hours=1))

    sql_file = tmp_path / "views.sql"
    sql_file.write_text("CREATE TABLE base (a int);\n"
                        "CREATE MATERIALIZED VIEW mv REFRESH START WITH "
                        "(timestamptz '2022-01-01 00:00:00+00') EVERY (interval '30 minutes') "
                        "AS SELECT a FROM base;\n")
    code, out, err = cli(capsys, "schedule", "sync", "--from-sql", str(sql_file), "--dsn",
                         hostile)
    assert code == 0, err
    assert canary(hostile) == UNTOUCHED
    found = {str(r[0]): r[1:] for r in schedules(hostile)}
    assert list(found) == ["public.mv"]
    assert found["public.mv"][:2] == (datetime(2022, 1, 1, tzinfo=UTC), timedelta(minutes=30))


def test_months_in_every_are_refused_as_before_naming_the_file(
        hostile: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sql_file = tmp_path / "views.sql"
    sql_file.write_text("CREATE TABLE base (a int);\n"
                        "CREATE MATERIALIZED VIEW mv REFRESH EVERY (interval '1 month') "
                        "AS SELECT a FROM base;\n")
    code, _out, err = cli(capsys, "schedule", "sync", "--from-sql", str(sql_file), "--dsn",
                          hostile)
    assert code == 2, err
    assert f"{sql_file}:2: " in one_line(err) and "months or years" in err
    assert schedules(hostile) == []
