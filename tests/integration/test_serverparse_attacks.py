"""Issue 17, items 1-2, from the attacker's side: a colleague's SQL file that an administrator
(a superuser) loads with ``graph --from-sql --dsn`` or ``check`` must run nothing. Canaries in
the caller's database and cluster survive only if nothing from the file ran: a sequence whose
value must not move, a role that must not become superuser, a file COPY TO PROGRAM must not
create. The lexer is also checked against the server on scripts PostgreSQL itself splits."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import given, settings
from sqlglot.errors import ParseError

from mvgraph import RelationName, load_graph
from mvgraph.db.connect import connect
from mvgraph.db.single import execute_one
from mvgraph.errors import SqlLoadErrors
from mvgraph.sql.lexer import split
from mvgraph.sql.serverparse import NO_PARSE_SERVER, PARSE_SERVER, scratch_session
from tests.conftest import cli
from tests.integration.test_serverparse import CANDIDATES, _fails
from tests.unit.test_lexer import SMUGGLE, script

Conn = psycopg.Connection[tuple[object, ...]]

EVIL = """\
CREATE FUNCTION evil() RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  PERFORM nextval('public.canary');
  EXECUTE 'ALTER ROLE {role} SUPERUSER';
  EXECUTE 'COPY (SELECT 1) TO PROGRAM ''touch {path}''';
  RETURN 1;
END $$;
CREATE FUNCTION evil_sql() RETURNS int LANGUAGE sql IMMUTABLE
  AS $$ SELECT nextval('public.canary')::int $$;
CREATE TABLE parted (k int) PARTITION BY LIST (k);
CREATE TABLE part1 PARTITION OF parted FOR VALUES IN (evil());
CREATE TABLE part2 PARTITION OF parted FOR VALUES IN (evil_sql());
CREATE TABLE d (a int DEFAULT evil(), b int CHECK (b > evil()),
                c int GENERATED ALWAYS AS (a + evil()) STORED, e int,
                CONSTRAINT e_check CHECK (e < evil_sql()),
                EXCLUDE USING btree ((a + evil()) WITH =));
CREATE INDEX ON d ((evil() + a));
CREATE DOMAIN dd AS int DEFAULT evil() CHECK (VALUE > evil());
CREATE SCHEMA s CREATE TABLE p2 PARTITION OF public.parted FOR VALUES IN (evil() + 1);
CREATE TABLE ctas AS SELECT evil() AS x;
CREATE MATERIALIZED VIEW mv AS SELECT evil() AS x;
CREATE FUNCTION sp_gt(int, int) RETURNS bool LANGUAGE sql IMMUTABLE AS 'SELECT $1 > $2';
CREATE OPERATOR ##> (FUNCTION = sp_gt, LEFTARG = int, RIGHTARG = int);
CREATE OPERATOR <^> (FUNCTION = sp_gt, LEFTARG = int, RIGHTARG = int);
CREATE TABLE t (w int);
CREATE VIEW odd AS SELECT t.w FROM t JOIN t g ON {cond} JOIN d ON d.a = t.w JOIN mv ON true;
{smuggle}
"""


@pytest.fixture
def cond(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A join condition sqlglot cannot parse (made to fail when sqlglot learnt them all)."""
    found = next((c for c in CANDIDATES if _fails(c)), None)
    if found is not None:
        return found
    import mvgraph.sql.dialect as dialect

    real = dialect._parse_view

    def failing(cur: object, parser: object, *args: object) -> object:
        stmt = cur.stmt  # type: ignore[attr-defined]
        if "##>" in stmt.text(stmt.tokens[0], stmt.tokens[-1]):
            raise ParseError("made to fail")
        return real(cur, parser, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(dialect, "_parse_view", failing)
    monkeypatch.setenv("MVGRAPH_CACHE_DIR", str(tmp_path / "cache"))
    return CANDIDATES[0]


@pytest.fixture
def victim(server_dsn: str) -> Iterator[str]:
    """A cluster role the file tries to make superuser."""
    role = f"victim_{uuid.uuid4().hex[:8]}"
    with connect(server_dsn) as admin:
        admin.execute(f'CREATE ROLE "{role}" NOLOGIN')
    yield role
    with connect(server_dsn) as admin:
        admin.execute(f'DROP ROLE IF EXISTS "{role}"')


def _canaries(dsn: str, role: str) -> tuple[object, ...]:
    with connect(dsn) as c:
        row = c.execute("SELECT (SELECT last_value FROM public.canary), "
                        "(SELECT is_called FROM public.canary), "
                        "(SELECT rolsuper FROM pg_roles WHERE rolname = %s)", [role]).fetchone()
    assert row is not None
    return tuple(row)


@pytest.fixture
def evil_file(tmp_path: Path, db_dsn: str, victim: str, cond: str) -> Iterator[tuple[Path, Path]]:
    touched = Path(f"/tmp/mvgraph_pwned_{uuid.uuid4().hex[:8]}")
    path = tmp_path / "colleague.sql"
    path.write_text(EVIL.format(role=victim, path=touched, cond=cond,
                                smuggle=SMUGGLE.replace("bob", victim)))
    with connect(db_dsn) as c:
        c.execute("CREATE SEQUENCE public.canary")
    yield path, touched
    touched.unlink(missing_ok=True)


def test_a_colleagues_file_runs_nothing_for_graph_and_check(
        capsys: pytest.CaptureFixture[str], db_dsn: str, victim: str,
        evil_file: tuple[Path, Path]) -> None:
    path, touched = evil_file
    before = _canaries(db_dsn, victim)
    assert before == (1, False, False)
    code, out, err = cli(capsys, "graph", "--from-sql", str(path), "--dsn", db_dsn, "-f", "json",
                         "--keep-going")
    assert "expected a schema name in SET search_path" in err  # the smuggle: one bad SET
    assert '"public.odd"' in out and "(resolved by the server)" in out
    code, out, err = cli(capsys, "check", "--from-sql", str(path), "--dsn", db_dsn,
                         "--keep-going")
    assert code == 1, out + err  # the database has none of it: a difference, nothing else
    g = load_graph(sql=[path], resolve_with=db_dsn, keep_going=True)
    assert set(g.inputs(RelationName("public", "odd"))) >= {
        RelationName("public", "t"), RelationName("public", "d"), RelationName("public", "mv")}
    assert _canaries(db_dsn, victim) == before
    assert not touched.exists()


def test_the_scratch_role_has_no_rights(server_dsn: str, tmp_path: Path) -> None:
    """Even code that did run on the throwaway server runs as a role that can do nothing
    outside its own scratch database; both are gone afterwards."""
    touched = tmp_path / "x"
    with scratch_session(server_dsn) as conn:
        row = conn.execute("SELECT current_user, rolsuper, rolcreaterole, rolcreatedb, "
                           "current_database(), (SELECT count(*) FROM pg_auth_members m "
                           "WHERE m.member = r.oid) FROM pg_roles r "
                           "WHERE rolname = current_user").fetchone()
        assert row is not None
        name, superuser, createrole, createdb, database, memberships = row
        assert (superuser, createrole, createdb, memberships) == (False, False, False, 0)
        assert database == name
        for attack in (f"COPY (SELECT 1) TO PROGRAM 'touch {touched}'",
                       "SELECT pg_read_file('/etc/passwd')", "CREATE EXTENSION dblink",
                       "ALTER ROLE postgres NOSUPERUSER", "SET ROLE postgres",
                       "SELECT lo_import('/etc/passwd')"):
            with pytest.raises(psycopg.Error):
                execute_one(conn, attack)
    assert not touched.exists()
    with connect(server_dsn) as admin:
        assert admin.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s",
                             [name]).fetchone() == (0,)
        assert admin.execute("SELECT count(*) FROM pg_database WHERE datname = %s",
                             [name]).fetchone() == (0,)


def test_several_statements_are_refused_in_one_execution(conn: Conn) -> None:
    conn.execute("CREATE SEQUENCE canary")
    with pytest.raises(psycopg.errors.SyntaxError, match="multiple commands"):
        execute_one(conn, "SELECT 1; SELECT nextval('canary')")
    assert conn.execute("SELECT is_called FROM canary").fetchone() == (False,)


def test_views_reading_the_callers_tables_still_resolve(tmp_path: Path, conn: Conn,
                                                       cond: str) -> None:
    """The caller's catalog (only) gives stand-ins for the relations the files do not make."""
    conn.execute("CREATE SCHEMA app; CREATE TABLE app.t (w int, x text); "
                 "CREATE VIEW app.good AS SELECT w FROM app.t")
    path = tmp_path / "v.sql"
    path.write_text("CREATE FUNCTION sp_gt(int, int) RETURNS bool LANGUAGE sql IMMUTABLE "
                    "AS 'SELECT $1 > $2';\n"
                    "CREATE OPERATOR ##> (FUNCTION = sp_gt, LEFTARG = int, RIGHTARG = int);\n"
                    "CREATE OPERATOR <^> (FUNCTION = sp_gt, LEFTARG = int, RIGHTARG = int);\n"
                    f"CREATE VIEW app.odd AS SELECT t.w FROM app.t JOIN app.good g ON {cond};\n")
    g = load_graph(sql=[path], resolve_with=conn)
    assert set(g.inputs(RelationName("app", "odd"))) == {RelationName("app", "t"),
                                                         RelationName("app", "good")}


def test_without_a_throwaway_server_it_says_so_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_dsn: str, cond: str) -> None:
    monkeypatch.delenv(PARSE_SERVER)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    path = tmp_path / "v.sql"
    path.write_text("CREATE TABLE t (w int);\n"
                    f"CREATE VIEW v AS SELECT t.w FROM t, t g WHERE {cond};\n")
    with pytest.raises(SqlLoadErrors) as info:
        load_graph(sql=[path], resolve_with=db_dsn)
    assert f"{path}:2:" in str(info.value) and NO_PARSE_SERVER in str(info.value)


def test_the_default_throwaway_server_is_the_embedded_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_dsn: str, cond: str) -> None:
    monkeypatch.delenv(PARSE_SERVER)
    monkeypatch.setenv("MVGRAPH_EMBEDDED_DIR", str(tmp_path / "pg"))
    (tmp_path / "pg").parent.chmod(0o755)
    path = tmp_path / "v.sql"
    path.write_text("CREATE FUNCTION sp_gt(int, int) RETURNS bool LANGUAGE sql IMMUTABLE "
                    "AS 'SELECT $1 > $2';\n"
                    "CREATE OPERATOR ##> (FUNCTION = sp_gt, LEFTARG = int, RIGHTARG = int);\n"
                    "CREATE OPERATOR <^> (FUNCTION = sp_gt, LEFTARG = int, RIGHTARG = int);\n"
                    "CREATE TABLE t (w int);\n"
                    f"CREATE VIEW v AS SELECT t.w FROM t, t g WHERE {cond};\n")
    from mvgraph.db import embedded
    try:
        g = load_graph(sql=[path], resolve_with=db_dsn)
    finally:
        embedded.stop()
    assert set(g.inputs(RelationName("public", "v"))) == {RelationName("public", "t")}


# -- the lexer against the server ---------------------------------------------------------------

TRICKY = [
    SMUGGLE.replace("ALTER ROLE bob SUPERUSER", "SELECT 99") + "\nSELECT 1",
    "SELECT E'a'\n -- c\n '\\';SELECT 2;'; SELECT 'b'\n'\\'",
    "SELECT $a$ ; $b$ ; $A$ ; $a$; SELECT a$b$ FROM (SELECT 1 AS \"a$b$\") s",
    "/* a /* b; */ c; */ SELECT 1; -- ;\nSELECT 2 /* ; */",
    'SELECT 1 AS "a;""b"; SELECT U&\'\\0041;\'',
]


def _server_results(conn: Conn, text: str) -> list[object]:
    """What the server returns for a script sent whole (simple protocol: it splits)."""
    cur = conn.execute(text.encode())
    out: list[object] = []
    while True:
        out.append(cur.fetchone() if cur.description is not None else cur.statusmessage)
        if not cur.nextset():
            return out


def _piece_results(conn: Conn, text: str) -> list[object]:
    out: list[object] = []
    for piece in split(text):
        cur = execute_one(conn, text[piece.start : piece.end])
        out.append(cur.fetchone() if cur.description is not None else cur.statusmessage)
    return out


@pytest.mark.parametrize("text", TRICKY)
def test_tricky_scripts_split_as_the_server_does(conn: Conn, text: str) -> None:
    conn.execute("RESET standard_conforming_strings")
    whole = _server_results(conn, text)
    conn.execute("RESET standard_conforming_strings")
    assert _piece_results(conn, text) == whole


def test_standard_conforming_strings_off_as_the_server_lexes_it(conn: Conn) -> None:
    """psql lexes each statement with the setting the previous ones left; so does split."""
    text = r"SELECT 'a\';b', 1; SELECT 'c\\'"
    expected = [r"SELECT 'a\';b', 1", r"SELECT 'c\\'"]
    conn.execute("SET standard_conforming_strings = off")
    try:
        assert _server_results(conn, text) == [("a';b", 1), ("c\\",)]
    finally:
        conn.execute("RESET standard_conforming_strings")
    assert [text[p.start : p.end] for p in split(text, standard_strings=False)] == expected
    script = "SET standard_conforming_strings = off;" + text
    assert [script[p.start : p.end] for p in split(script)][1:] == expected


@given(script())
@settings(max_examples=40, deadline=None)
def test_generated_scripts_split_as_the_server_does(server_dsn: str,
                                                    case: tuple[str, int]) -> None:
    text, count = case
    with connect(server_dsn) as c:
        whole = _server_results(c, text)
        assert len(whole) == count
        assert _piece_results(c, text) == whole

