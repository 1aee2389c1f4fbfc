"""How a worker logs in as a job's submitter, with real password authentication: a server of
its own whose pg_hba.conf asks every connection for a SCRAM password. The worker's login is an
ordinary role with mvgraph's worker level; it finds the submitters' passwords in a password
file (as pg_cron's users do), or logs in through a DSN template. A submitter whose password it
does not have gets a job that fails with one line, and nothing runs in its place."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import psycopg

from mvgraph.db.install import init
from mvgraph.db.scripts import run_script
from tests.conftest import ROOT
from tests.integration.test_jobs import FAST, wait_for
from tests.pgserver import bindir, cluster
from tests.processes import DrainedProcess

PASSWORDS = {"postgres": "su-Pw1", "wrk": "wrk-Pw2", "alice": "alice-Pw3", "bob": "bob-Pw4"}


def _status(conn: psycopg.Connection[tuple[object, ...]], job: int) -> tuple[str, str]:
    row = conn.execute("SELECT status, coalesce(error, '') FROM mvgraph.job_data WHERE id = %s",
                       [job]).fetchone()
    assert row is not None
    return str(row[0]), str(row[1])


def _submit(dsn: str, statement: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute("SELECT mvgraph.submit(%s)", [statement]).fetchone()
    assert row is not None
    return int(str(row[0]))


def test_the_worker_logs_in_as_each_submitter_with_a_password_file(tmp_path: Path) -> None:
    with cluster(bindir(), wal_level=None) as pg:
        with psycopg.connect(pg.uri, autocommit=True) as admin:
            admin.execute("CREATE DATABASE app")
        app = psycopg.conninfo.make_conninfo(pg.uri, dbname="app")
        with psycopg.connect(app, autocommit=True) as c:
            init(c)
            run_script(c, f"""
                ALTER ROLE postgres PASSWORD '{PASSWORDS["postgres"]}';
                CREATE ROLE wrk LOGIN PASSWORD '{PASSWORDS["wrk"]}';
                CREATE ROLE alice LOGIN PASSWORD '{PASSWORDS["alice"]}';
                CREATE ROLE bob LOGIN PASSWORD '{PASSWORDS["bob"]}';
                SELECT mvgraph.grant_privileges('wrk', 'worker');
                SELECT mvgraph.grant_privileges('alice', 'operator');
                SELECT mvgraph.grant_privileges('bob', 'operator');
                CREATE TABLE canary (id int); INSERT INTO canary VALUES (1);
                CREATE TABLE alice_t (x int); INSERT INTO alice_t VALUES (1);
                ALTER TABLE alice_t OWNER TO alice;
            """)
        hba = pg.pgdata / "pg_hba.conf"
        hba.write_text("local all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n")
        if pg.user:
            shutil.chown(hba, pg.user)
        with psycopg.connect(pg.uri, autocommit=True, password=PASSWORDS["postgres"]) as c:
            c.execute("SELECT pg_reload_conf()")

        def dsn(user: str, with_password: bool = True) -> str:
            extra = {"password": PASSWORDS[user]} if with_password else {}
            return psycopg.conninfo.make_conninfo(app, user=user, **extra)

        passfile = tmp_path / "pgpass"
        passfile.write_text(f"*:*:*:wrk:{PASSWORDS['wrk']}\n*:*:*:alice:{PASSWORDS['alice']}\n")
        passfile.chmod(0o600)
        jobs = {"alice": _submit(dsn("alice"), "UPDATE alice_t SET x = x + 1"),
                "bob": _submit(dsn("bob"), "DELETE FROM canary")}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(PGPASSFILE=str(passfile), MVGRAPH_DSN=dsn("wrk", with_password=False))
        proc = DrainedProcess([sys.executable, "-m", "mvgraph", "worker", *FAST], env,
                              cwd=ROOT)
        try:
            with psycopg.connect(dsn("postgres"), autocommit=True) as c:
                wait_for(lambda: all(_status(c, j)[0] in ("done", "failed")
                                     for j in jobs.values()), timeout=40)
                assert _status(c, jobs["alice"]) == ("done", "")
                status, error = _status(c, jobs["bob"])
                assert status == "failed" and "cannot log in as bob" in error \
                    and "password" in error and "\n" not in error, error
                assert PASSWORDS["wrk"] not in error
                assert c.execute("SELECT x FROM alice_t").fetchone() == (2,)
                assert c.execute("SELECT count(*) FROM canary").fetchone() == (1,)
                who = c.execute("SELECT DISTINCT usename::text FROM pg_stat_activity "
                                "WHERE application_name LIKE 'mvgraph job%%'").fetchall()
                assert set(who) <= {("alice",)}, who
        finally:
            proc.kill()
            _out, err = proc.communicate(timeout=30)
        assert PASSWORDS["wrk"] not in err and PASSWORDS["alice"] not in err
