"""Explicit install: `mvgraph init` is the only command that creates anything of mvgraph's.

Every other command, the worker and the library fail in one line on a database without the
schema (or with another version of it) and leave nothing behind.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import suppress

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import mvgraph
from mvgraph.db.connect import connect
from mvgraph.db.migrate import current_version, latest_version, migrate, migrations
from mvgraph.db.scripts import run_script, with_dbname
from mvgraph.errors import SchemaError
from mvgraph.jobs.worker import Worker, WorkerConfig
from tests.conftest import cli

Conn = psycopg.Connection[tuple[object, ...]]
VIEWS = "CREATE TABLE t (id int); CREATE MATERIALIZED VIEW m AS SELECT id FROM t;"
# what `status`, `refresh`, `sql` and `plan` are run as (the CLI, after --dsn)
COMMANDS = (("status",), ("refresh", "m"), ("sql", "REFRESH MATERIALIZED VIEW m"),
            ("plan", "m"))
CATALOG = """
SELECT (SELECT array_agg(nspname ORDER BY nspname) FROM pg_namespace)::text,
       (SELECT array_agg(evtname ORDER BY evtname) FROM pg_event_trigger)::text,
       (SELECT count(*) FROM pg_proc), (SELECT count(*) FROM pg_class),
       (SELECT count(*) FROM pg_trigger)
"""


def catalog(dsn: str) -> tuple[object, ...]:
    """Schemas, event triggers and counts of functions, relations and triggers: DDL of any
    kind changes one of them."""
    with connect(dsn) as c:
        row = c.execute(CATALOG).fetchone()
    assert row is not None
    return row


def nothing_of_mvgraph(dsn: str) -> bool:
    with connect(dsn) as c:
        return c.execute("SELECT NOT EXISTS (SELECT FROM pg_namespace WHERE nspname = 'mvgraph') "
                         "AND NOT EXISTS (SELECT FROM pg_event_trigger)").fetchone() == (True,)


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_commands_on_an_empty_database_say_run_init_and_create_nothing(
        capsys: pytest.CaptureFixture[str], empty_db_dsn: str) -> None:
    with connect(empty_db_dsn) as c:
        run_script(c, VIEWS)
    before = catalog(empty_db_dsn)
    for args in COMMANDS:
        code, _out, err = cli(capsys, "--dsn", empty_db_dsn, *args)
        line = one_error_line(err)
        assert code == 1, (args, err)
        assert "the mvgraph schema is not installed in database" in line, line
        assert "run `mvgraph init` as a role that may create schemas" in line, line
    code, _out, err = cli(capsys, "--dsn", empty_db_dsn, "worker")
    assert code == 1 and "mvgraph init" in one_error_line(err)
    with pytest.raises(SchemaError, match="not installed"):
        Worker(WorkerConfig(empty_db_dsn))._connect()
    for call in (lambda: mvgraph.refresh(empty_db_dsn, "m"), lambda: mvgraph.status(empty_db_dsn),
                 lambda: mvgraph.plan(empty_db_dsn, "m"), lambda: mvgraph.list_jobs(empty_db_dsn),
                 lambda: mvgraph.submit("SELECT 1", dsn=empty_db_dsn),
                 lambda: mvgraph.list_schedules(empty_db_dsn)):
        with pytest.raises(SchemaError) as info:
            call()
        assert info.value.installed == 0 and info.value.needed == latest_version()
    assert catalog(empty_db_dsn) == before
    assert nothing_of_mvgraph(empty_db_dsn)

    code, out, err = cli(capsys, "--dsn", empty_db_dsn, "init")
    assert code == 0, err
    assert "applied migration 0001" in out and "installed event triggers" in out
    for args in COMMANDS:
        code, _out, err = cli(capsys, "--dsn", empty_db_dsn, *args)
        assert code == 0, (args, err)
    Worker(WorkerConfig(empty_db_dsn))._connect().close()
    code, out, _err = cli(capsys, "--dsn", empty_db_dsn, "init")
    assert code == 0 and "up to date" in out


def test_an_older_schema_is_named_and_not_upgraded(
        capsys: pytest.CaptureFixture[str], empty_db_dsn: str) -> None:
    older = migrations()[-2].version  # the release before (numbers may skip one)
    with connect(empty_db_dsn) as c:
        migrate(c, target=older)
        run_script(c, VIEWS)
    before = catalog(empty_db_dsn)
    for args in COMMANDS:
        code, _out, err = cli(capsys, "--dsn", empty_db_dsn, *args)
        line = one_error_line(err)
        assert code == 1, (args, err)
        assert (f"is at version {older} while this mvgraph needs {latest_version()}; run "
                "`mvgraph init`") in line, line
    with pytest.raises(SchemaError, match=f"at version {older}"):
        Worker(WorkerConfig(empty_db_dsn))._connect()
    with pytest.raises(SchemaError, match=f"at version {older}"):
        mvgraph.refresh(empty_db_dsn, "m")
    assert catalog(empty_db_dsn) == before
    with connect(empty_db_dsn) as c:
        assert current_version(c) == older
    code, out, err = cli(capsys, "--dsn", empty_db_dsn, "init")
    assert code == 0 and f"applied migration {latest_version():04d}" in out, err
    code, _out, err = cli(capsys, "--dsn", empty_db_dsn, "refresh", "m")
    assert code == 0, err


def test_a_newer_schema_says_upgrade_mvgraph(capsys: pytest.CaptureFixture[str],
                                             db_dsn: str) -> None:
    newer = latest_version() + 1
    with connect(db_dsn) as c:
        c.execute("INSERT INTO mvgraph.schema_version (version, name) VALUES (%s, 'future')",
                  (newer,))
    for args in (*COMMANDS, ("init",)):
        code, _out, err = cli(capsys, "--dsn", db_dsn, *args)
        line = one_error_line(err)
        assert code == 1, (args, err)
        assert f"at version {newer}, newer than this mvgraph knows" in line, line
        assert line.endswith("upgrade mvgraph"), line
    with pytest.raises(SchemaError, match="upgrade mvgraph"):
        mvgraph.status(db_dsn)


def test_status_warns_of_missing_event_triggers_and_nothing_installs_them_but_init(
        capsys: pytest.CaptureFixture[str], db_dsn: str) -> None:
    """Even as a superuser (who could), no command but init installs an event trigger."""
    with connect(db_dsn) as c:
        run_script(c, VIEWS)
        c.execute("DROP EVENT TRIGGER mvgraph_ddl_start; DROP EVENT TRIGGER mvgraph_sql_drop")
    before = catalog(db_dsn)
    code, _out, err = cli(capsys, "--dsn", db_dsn, "status")
    assert code == 0
    line = one_error_line(err)
    assert line.startswith("warning: event triggers mvgraph_ddl_start, mvgraph_sql_drop "
                           "missing"), line
    assert "`mvgraph init` as a superuser" in line
    st = mvgraph.status(db_dsn)
    assert st.event_trigger is False and any("mvgraph_sql_drop" in w for w in st.warnings)
    for args in COMMANDS[1:]:
        code, _out, err = cli(capsys, "--dsn", db_dsn, *args)
        assert code == 0, err
    assert catalog(db_dsn) == before
    code, out, err = cli(capsys, "--dsn", db_dsn, "init")
    assert code == 0 and err == ""
    assert "installed event triggers mvgraph_ddl_start, mvgraph_sql_drop" in out
    code, _out, err = cli(capsys, "--dsn", db_dsn, "status")
    assert code == 0 and "warning" not in err
    assert mvgraph.init(db_dsn).triggers_installed == ()


# ---- an application role ---------------------------------------------------------------------

def grant_app_role(admin: Conn, role: str) -> None:
    """What an application role is granted to run `status` and refresh its own views: the
    operator level (no right on any table of mvgraph's queue)."""
    admin.execute("SELECT mvgraph.grant_privileges(%s, 'operator')", [role])


@pytest.fixture
def app_role(db_dsn: str) -> Iterator[tuple[str, str]]:
    """A LOGIN role without CREATE anywhere (database, public) owning view m over table t;
    yields (role, its DSN)."""
    role = f"app_{uuid.uuid4().hex[:8]}"
    ident = sql.Identifier(role)
    with connect(db_dsn) as admin:
        run_script(admin, VIEWS)
        mvgraph.track(admin, ["t"])  # its readers may then be fresh (untracked: never skipped)
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident))
        admin.execute(sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC; "
                              "REVOKE TEMPORARY ON DATABASE {db} FROM PUBLIC; "
                              "GRANT SELECT ON t TO {r}; ALTER MATERIALIZED VIEW m OWNER TO {r}"
                              ).format(db=sql.Identifier(admin.info.dbname), r=ident))
        grant_app_role(admin, role)
        row = admin.execute(
            "SELECT has_database_privilege(%(r)s, current_database(), 'CREATE, TEMPORARY'), "
            "has_schema_privilege(%(r)s, 'public', 'CREATE'), "
            "has_schema_privilege(%(r)s, 'mvgraph', 'CREATE')", {"r": role}).fetchone()
        assert row == (False, False, False), "the role must not be able to create anything"
    params = conninfo_to_dict(db_dsn)
    params["user"] = role
    try:
        yield role, make_conninfo(**{k: str(v) for k, v in params.items()})
    finally:
        with connect(db_dsn) as admin:
            admin.execute(sql.SQL("DROP OWNED BY {}").format(ident))
        with connect(with_dbname(db_dsn, "postgres")) as admin, suppress(psycopg.Error):
            admin.execute(sql.SQL("DROP ROLE {}").format(ident))


def test_an_application_role_without_create_runs_status_and_refresh_after_init(
        capsys: pytest.CaptureFixture[str], db_dsn: str, app_role: tuple[str, str]) -> None:
    role, dsn = app_role
    before = catalog(db_dsn)
    code, out, err = cli(capsys, "--dsn", dsn, "status")
    assert code == 0 and err == "", err
    assert "public.m" in out
    code, out, err = cli(capsys, "--dsn", dsn, "refresh", "m", "--json")
    assert code == 0, err
    with connect(db_dsn) as c:
        assert c.execute("SELECT owner FROM mvgraph.job ORDER BY id DESC LIMIT 1"
                         ).fetchone() == (role,)
        assert c.execute("SELECT relispopulated FROM pg_class WHERE relname = 'm'"
                         ).fetchone() == (True,)
    assert mvgraph.status(dsn).views[0].fresh
    assert catalog(db_dsn) == before


def test_init_as_a_role_that_may_not_create_schemas_says_so(
        capsys: pytest.CaptureFixture[str], empty_db_dsn: str) -> None:
    role = f"app_{uuid.uuid4().hex[:8]}"
    with connect(empty_db_dsn) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    params = conninfo_to_dict(empty_db_dsn)
    params["user"] = role
    dsn = make_conninfo(**{k: str(v) for k, v in params.items()})
    try:
        code, _out, err = cli(capsys, "--dsn", dsn, "init")
        line = one_error_line(err)
        assert code == 1
        assert f"role {role} cannot install the mvgraph schema (permission denied" in line, line
        assert line.endswith("run `mvgraph init` as a role that may create schemas"), line
        assert nothing_of_mvgraph(empty_db_dsn)
    finally:
        with connect(with_dbname(empty_db_dsn, "postgres")) as admin, suppress(psycopg.Error):
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
