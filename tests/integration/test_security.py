"""A job never acts with more rights than its submitter (issue: the job queue as a privilege
escalation channel). Real roles on the real server: an attacker (``mallory``) with mvgraph's
operator level, a victim (``alice``) with the same, and a worker logged in either as the
superuser or as an ordinary role with the worker level that is also a member of both (the
setup in which, before, ``RESET ROLE; SET ROLE alice`` borrowed alice's rights). After every
attack: no victim table dropped or read, no role altered, and the queue still runs alice's
jobs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest

from mvgraph.db.scripts import run_script
from mvgraph.refresh.service import prepare
from tests.conftest import cli
from tests.integration.test_jobs import wait_for, worker

Conn = psycopg.Connection[tuple[object, ...]]
FINISHED = ("done", "failed", "cancelled")


@dataclass
class Cast:
    """The roles of one test and their DSNs."""

    alice: str
    mallory: str
    worker_login: str  # the superuser's name, or an ordinary worker role
    alice_dsn: str
    mallory_dsn: str
    worker_dsn: str
    superuser: str


@pytest.fixture(params=["superuser-worker", "ordinary-worker"])
def cast(request: pytest.FixtureRequest, conn: Conn, db_dsn: str) -> Iterator[Cast]:
    """alice owns a secret table and a view; mallory owns a schema of traps; both are
    operators; the worker logs in as the superuser or as an ordinary worker role that is a
    member of both."""
    prepare(conn)  # the event triggers, installed by the superuser
    suffix = conn.info.dbname
    alice, mallory, wrk = f"alice_{suffix}", f"mallory_{suffix}", f"wrk_{suffix}"
    superuser = str(conn.execute("SELECT current_user").fetchone()[0])  # type: ignore[index]
    run_script(conn, f"""
        CREATE ROLE {alice} LOGIN; CREATE ROLE {mallory} LOGIN;
        GRANT CREATE ON DATABASE {suffix} TO {mallory};
        SELECT mvgraph.grant_privileges('{alice}', 'operator');
        SELECT mvgraph.grant_privileges('{mallory}', 'operator');
        CREATE TABLE canary (id int); INSERT INTO canary VALUES (1);
        CREATE TABLE public.alice_secret (secret text);
        INSERT INTO public.alice_secret VALUES ('the secret');
        ALTER TABLE public.alice_secret OWNER TO {alice};
        CREATE MATERIALIZED VIEW public.alice_mv AS SELECT secret FROM public.alice_secret;
        ALTER MATERIALIZED VIEW public.alice_mv OWNER TO {alice};
        GRANT CREATE ON SCHEMA public TO {mallory};
    """)
    worker_login = superuser
    if request.param == "ordinary-worker":
        worker_login = wrk
        run_script(conn, f"""
            CREATE ROLE {wrk} LOGIN;
            SELECT mvgraph.grant_privileges('{wrk}', 'worker');
            GRANT {alice} TO {wrk}; GRANT {mallory} TO {wrk};
        """)
    with_user = psycopg.conninfo.make_conninfo
    try:
        yield Cast(alice, mallory, worker_login, with_user(db_dsn, user=alice),
                   with_user(db_dsn, user=mallory), with_user(db_dsn, user=worker_login),
                   superuser)
    finally:
        run_script(conn, "DELETE FROM mvgraph.job; DELETE FROM mvgraph.schedule;")
        for role in (wrk, mallory, alice):
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone()
            if exists:
                run_script(conn, f"DROP OWNED BY {role} CASCADE; DROP ROLE {role};")


def submit(dsn: str, statement: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute("SELECT mvgraph.submit(%s)", [statement]).fetchone()
    assert row is not None
    return int(str(row[0]))


def finished(conn: Conn, jobs: list[int]) -> bool:
    rows = conn.execute("SELECT count(*) FROM mvgraph.job_data WHERE id = ANY(%s) "
                        "AND status IN ('done', 'failed', 'cancelled')", [jobs]).fetchone()
    return rows is not None and rows[0] == len(jobs)


def outcome(conn: Conn, job: int) -> tuple[str, str]:
    row = conn.execute("SELECT status, coalesce(error, '') FROM mvgraph.job_data WHERE id = %s",
                       [job]).fetchone()
    assert row is not None
    return str(row[0]), str(row[1])


def assert_nothing_escaped(conn: Conn, cast: Cast) -> None:
    """The victim's table is there, unread by mallory; no role gained anything."""
    assert conn.execute("SELECT count(*) FROM public.alice_secret").fetchone() == (1,)
    assert conn.execute("SELECT count(*) FROM canary").fetchone() == (1,)
    rows = conn.execute("SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls "
                        "FROM pg_roles WHERE rolname IN (%s, %s)",
                        [cast.alice, cast.mallory]).fetchall()
    assert all(not any(r[1:]) for r in rows), rows
    member_of = conn.execute(
        "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid "
        "JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = %s", [cast.mallory]).fetchall()
    assert member_of == [], member_of
    assert conn.execute("SELECT has_table_privilege(%s, 'public.alice_secret', 'SELECT')",
                        [cast.mallory]).fetchone() == (False,)


def alice_still_served(conn: Conn, cast: Cast) -> None:
    """The queue still runs the victim's jobs, with her rights."""
    job = submit(cast.alice_dsn, "REFRESH MATERIALIZED VIEW public.alice_mv RESTRICT")
    wait_for(lambda: finished(conn, [job]), timeout=30)
    assert outcome(conn, job) == ("done", ""), outcome(conn, job)


ROLE_ESCAPES = [
    # every spelling of a role change, each followed by what it was for
    "DO $$BEGIN SET ROLE {target}; DROP TABLE public.alice_secret; END$$",
    "DO $$BEGIN EXECUTE 'SET/**/ROLE {target}'; DROP TABLE public.alice_secret; END$$",
    "DO $$BEGIN EXECUTE 'SET \"role\" = ''{target}'''; DROP TABLE public.alice_secret; END$$",
    "DO $$BEGIN PERFORM set_config('role', '{target}', false); "
    "DROP TABLE public.alice_secret; END$$",
    "DO $$BEGIN EXECUTE 'SET SESSION AUTHORIZATION {target}'; "
    "DROP TABLE public.alice_secret; END$$",
    "DO $$BEGIN RESET ROLE; SET ROLE {target}; GRANT SELECT ON public.alice_secret TO {mallory};"
    " END$$",
    "/* a leading comment */ DO $$BEGIN RESET ROLE; DROP TABLE public.alice_secret; END$$",
    "DO $$BEGIN EXECUTE 'RESET SESSION AUTHORIZATION'; DROP TABLE public.alice_secret; END$$",
    "DO $$BEGIN EXECUTE 'ALTER ROLE {mallory} SUPERUSER'; END$$",
    "GRANT {target} TO {mallory}",
    "SELECT {mallory}_schema.escape()",  # a function of mallory's that tries all of it
    "DISCARD ALL",
    "RESET ALL",
]


def test_no_spelling_of_a_role_change_gives_a_job_more_than_its_submitters_rights(
        conn: Conn, db_dsn: str, cast: Cast) -> None:
    m = cast.mallory
    with psycopg.connect(cast.mallory_dsn, autocommit=True) as c:
        c.execute(f"""
            CREATE SCHEMA {m}_schema;
            CREATE FUNCTION {m}_schema.escape() RETURNS text LANGUAGE plpgsql AS $f$
            DECLARE r text; out text := '';
            BEGIN
                FOREACH r IN ARRAY ARRAY['{cast.superuser}', '{cast.alice}',
                                          '{cast.worker_login}'] LOOP
                    BEGIN
                        EXECUTE 'RESET ROLE';
                        EXECUTE format('SET ROLE %I', r);
                        DROP TABLE public.alice_secret;
                        out := out || 'dropped as ' || r;
                    EXCEPTION WHEN OTHERS THEN out := out || r || ': ' || SQLERRM || '; ';
                    END;
                END LOOP;
                RETURN out;
            END $f$;
        """)
    jobs = [submit(cast.mallory_dsn, t.format(target=target, mallory=m))
            for t in ROLE_ESCAPES
            for target in {cast.superuser, cast.alice, cast.worker_login}]
    with worker(cast.worker_dsn):
        wait_for(lambda: finished(conn, jobs), timeout=60)
        statements = dict(conn.execute("SELECT id, statement FROM mvgraph.job_data "
                                       "WHERE id = ANY(%s)", [jobs]).fetchall())
        for job in jobs:
            status, error = outcome(conn, job)
            harmful = any(w in str(statements[job]) for w in ("DROP", "GRANT", "ALTER"))
            assert status == ("failed" if harmful else "done"), (statements[job], status, error)
            assert not harmful or any(w in error for w in (
                "permission denied", "must be owner", "must be superuser", "must have admin",
                "not permitted")), (statements[job], error)
        assert_nothing_escaped(conn, cast)
        alice_still_served(conn, cast)
    # each job ran logged in as mallory: what its function saw
    row = conn.execute("SELECT result FROM mvgraph.job_data WHERE statement LIKE %s",
                       [f"SELECT {m}_schema.escape()%"]).fetchone()
    assert row is not None and "dropped" not in json.dumps(row[0])


def test_shadowing_pg_catalog_and_session_state_reach_no_other_session(
        conn: Conn, db_dsn: str, cast: Cast) -> None:
    """A job puts its own schema before pg_catalog, shadows functions and an operator that
    mvgraph's own SQL uses, and leaves session settings for the next job: everything that
    runs afterwards runs as mallory at most (the traps log who ran them) and the next job
    starts clean."""
    m = cast.mallory
    with psycopg.connect(cast.mallory_dsn, autocommit=True) as c:
        c.execute(f"""
            CREATE SCHEMA {m}_trap;
            CREATE TABLE {m}_trap.caught (who text, sess text, su boolean);
            GRANT ALL ON {m}_trap.caught TO PUBLIC;
            CREATE FUNCTION {m}_trap.spring() RETURNS void LANGUAGE plpgsql AS $f$
            BEGIN
                INSERT INTO {m}_trap.caught
                SELECT current_user, session_user,
                       (SELECT rolsuper FROM pg_roles WHERE rolname = current_user);
                BEGIN
                    EXECUTE 'ALTER ROLE {m} SUPERUSER';
                EXCEPTION WHEN OTHERS THEN NULL;
                END;
            END $f$;
            CREATE FUNCTION {m}_trap.now() RETURNS timestamptz LANGUAGE plpgsql AS $f$
            BEGIN PERFORM {m}_trap.spring(); RETURN pg_catalog.now(); END $f$;
            CREATE FUNCTION {m}_trap.clock_timestamp() RETURNS timestamptz LANGUAGE plpgsql
            AS $f$ BEGIN PERFORM {m}_trap.spring(); RETURN pg_catalog.clock_timestamp(); END $f$;
            CREATE FUNCTION {m}_trap.pg_backend_pid() RETURNS int LANGUAGE plpgsql AS $f$
            BEGIN PERFORM {m}_trap.spring(); RETURN pg_catalog.pg_backend_pid(); END $f$;
            CREATE FUNCTION {m}_trap.eq(bigint, bigint) RETURNS boolean LANGUAGE plpgsql AS $f$
            BEGIN PERFORM {m}_trap.spring(); RETURN $1 OPERATOR(pg_catalog.=) $2; END $f$;
            CREATE OPERATOR {m}_trap.= (LEFTARG = bigint, RIGHTARG = bigint,
                                          FUNCTION = {m}_trap.eq);
            CREATE FUNCTION {m}_trap.eq4(bigint, integer) RETURNS boolean LANGUAGE plpgsql AS $f$
            BEGIN PERFORM {m}_trap.spring(); RETURN $1 OPERATOR(pg_catalog.=) $2; END $f$;
            CREATE OPERATOR {m}_trap.= (LEFTARG = bigint, RIGHTARG = integer,
                                          FUNCTION = {m}_trap.eq4);
        """)
    trap_path = f"{m}_trap, pg_catalog, public"
    jobs = [
        submit(cast.mallory_dsn, f"SELECT set_config('search_path', '{trap_path}', false)"),
        submit(cast.mallory_dsn, f"DO $$BEGIN PERFORM set_config('search_path', '{trap_path}',"
                                 " false); CREATE TEMP TABLE leftover (x int); END$$"),
        submit(cast.mallory_dsn, "SET statement_timeout = 1"),
        submit(cast.mallory_dsn, "SELECT pg_sleep(0.05), current_setting('search_path'), "
                                 "to_regclass('pg_temp.leftover')"),
        submit(cast.mallory_dsn, "VACUUM canary"),  # autocommit path, after the session traps
    ]
    with worker(cast.worker_dsn, "--concurrency", "1"):
        wait_for(lambda: finished(conn, jobs), timeout=60)
        alice_still_served(conn, cast)
    caught = conn.execute(f"SELECT DISTINCT who, sess, su FROM {m}_trap.caught").fetchall()
    assert all(who == m and not su for who, _sess, su in caught), caught
    assert_nothing_escaped(conn, cast)
    # the fourth job started clean: no timeout, the path it was submitted with, no temp table
    status, error = outcome(conn, jobs[3])
    assert status == "done", error
    row = conn.execute("SELECT result FROM mvgraph.job_data WHERE id = %s", [jobs[3]]).fetchone()
    assert row is not None
    first = row[0]["rows"][0]  # type: ignore[index]
    assert m + "_trap" not in str(first[1]) and first[2] is None, first
    # VACUUM of a table mallory does not own: skipped with PostgreSQL's warning, nothing else
    assert outcome(conn, jobs[4])[0] == "done"


def test_the_queue_cannot_be_tampered_with(conn: Conn, db_dsn: str, cast: Cast) -> None:
    """No direct writes to the queue, no worker functions for an operator, no steering of
    another role's jobs; forged rows cannot stop the workers."""
    victim = submit(cast.alice_dsn, "SELECT secret FROM public.alice_secret")
    attempts = [
        "INSERT INTO mvgraph.job_data (kind, statement, status, background, lease_until, owner)"
        " VALUES ('sql', 'x', 'running', true, 'infinity', current_user)",
        "INSERT INTO mvgraph.job (kind, statement, status, background, lease_until, owner) "
        "VALUES ('sql', 'x', 'running', true, 'infinity', current_user)",
        "UPDATE mvgraph.job SET status = 'running', background = true, lease_until = 'infinity'",
        "INSERT INTO mvgraph.job_step (job_id, seq, name, planned) VALUES (1, 1, 'x', 'run')",
        "DELETE FROM mvgraph.job",
        "INSERT INTO mvgraph.schedule_slot (schedule_id, slot, status) VALUES (1, now(), 'fired')",
        "UPDATE mvgraph.setting SET value = '0' WHERE key = 'max_concurrent_jobs'",
        "SELECT mvgraph.put_setting('max_concurrent_jobs', '1')",
        "SELECT * FROM mvgraph.claim_jobs('mallory', 1e9, 100)",
        f"SELECT mvgraph.job_heartbeat({victim}, 1, 1e9)",
        "SELECT mvgraph.submit_for_schedules(ARRAY[1]::bigint[], 'REFRESH MATERIALIZED VIEW "
        "public.alice_mv', '{}'::jsonb)",
        f"SELECT mvgraph.finish_job({victim}, 'done', NULL, NULL)",
        f"SELECT mvgraph.cancel_job({victim})",
        f"SELECT mvgraph.suspend_job({victim})",
        f"SELECT mvgraph.step_running({victim}, 1)",
        f"SELECT mvgraph.sql_job_done({victim}, 1, '{{}}'::jsonb, 0, 0)",
        f"SELECT mvgraph.job_result({victim})",
        f"SELECT mvgraph.grant_privileges('{cast.mallory}', 'admin')",
    ]
    with psycopg.connect(cast.mallory_dsn, autocommit=True) as c:
        for sql in attempts:
            with pytest.raises(psycopg.Error) as caught:
                c.execute(sql.encode())
            assert isinstance(caught.value, psycopg.errors.InsufficientPrivilege
                              | psycopg.errors.NoDataFound), (sql, caught.value)
        # what mallory may see of the queue: her own jobs only
        own = submit(cast.mallory_dsn, "SELECT 1")
        assert c.execute("SELECT id FROM mvgraph.job").fetchall() == [(own,)]
        assert c.execute("SELECT id FROM mvgraph.jobs").fetchall() == [(own,)]
        assert c.execute("SELECT count(*) FROM mvgraph.job_step WHERE job_id = %s",
                         [victim]).fetchone() == (0,)
    with worker(cast.worker_dsn):
        wait_for(lambda: finished(conn, [victim, own]), timeout=30)
        alice_still_served(conn, cast)
    assert outcome(conn, victim) == ("done", "")
    with psycopg.connect(cast.alice_dsn, autocommit=True) as c:  # alice reads her result
        row = c.execute("SELECT mvgraph.job_result(%s)", [victim]).fetchone()
        assert row is not None and row[0]["result"]["rows"] == [["the secret"]]  # type: ignore[index]
    assert_nothing_escaped(conn, cast)


def test_a_job_whose_submitter_cannot_log_in_fails_with_one_line(
        conn: Conn, db_dsn: str, cast: Cast) -> None:
    """The worker cannot log in as a NOLOGIN role: the job fails with a line saying what to
    do; nothing runs with the worker's rights instead."""
    team = f"team_{conn.info.dbname}"
    run_script(conn, f"CREATE ROLE {team} NOLOGIN; SELECT mvgraph.grant_privileges('{team}', "
                     f"'operator'); GRANT {team} TO {cast.mallory};")
    try:
        with psycopg.connect(cast.mallory_dsn, autocommit=True) as c:
            c.execute(f"SET ROLE {team}")
            row = c.execute("SELECT mvgraph.submit('DROP TABLE canary')").fetchone()
        assert row is not None
        job = int(str(row[0]))
        assert conn.execute("SELECT owner, login FROM mvgraph.job_data WHERE id = %s",
                            [job]).fetchone() == (team, cast.mallory)
        # the login is mallory, acting as the team: it runs, with the team's rights (no DROP)
        with worker(cast.worker_dsn):
            wait_for(lambda: finished(conn, [job]), timeout=30)
        status, error = outcome(conn, job)
        assert status == "failed" and "must be owner of table canary" in error, error
        run_script(conn, f"ALTER ROLE {cast.mallory} NOLOGIN")
        job = submit(psycopg.conninfo.make_conninfo(db_dsn), "SELECT 1")  # superuser's: control
        blocked = _as_login_refused(conn, cast, "SELECT 2")
        with worker(cast.worker_dsn):
            wait_for(lambda: finished(conn, [job, blocked]), timeout=30)
        status, error = outcome(conn, blocked)
        assert status == "failed" and f"cannot log in as {cast.mallory}" in error \
            and "\n" not in error, error
        assert outcome(conn, job)[0] == "done"
        assert conn.execute("SELECT count(*) FROM canary").fetchone() == (1,)
    finally:
        run_script(conn, f"ALTER ROLE {cast.mallory} LOGIN; DROP OWNED BY {team}; "
                         f"DROP ROLE {team};")


def _as_login_refused(conn: Conn, cast: Cast, statement: str) -> int:
    """A job mallory submitted before her login was disabled (written as the superuser)."""
    row = conn.execute("INSERT INTO mvgraph.job_data (kind, statement, status, background, "
                       "options, owner, login) VALUES ('sql', %s, 'queued', true, '{}', %s, %s) "
                       "RETURNING id", [statement, cast.mallory, cast.mallory]).fetchone()
    assert row is not None
    return int(str(row[0]))


def test_levels_viewer_operator_revoke_at_once(conn: Conn, db_dsn: str, cast: Cast) -> None:
    """Without a grant a role sees nothing; a viewer sees its own jobs but cannot submit; an
    operator can; a revoke takes effect in a session that is already open."""
    nobody = f"nobody_{conn.info.dbname}"
    run_script(conn, f"CREATE ROLE {nobody} LOGIN")
    try:
        nobody_dsn = psycopg.conninfo.make_conninfo(db_dsn, user=nobody)
        with psycopg.connect(nobody_dsn, autocommit=True) as c:
            for sql in ("SELECT * FROM mvgraph.jobs", "SELECT mvgraph.submit('SELECT 1')"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    c.execute(sql.encode())
        cur = conn.execute("SELECT mvgraph.grant_privileges(%s, 'viewer', true)", [nobody])
        assert cur.fetchone() == (True,)
        with psycopg.connect(nobody_dsn, autocommit=True) as c:
            assert c.execute("SELECT count(*) FROM mvgraph.jobs").fetchone() == (0,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute("SELECT mvgraph.submit('SELECT 1')")
            conn.execute("SELECT mvgraph.grant_privileges(%s, 'operator')", [nobody])
            job = c.execute("SELECT mvgraph.submit('SELECT 1')").fetchone()
            assert job is not None
            assert c.execute("SELECT id FROM mvgraph.jobs").fetchall() == [job]
            conn.execute("SELECT mvgraph.revoke_privileges(%s)", [nobody])
            with pytest.raises(psycopg.errors.InsufficientPrivilege):  # the same session
                c.execute("SELECT mvgraph.submit('SELECT 1')")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute("SELECT * FROM mvgraph.jobs")
    finally:
        run_script(conn, f"DELETE FROM mvgraph.job; DROP OWNED BY {nobody}; DROP ROLE {nobody};")


def test_every_security_definer_function_pins_its_search_path(conn: Conn) -> None:
    rows = conn.execute("""
        SELECT p.oid::regprocedure::text FROM pg_proc p
          JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'mvgraph' AND p.prosecdef
           AND NOT EXISTS (SELECT FROM unnest(p.proconfig) c
                            WHERE c = 'search_path=pg_catalog, pg_temp')""").fetchall()
    assert rows == []
    count = conn.execute("SELECT count(*) FROM pg_proc p JOIN pg_namespace n "
                         "ON n.oid = p.pronamespace WHERE n.nspname = 'mvgraph' "
                         "AND p.prosecdef").fetchone()
    assert count is not None and int(str(count[0])) > 20  # the check looks at something


def test_no_role_but_the_owner_has_a_right_on_the_queue_tables(conn: Conn, cast: Cast) -> None:
    rows = conn.execute("""
        SELECT c.relname, pg_get_userbyid(a.grantee), a.privilege_type
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
               aclexplode(c.relacl) a
         WHERE n.nspname = 'mvgraph' AND c.relkind = 'r' AND a.grantee <> c.relowner
           AND c.relname IN ('job_data', 'job_step_data', 'schedule_data',
                             'schedule_slot_data', 'daemon', 'setting', 'privilege')
           AND a.privilege_type <> 'SELECT'""").fetchall()
    assert rows == []


def test_grant_and_revoke_from_the_cli_print_what_they_ran(
        capsys: pytest.CaptureFixture[str], conn: Conn, db_dsn: str) -> None:
    role = f"cli_{conn.info.dbname}"
    run_script(conn, f"CREATE ROLE {role} LOGIN")
    try:
        code, out, err = cli(capsys, "--dsn", db_dsn, "grant", role, "--operator", "--print")
        assert code == 0, err
        assert f"GRANT EXECUTE ON FUNCTION mvgraph.submit(text) TO {role}" in out
        assert out.strip().endswith(f"{role}: operator")
        code, out, err = cli(capsys, "--dsn", db_dsn, "grant", role, "--viewer", "--operator")
        assert code == 2 and "exactly one level" in err and len(err.strip().splitlines()) == 1
        code, out, err = cli(capsys, "--dsn", db_dsn, "grant", "no_such_role_x", "--viewer")
        assert code != 0 and "no_such_role_x" in err and len(err.strip().splitlines()) == 1
        with psycopg.connect(psycopg.conninfo.make_conninfo(db_dsn, user=role),
                             autocommit=True) as c:
            assert c.execute("SELECT mvgraph.submit('SELECT 1')").fetchone() is not None
            code, out, err = cli(capsys, "--dsn", db_dsn, "revoke", role, "--print")
            assert code == 0 and f"REVOKE EXECUTE ON FUNCTION mvgraph.submit(text) FROM {role}" \
                in out, err
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute("SELECT mvgraph.submit('SELECT 1')")
        # an operator may not grant
        run_script(conn, f"SELECT mvgraph.grant_privileges('{role}', 'operator')")
        weak = psycopg.conninfo.make_conninfo(db_dsn, user=role)
        code, out, err = cli(capsys, "--dsn", weak, "grant", role, "--admin")
        assert code == 1 and "`mvgraph grant ROLE --admin`" in err, err
    finally:
        run_script(conn, f"DELETE FROM mvgraph.job; DROP OWNED BY {role}; DROP ROLE {role};")


def test_an_operator_schedules_only_views_it_may_refresh(conn: Conn, cast: Cast) -> None:
    oid = conn.execute("SELECT 'public.alice_mv'::regclass::oid").fetchone()[0]  # type: ignore[index]
    call = ("SELECT mvgraph.create_schedule('s', %s, 'DEFAULT', 'interval', now(), "
            "'1 hour', '1 hour', NULL, 'UTC', NULL, 'skip', now(), 'sql')")
    with psycopg.connect(cast.mallory_dsn, autocommit=True) as c, \
            pytest.raises(psycopg.errors.InsufficientPrivilege):
        c.execute(call, [oid])
    with psycopg.connect(cast.alice_dsn, autocommit=True) as c:
        row = c.execute(call, [oid]).fetchone()
        assert row is not None
    with psycopg.connect(cast.mallory_dsn, autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM mvgraph.schedule").fetchone() == (0,)
        with pytest.raises(psycopg.errors.NoDataFound):
            c.execute("SELECT mvgraph.drop_schedule(%s)", [row[0]])
    assert conn.execute("SELECT owner::text FROM mvgraph.schedule").fetchall() == [(cast.alice,)]


FRAGMENTS = [
    "REFRESH MATERIALIZED VIEW public.alice_mv", "CREATE MATERIALIZED VIEW hostile_mv AS SELECT 1",
    "; DROP TABLE canary; --", "'); DROP TABLE canary; --", '"x""; DROP TABLE canary; --',
    "/* */", "/* nested /* */", "--", "$$", "$q$ DROP TABLE canary $q$", "\\", "E'\\'';",
    " WITH NO DATA", " CASCADE ALL", "\u202e", "é", "ROLE", "SET ROLE postgres;", "\t", "\n",
    " COMMIT; ALTER ROLE {mallory} SUPERUSER;", "SELECT 1", "VACUUM", "(", ")",
]


def test_hostile_text_to_submit_ends_in_clear_errors_and_runs_as_the_submitter(
        conn: Conn, cast: Cast) -> None:
    """Any text given to mvgraph.submit is either a job (run with the submitter's rights) or
    one clear error; afterwards the victim's tables and the roles are intact."""
    from hypothesis import HealthCheck, example, given, settings
    from hypothesis import strategies as st

    pieces = st.sampled_from([f.format(mallory=cast.mallory) for f in FRAGMENTS])
    texts = st.one_of(st.lists(pieces | st.text(max_size=20), max_size=8).map("".join),
                      st.text(max_size=200), st.just("x" * 10_000 + "; DROP TABLE canary"))
    queued: list[int] = []
    with psycopg.connect(cast.mallory_dsn, autocommit=True) as c:

        @settings(max_examples=120, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @example("CREATE MATERIALIZED VIEW hostile_mv AS SELECT 1'); DROP TABLE canary; --")
        @given(texts)
        def one(text: str) -> None:
            try:
                row = c.execute("SELECT mvgraph.submit(%s)", [text.replace("\x00", "")]
                                ).fetchone()
            except psycopg.Error as exc:
                assert exc.sqlstate is not None and not exc.sqlstate.startswith("XX"), exc
                assert exc.diag.message_primary and "\n" not in exc.diag.message_primary
                return
            assert row is not None
            queued.append(int(str(row[0])))

        one()
    with worker(cast.worker_dsn, "--concurrency", "2"):
        wait_for(lambda: finished(conn, queued), timeout=120)
        alice_still_served(conn, cast)
    assert_nothing_escaped(conn, cast)
    owners = conn.execute("SELECT DISTINCT owner::text, login::text FROM mvgraph.job_data "
                          "WHERE id = ANY(%s)", [queued]).fetchall()
    assert set(owners) <= {(cast.mallory, cast.mallory)}


def test_a_daemon_without_superuser_runs_each_schedule_as_its_owner(
        conn: Conn, cast: Cast) -> None:
    """The daemon's login (the superuser, or an ordinary worker role) fires alice's schedule;
    its jobs are alice's, run logged in as alice, and mallory sees none of it."""
    from tests.e2e.test_daemon import add, daemon, fired, stop

    with psycopg.connect(cast.alice_dsn, autocommit=True) as c:
        sid = add(c, "public.alice_mv")
    with daemon(cast.worker_dsn, "--workers", "1") as proc:
        wait_for(lambda: len(fired(conn, sid)) >= 2, timeout=30)
        wait_for(lambda: conn.execute(
            "SELECT count(*) >= 1 FROM mvgraph.schedule_slot ss JOIN mvgraph.job_data j "
            "ON j.id = ss.job_id WHERE ss.schedule_id = %s AND j.status = 'done'", [sid]
        ).fetchone() == (True,), timeout=30)
        stop(proc)
    rows = conn.execute("SELECT DISTINCT j.owner::text, j.login::text FROM mvgraph.job_data j "
                        "JOIN mvgraph.schedule_slot_data ss ON ss.job_id = j.id "
                        "WHERE ss.schedule_id = %s", [sid]).fetchall()
    assert rows == [(cast.alice, cast.alice)]
    failed = conn.execute("SELECT count(*) FROM mvgraph.job_data WHERE status = 'failed'"
                          ).fetchone()
    assert failed == (0,)
    with psycopg.connect(cast.mallory_dsn, autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM mvgraph.schedule_slot").fetchone() == (0,)
        assert c.execute("SELECT count(*) FROM scheduler.pg_task").fetchone() == (0,)
        assert c.execute("SELECT count(*) FROM mvgraph.jobs").fetchone() == (0,)


def test_early_cutoff_calls_nothing_the_view_owner_defined(conn: Conn, cast: Cast) -> None:
    """mallory owns a view whose row type has a cast to text of hers (it would try to make
    her superuser); an administrator refreshes it with early cutoff: her cast never runs."""
    import mvgraph

    m = cast.mallory
    with psycopg.connect(cast.mallory_dsn, autocommit=True) as c:
        c.execute(f"""
            CREATE SCHEMA {m}_c;
            CREATE TABLE {m}_c.src (v int); INSERT INTO {m}_c.src VALUES (1), (2);
            CREATE TABLE {m}_c.caught (who text);
            GRANT ALL ON {m}_c.caught TO PUBLIC;
            CREATE MATERIALIZED VIEW {m}_c.mv AS SELECT v FROM {m}_c.src;
            CREATE FUNCTION {m}_c.as_text({m}_c.mv) RETURNS text LANGUAGE plpgsql AS $f$
            BEGIN
                INSERT INTO {m}_c.caught VALUES (current_user);
                BEGIN EXECUTE 'ALTER ROLE {m} SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;
                RETURN 'x';
            END $f$;
            CREATE CAST ({m}_c.mv AS text) WITH FUNCTION {m}_c.as_text({m}_c.mv);
        """)
    mvgraph.configure(conn, f"{m}_c.mv", early_cutoff=True)
    mvgraph.refresh(conn, f"{m}_c.mv")
    report = mvgraph.refresh(conn, f"{m}_c.mv", "restrict")
    assert report.status.value == "ok"
    assert "early cutoff" in report.steps[0].reason  # the fingerprint was computed and compared
    conn.execute(f"UPDATE {m}_c.src SET v = v + 1")
    assert "early cutoff" not in mvgraph.refresh(conn, f"{m}_c.mv", "restrict").steps[0].reason
    assert conn.execute(f"SELECT count(*) FROM {m}_c.caught").fetchone() == (0,)
    assert_nothing_escaped(conn, cast)


def test_no_setting_makes_the_event_trigger_ignore_ddl(conn: Conn, cast: Cast) -> None:
    """mallory owns a plain view that an administrator's materialized view reads. Setting
    mvgraph.refreshing, or marking a refresh of her own view, hides none of her DDL: the
    administrator's view is refreshed, not skipped. She cannot mark his view at all."""
    import mvgraph

    m = cast.mallory
    with psycopg.connect(cast.mallory_dsn, autocommit=True) as c:
        c.execute(f"""
            CREATE SCHEMA {m}_v;
            CREATE TABLE {m}_v.t (v int); INSERT INTO {m}_v.t VALUES (1), (2);
            CREATE VIEW {m}_v.pv AS SELECT v FROM {m}_v.t;
            CREATE MATERIALIZED VIEW {m}_v.own AS SELECT 1 AS one;
            GRANT USAGE ON SCHEMA {m}_v TO PUBLIC; GRANT SELECT ON {m}_v.pv TO PUBLIC;
        """)
    conn.execute(f"CREATE MATERIALIZED VIEW total AS SELECT sum(v) AS s FROM {m}_v.pv")
    mvgraph.track(psycopg.connect(cast.mallory_dsn, autocommit=True), [f"{m}_v.t"])
    mvgraph.refresh(conn, "total")
    assert mvgraph.plan(conn, "total").steps[0].action.value == "skip"
    own = conn.execute(f"SELECT '{m}_v.own'::regclass::oid").fetchone()[0]  # type: ignore[index]
    total = conn.execute("SELECT 'total'::regclass::oid").fetchone()[0]  # type: ignore[index]
    with psycopg.connect(cast.mallory_dsn) as c:  # one transaction
        c.execute("SET LOCAL mvgraph.refreshing = on")
        c.execute("SELECT mvgraph.begin_own_refresh(%s)", [own])
        c.execute(f"CREATE OR REPLACE VIEW {m}_v.pv AS SELECT v * 1000 AS v FROM {m}_v.t")
        c.commit()
    step = mvgraph.plan(conn, "total").steps[0]
    assert step.action.value == "refresh" and "definition" in step.reason, step.reason
    with psycopg.connect(cast.mallory_dsn, autocommit=True) as c, \
            pytest.raises(psycopg.errors.InsufficientPrivilege):
        c.execute("SELECT mvgraph.begin_own_refresh(%s)", [total])
    mvgraph.refresh(conn, "total")
    assert conn.execute("SELECT s FROM total").fetchone() == (3000,)
    # a record of a refresh that did not run is refused
    with psycopg.connect(cast.mallory_dsn) as c:
        c.execute("SELECT mvgraph.begin_own_refresh(%s)", [own])
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("SELECT * FROM mvgraph.record_refresh(%s, 'x', pg_current_snapshot(), 0, "
                      "'{}', '{}', NULL, NULL, NULL, NULL, 'forged', false, now())", [own])
