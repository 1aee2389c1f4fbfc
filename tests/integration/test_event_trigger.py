"""Without superuser `mvgraph init` skips the event triggers with one warning line, and plans
say so."""

from __future__ import annotations

import logging
import uuid
from contextlib import suppress

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import mvgraph
from mvgraph.db.connect import connect
from mvgraph.db.scripts import run_script, with_dbname
from tests.conftest import cli


def test_init_without_superuser_warns_once_and_plans_say_so(
        empty_db_dsn: str, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    """The database's owner installs the schema; the event triggers (superuser only) are named
    in one warning line by init, and by status; refresh and plan try nothing."""
    role = f"app_{uuid.uuid4().hex[:8]}"
    with connect(empty_db_dsn) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        dbname = admin.info.dbname
        admin.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
            sql.Identifier(dbname), sql.Identifier(role)))
    params = conninfo_to_dict(empty_db_dsn)
    params["user"] = role
    app_dsn = make_conninfo(**{k: str(v) for k, v in params.items()})
    try:
        code, out, err = cli(capsys, "--dsn", app_dsn, "init")
        assert code == 0, err
        assert "applied migration 0001" in out
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith("warning: event triggers mvgraph_ddl_end, mvgraph_ddl_start, "
                                   "mvgraph_sql_drop not installed (creating event triggers "
                                   f"needs a superuser; role {role} is not one)"), lines[0]
        with connect(app_dsn) as conn:
            run_script(conn, "CREATE TABLE t (id int); "
                             "CREATE MATERIALIZED VIEW m AS SELECT id FROM t;")
            mvgraph.track(conn, ["t"])  # an untracked input is never skipped, whatever else
            with caplog.at_level(logging.WARNING, logger="mvgraph"):
                mvgraph.refresh(conn, "m")
                mvgraph.plan(conn, "m")
            assert not [r for r in caplog.records if "event trigger" in r.getMessage()]
            p = mvgraph.plan(conn, "m")
            assert "refreshes outside mvgraph are not seen" in p.steps[0].reason
            st = mvgraph.status(conn)
            assert st.event_trigger is False
            assert len(st.warnings) == 1 and "event triggers" in st.warnings[0]
            assert conn.execute("SELECT count(*) FROM pg_event_trigger").fetchone() == (0,)
    finally:
        with connect(with_dbname(empty_db_dsn, "postgres")) as admin:
            admin.execute(sql.SQL("ALTER DATABASE {} OWNER TO postgres").format(
                sql.Identifier(dbname)))
        with connect(empty_db_dsn) as admin:
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with connect(with_dbname(empty_db_dsn, "postgres")) as admin, suppress(psycopg.Error):
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
