"""Hostile text in every place a user names something (SPEC section 7, issue 16 "Hardening").

The SQL front-end (``mvgraph sql``) and the CLI's name arguments get quotes, semicolons,
comments, dollar quotes, backslashes, unicode (right-to-left, control characters, never NUL)
and 10 kB strings. Each case ends in success or one clear error (a documented exit code, one
``error:`` line, no traceback), and a canary table with one row survives every case: no name
ever reaches PostgreSQL as code.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mvgraph.db.connect import connect
from mvgraph.errors import SqlParseError
from mvgraph.frontend import parse_job_statement, parse_refresh
from tests.conftest import cli

Conn = psycopg.Connection[tuple[object, ...]]

VIEW = "mv_target_7f3a"  # the one real view: no generated text is likely to name it
SNIPPETS = [
    "'", '"', "''", '""', ";", "--", "/*", "*/", "/* x */", "$$", "$q$",
    "$q$ DROP TABLE canary $q$", "\\", "\\'", "E'\\x41'", "x; DROP TABLE canary; --",
    '"x""; DROP TABLE canary', "'); DROP TABLE canary; --", "; DELETE FROM canary",
    "*/ DROP TABLE canary; /*", "-- \n DROP TABLE canary",
    "\u202eweiv\u202c", "\u05e9\u05dc\u05d5\u05dd", "\u0645\u0631\u062d\u0628\u0627", "\u200b",
    "\x01\x1b[31m", "\t", "\n", "\r", "\x7f", "\u2028", "\U0001f600", "%s", "%(x)s", "{0}", "[red]",
    ".", "..", "*", "+", "@", ",", " ", "public.", "pg_catalog.pg_class", "canary",
]
_CHARS = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
HOSTILE = st.one_of(
    st.lists(st.one_of(st.sampled_from(SNIPPETS), st.text(_CHARS, max_size=8)), min_size=1,
             max_size=6).map("".join),
    st.sampled_from(SNIPPETS).map(lambda s: (s * (10_240 // len(s) + 1))[:10_240]),  # 10 kB
)
SETTINGS = settings(max_examples=80, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
#: Exit codes a hostile name may end in: ok, error, usage error, no such object (README).
CLEAR_CODES = {0, 1, 2, 4}


@pytest.fixture
def target(db_dsn: str) -> Iterator[tuple[str, Conn]]:
    """A database with a view, its base table and the canary; yields its DSN and a connection."""
    with connect(db_dsn) as conn:
        conn.execute("CREATE TABLE canary (id int PRIMARY KEY, note text NOT NULL);"
                     "INSERT INTO canary VALUES (1, 'alive');"
                     "CREATE TABLE base (id int PRIMARY KEY, v text);"
                     "INSERT INTO base VALUES (1, 'a'), (2, 'b');"
                     f"CREATE MATERIALIZED VIEW {VIEW} AS SELECT id, v FROM base;"
                     f"CREATE UNIQUE INDEX ON {VIEW} (id)")
        yield db_dsn, conn


def assert_canary(conn: Conn) -> None:
    """The canary table is there, with exactly its one row."""
    assert conn.execute("SELECT id, note FROM canary").fetchall() == [(1, "alive")]


def assert_clear(code: int, err: str, what: object) -> None:
    """Success, or one clear error: a documented code, no traceback, one ``error:`` line (or
    typer's usage block for a malformed command line, exit 2)."""
    assert code in CLEAR_CODES, (code, err, what)
    assert "Traceback" not in err and "internal error" not in err, (err, what)
    if code == 0:
        return
    lines = [line for line in err.split("\n") if line.strip()]
    if code == 2 and any(line.startswith("Error: ") for line in lines):
        return  # typer's own usage error: "Usage: ...", "Error: ..."
    errors = [line for line in lines if line.startswith("error: ")]
    others = [line for line in lines if not line.startswith(("error: ", "warning: ", "notice: "))]
    assert len(errors) == 1 and not others, (err, what)


def quoted(name: str) -> str:
    """``name`` as a quoted identifier."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """``text`` as a standard string literal."""
    return "'" + text.replace("'", "''") + "'"


# ---- the CLI's name arguments --------------------------------------------------------------

NAME_COMMANDS = [
    ["plan", "{}"],
    ["refresh", "{}", "--cascade", "all"],
    ["graph", "-s", "{}"],
    ["deps", "{}"],
    ["configure", "{}", "--early-cutoff"],
    ["track", "{}"],
    ["schedule", "add", "{}", "--every", "1 hour"],
    ["schedule", "remove", "{}"],
    ["schedule", "history", "{}"],
    ["job", "{}"],
    ["cancel", "{}"],
]


@SETTINGS
@given(command=st.sampled_from(NAME_COMMANDS), name=HOSTILE)
@example(command=["refresh", "{}"], name="x; DROP TABLE canary; --")
@example(command=["plan", "{}"], name='"x""; DROP TABLE canary')
@example(command=["schedule", "add", "{}", "--every", "1 hour"],
         name=f'{VIEW}"; DROP TABLE canary; --')
@example(command=["deps", "{}"], name="a\nb")  # a newline split the message in two lines
def test_cli_names_end_in_clear_errors(target: tuple[str, Conn],
                                       capsys: pytest.CaptureFixture[str], command: list[str],
                                       name: str) -> None:
    dsn, conn = target
    args = [name if a == "{}" else a for a in command]
    code, _, err = cli(capsys, "--dsn", dsn, *args)
    assert_clear(code, err, args)
    assert_canary(conn)


OPTION_COMMANDS = [
    ["refresh", VIEW, "--lock-timeout", "{}"],
    ["refresh", VIEW, "--statement-timeout", "{}"],
    ["refresh", VIEW, "--concurrently", "{}"],
    ["configure", VIEW, "--volatile", "{}"],
    ["schedule", "add", VIEW, "--every", "{}"],
    ["schedule", "add", VIEW, "--cron", "{}"],
    ["schedule", "add", VIEW, "--target-lag", "{}"],
    ["schedule", "add", VIEW, "--every", "1 hour", "--tz", "{}"],
    ["schedule", "add", VIEW, "--every", "1 hour", "--start", "{}"],
    ["settings", "lock_timeout", "{}"],
    ["settings", "{}"],
    ["--search-path", "{}", "plan", VIEW],
]


@SETTINGS
@given(command=st.sampled_from(OPTION_COMMANDS), value=HOSTILE)
@example(command=OPTION_COMMANDS[7], value="'" * 10_240)  # --tz: ZoneInfo's OSError (name too
@example(command=OPTION_COMMANDS[7], value="Europe")      # long for a path) was a traceback
def test_cli_option_values_end_in_clear_errors(target: tuple[str, Conn],
                                               capsys: pytest.CaptureFixture[str],
                                               command: list[str], value: str) -> None:
    dsn, conn = target
    args = [value if a == "{}" else a for a in command]
    code, _, err = cli(capsys, "--dsn", dsn, *args)
    assert_clear(code, err, args)
    conn.execute("DELETE FROM mvgraph.schedule")  # a valid clock added one: the next may add
    assert_canary(conn)


@SETTINGS
@given(verb=st.sampled_from(["job", "cancel", "suspend", "resume", "wait"]),
       job=st.one_of(st.integers(), st.integers(min_value=2**62).map(lambda n: n * 1000),
                     st.sampled_from(["0", "-1", "007", "1e3", "0x10", "\u0661\u0662", " 1",
                                      "+1"])))
@example(verb="cancel", job=2**63)
@example(verb="job", job=-(2**63) - 1)
def test_cli_job_ids_end_in_clear_errors(target: tuple[str, Conn],
                                         capsys: pytest.CaptureFixture[str], verb: str,
                                         job: int | str) -> None:
    dsn, conn = target
    args = [verb, str(job), *(["--timeout", "0"] if verb == "wait" else [])]
    code, _, err = cli(capsys, "--dsn", dsn, *args)
    assert_clear(code, err, args)
    assert_canary(conn)


# ---- the SQL front-end ---------------------------------------------------------------------

#: Front-end statements with the hostile text quoted as a name or a literal: one statement
#: each (the text can never end it), whose name or value must stay data.
QUOTED_FORMS = [
    "REFRESH MATERIALIZED VIEW {ident}",
    "REFRESH MATERIALIZED VIEW CONCURRENTLY {ident} CASCADE ALL",
    "REFRESH MATERIALIZED VIEW public.{ident} CASCADE FORWARD",
    "REFRESH MATERIALIZED VIEW {ident}." + VIEW + " RESTRICT",
    "SET BACKGROUND_DDL = {literal}",
    "ALTER MATERIALIZED VIEW {ident} REFRESH EVERY (interval '1 hour')",
    "ALTER MATERIALIZED VIEW " + VIEW + " REFRESH EVERY (interval {literal})",
    "ALTER MATERIALIZED VIEW " + VIEW + " REFRESH START WITH ({literal}::timestamptz) "
    "EVERY (interval '1 hour')",
    "CREATE MATERIALIZED VIEW {ident} REFRESH START WITH (now()) EVERY (interval '1 day') AS "
    "SELECT 1 AS one",
    "CREATE TABLE {ident} (id int) WITH (ORIENTATION = COLUMN) DISTRIBUTE BY hash(id)",
    "DROP MATERIALIZED VIEW IF EXISTS {ident}",
]
#: Front-end statements with the hostile text pasted in as is: each starts with a statement
#: that fails (or is refused before anything runs), so a second statement the text may start
#: never runs.
RAW_FORMS = [
    "REFRESH MATERIALIZED VIEW no_such_view_q {raw}",
    "REFRESH MATERIALIZED VIEW no_such_view_q{raw}",
    "REFRESH MATERIALIZED VIEW {raw}",
    "SET BACKGROUND_DDL = maybe{raw}",
    "CANCEL JOBS x{raw}",
    "SUSPEND JOB x{raw}",
    "RESUME JOB 1, {raw}",
    "SHOW JOBS x{raw}",
]


def _sql(capsys: pytest.CaptureFixture[str], dsn: str, text: str) -> tuple[int, str, str]:
    return cli(capsys, "--dsn", dsn, "sql", text)


@SETTINGS
@given(form=st.sampled_from(QUOTED_FORMS), name=HOSTILE)
@example(form=QUOTED_FORMS[0], name="x; DROP TABLE canary; --")
@example(form=QUOTED_FORMS[1], name='"x""; DROP TABLE canary')
@example(form=QUOTED_FORMS[9], name="$$; DROP TABLE canary; $$")
def test_sql_front_end_keeps_names_and_values_data(target: tuple[str, Conn],
                                                   capsys: pytest.CaptureFixture[str],
                                                   form: str, name: str) -> None:
    dsn, conn = target
    if name == "canary":
        return  # DROP ... IF EXISTS "canary" names the canary itself, rightly
    text = form.format(ident=quoted(name), literal=literal(name))
    code, _, err = _sql(capsys, dsn, text)
    assert_clear(code, err, text)
    assert_canary(conn)
    made = conn.execute("SELECT relkind FROM pg_class WHERE relname = %s AND relnamespace = "
                        "'public'::regnamespace", [name]).fetchone()  # by a CREATE form
    if made is not None:
        kind = "MATERIALIZED VIEW" if made[0] == "m" else "TABLE"
        conn.execute(f"DROP {kind} public.{quoted(name)}")


@SETTINGS
@given(form=st.sampled_from(RAW_FORMS), text=HOSTILE)
@example(form=RAW_FORMS[0], text="; DROP TABLE canary; --")
@example(form=RAW_FORMS[1], text="/*/ ; DROP TABLE canary; --")
@example(form=RAW_FORMS[2], text="$x$; DROP TABLE canary")
def test_sql_front_end_pasted_text_never_runs_after_a_failure(target: tuple[str, Conn],
                                                              capsys: pytest.CaptureFixture[str],
                                                              form: str, text: str) -> None:
    dsn, conn = target
    script = form.format(raw=text)
    code, _, err = _sql(capsys, dsn, script)
    assert code != 0 or "canary" not in script.lower(), (script, err)
    assert_clear(code, err, script)
    assert_canary(conn)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(text=HOSTILE, head=st.sampled_from([
    "", "REFRESH MATERIALIZED VIEW ", "REFRESH MATERIALIZED VIEW CONCURRENTLY ", "SHOW JOBS ",
    "SET BACKGROUND_DDL = ", "CANCEL JOBS ", "SUSPEND JOB ", "RESUME JOB "]))
def test_front_end_parsers_return_a_form_or_a_parse_error(head: str, text: str) -> None:
    for parse in (parse_refresh, parse_job_statement):
        try:
            parse(head + text)
        except SqlParseError as exc:
            assert "\n" not in exc.message
