"""Without superuser the event trigger is skipped with one warning, and plans say so."""

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


def test_without_superuser_warns_once_and_plans_say_so(
        db_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    role = f"app_{uuid.uuid4().hex[:8]}"
    with connect(db_dsn) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        dbname = admin.info.dbname
        admin.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
            sql.Identifier(dbname), sql.Identifier(role)))
        admin.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(role)))
        admin.execute(sql.SQL("GRANT USAGE ON SCHEMA mvgraph TO {0}; "
                              "GRANT ALL ON ALL TABLES IN SCHEMA mvgraph TO {0}; "
                              "GRANT ALL ON ALL SEQUENCES IN SCHEMA mvgraph TO {0}").format(
            sql.Identifier(role)))
    params = conninfo_to_dict(db_dsn)
    params["user"] = role
    app_dsn = make_conninfo(**{k: str(v) for k, v in params.items()})
    try:
        with connect(app_dsn) as conn:
            run_script(conn, "CREATE TABLE t (id int); "
                             "CREATE MATERIALIZED VIEW m AS SELECT id FROM t;")
            with caplog.at_level(logging.WARNING, logger="mvgraph"):
                mvgraph.refresh(conn, "m")
                mvgraph.plan(conn, "m")
            warnings = [r for r in caplog.records if "event trigger" in r.getMessage()]
            assert len(warnings) == 1
            p = mvgraph.plan(conn, "m")
            assert "refreshes outside mvgraph are not seen" in p.steps[0].reason
            assert mvgraph.status(conn).event_trigger is False
    finally:
        with connect(db_dsn) as admin:
            admin.execute(sql.SQL("ALTER DATABASE {} OWNER TO postgres").format(
                sql.Identifier(dbname)))
            admin.execute("ALTER SCHEMA public OWNER TO pg_database_owner")
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with connect(with_dbname(db_dsn, "postgres")) as admin, suppress(psycopg.Error):
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
