"""The status page's reads against the real server: the graph and freshness, jobs in flight
and their steps, failures, schedules and lag, daemons and workers, the read-only session, and
what a role that is no administrator sees (the page through its app: TestClient)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

import mvgraph
from mvgraph.db.connect import connect
from mvgraph.db.scripts import run_script
from mvgraph.errors import NotFound
from mvgraph.web.app import create_app
from mvgraph.web.data import Reader
from tests.integration.test_jobs import wait_for
from tests.integration.test_lag import worker

Conn = psycopg.Connection[tuple[object, ...]]
GAUSS = {"public.mv1", "public.mv5", "public.mv6"}  # the views reading test_table
ALL = GAUSS | {"public.mv2"}  # and mv2, over t2


@pytest.fixture
def reader(gauss_dsn: str) -> Iterator[Reader]:
    """The page's reader on the GaussDB example, tracked and refreshed once; no cache."""
    with connect(gauss_dsn) as c:
        mvgraph.track(c, every=True)
        mvgraph.refresh(c, "*")
    r = Reader(gauss_dsn, cache_s=0)
    try:
        yield r
    finally:
        r.close()


def states(state: dict[str, Any]) -> dict[str, str]:
    return {name: v["state"] for name, v in state["views"].items()}


def test_state_shows_the_graph_freshness_and_history(reader: Reader, conn: Conn) -> None:
    state = reader.state()
    assert state["error"] is None and state["role"] and state["database"] == conn.info.dbname
    drawn = {n["name"]: n for n in state["graph"]["nodes"]}
    assert set(drawn) == ALL | {"public.test_table", "public.t2"}
    assert drawn["public.test_table"]["layer"] == 0 and drawn["public.mv6"]["layer"] == 3
    assert states(state) == dict.fromkeys(ALL, "fresh")
    assert [j["statement"] for j in state["history"]] == ["mvgraph refresh '*'"]
    assert state["jobs"] == [] and state["schedules"] == [] and state["daemons"] == []

    conn.execute("INSERT INTO test_table (id, grp, val) VALUES (100, 1, 5)")
    state = reader.state()
    assert states(state) == {**dict.fromkeys(GAUSS, "stale"), "public.mv2": "fresh"}
    assert "input public.test_table changed" in state["views"]["public.mv1"]["reason"]
    assert state["views"]["public.mv6"]["reason"] == "stale (upstream public.mv5 is stale)"
    mvgraph.refresh(conn, "+mv6")
    after = reader.state()
    assert states(after) == dict.fromkeys(ALL, "fresh")
    assert len(after["history"]) == 2

    conn.execute("CREATE MATERIALIZED VIEW mv7 AS SELECT * FROM mv6")
    grown = reader.state()
    assert grown["graph_key"] != after["graph_key"]  # the catalog's fingerprint
    assert "public.mv7" in {n["name"] for n in grown["graph"]["nodes"]}
    assert grown["views"]["public.mv7"]["state"] == "stale"


def test_every_read_is_read_only(reader: Reader, conn: Conn) -> None:
    reader.state()
    with reader._read() as c:
        assert c.execute("SHOW transaction_read_only").fetchone() == ("on",)
        assert c.execute("SHOW transaction_isolation").fetchone() == ("repeatable read",)
        assert c.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            c.execute("INSERT INTO test_table (id, grp, val) VALUES (101, 1, 5)")
    row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                       "'mvgraph web' AND datname = current_database()").fetchone()
    assert row == (1,)  # one session, kept between reads
    assert reader.state()["error"] is None  # the failed statement was rolled back


def test_wal_mode_reads_without_writing(gauss_dsn: str, conn: Conn) -> None:
    """A plan in wal mode reads the replication slot (a write); the page does not, and
    says so."""
    mvgraph.track(conn, every=True, mode="wal")
    try:
        mvgraph.refresh(conn, "*")
        r = Reader(gauss_dsn, cache_s=0)
        state = r.state()
        r.close()
        assert state["error"] is None
        assert states(state) == dict.fromkeys(ALL, "fresh")
        assert any("wal-mode" in w for w in state["warnings"])
    finally:
        mvgraph.untrack(conn, every=True)


def test_a_running_step_a_worker_and_a_failed_step(reader: Reader, conn: Conn,
                                                   gauss_dsn: str) -> None:
    holder = connect(gauss_dsn, autocommit=False)
    try:
        # mv2's REFRESH waits for t2 (mv1, over test_table, goes first)
        holder.execute("LOCK TABLE t2 IN ACCESS EXCLUSIVE MODE")
        job = mvgraph.submit_refresh(gauss_dsn, "*", force=True, lock_timeout="60s")
        with worker(gauss_dsn):
            def refreshing() -> dict[str, Any] | None:
                s = reader.state()
                return s if s["views"]["public.mv2"]["state"] == "refreshing" else None
            state = wait_for(refreshing)
            assert isinstance(state, dict)
            [running] = state["jobs"]
            assert running["id"] == job and running["status"] == "running"
            steps = {st["step"]: st["status"] for st in running["steps"]}
            assert steps["public.mv2"] == "running" and set(steps) == ALL
            done = sum(1 for st in steps.values() if st == "done")
            assert (running["done_steps"], running["total_steps"]) == (done, 4)
            assert running["percent"] == round(100 * done / 4, 1)
            assert set(steps.values()) <= {"done", "running", "pending"}
            [seen] = [x for x in state["workers"] if x["jobs"]]
            assert seen["jobs"] == [job] and ":" in seen["name"] and seen["silent"] is False
            assert seen["heartbeat_age_s"] is not None and seen["pid"] > 0
            assert seen["lease_left_s"] is not None and seen["lease_until"]
            detail = reader.view("public.mv2")
            assert detail["definition"] is None
            assert "a REFRESH holds the view" in detail["definition_note"]
            assert detail["status"]["state"] == "refreshing"
            holder.rollback()
            wait_for(lambda: not reader.state()["jobs"])
        state = reader.state()
        assert states(state) == dict.fromkeys(ALL, "fresh")
        assert state["history"][0]["id"] == job and state["history"][0]["status"] == "done"
    finally:
        holder.close()

    run_script(conn, "CREATE TABLE d (x int); INSERT INTO d VALUES (1);"
                     "CREATE MATERIALIZED VIEW inverse AS SELECT 1 / x AS y FROM d;")
    mvgraph.track(conn, ["d"])
    mvgraph.refresh(conn, "inverse")
    conn.execute("UPDATE d SET x = 0")
    report = mvgraph.refresh(conn, "inverse")
    assert report.status != "ok"
    entry = reader.state()["views"]["public.inverse"]
    assert entry["state"] == "failed"
    assert "division by zero" in entry["step"]["error"]
    assert reader.state()["history"][0]["status"] == "failed"


def test_schedules_lag_and_daemons(reader: Reader, conn: Conn, gauss_dsn: str) -> None:
    mvgraph.add_schedule("mv6", every="1 hour", dsn=gauss_dsn)
    mvgraph.add_schedule("mv5", target_lag="1 second", dsn=gauss_dsn)
    mvgraph.pause_schedule("mv6", dsn=gauss_dsn)
    conn.execute("SELECT mvgraph.daemon_register('host:1', 'host', 1, 2, '0.0')")
    conn.execute("SELECT mvgraph.daemon_register('host:2', 'host', 2, 0, '0.0')")
    conn.execute("UPDATE mvgraph.daemon SET heartbeat_at = now() - interval '5 minutes' "
                 "WHERE name = 'host:2'")
    state = reader.state()
    by_view = {s["view"]: s for s in state["schedules"]}
    assert set(by_view) == {"public.mv5", "public.mv6"}
    assert by_view["public.mv6"]["enabled"] is False and by_view["public.mv6"]["every"]
    assert by_view["public.mv5"]["target_lag_seconds"] == 1.0
    assert state["views"]["public.mv5"]["target_lag_s"] == 1.0
    daemons = {d["name"]: d for d in state["daemons"]}
    assert daemons["host:1"]["silent"] is False and daemons["host:1"]["workers"] == 2
    assert daemons["host:2"]["silent"] is True and daemons["host:2"]["heartbeat_age_s"] >= 299

    conn.execute("INSERT INTO test_table (id, grp, val) VALUES (100, 1, 5)")
    late = wait_for(lambda: reader.state()["views"]["public.mv5"]["late"])
    assert late is True
    entry = reader.state()["views"]["public.mv5"]
    assert entry["lag_s"] > entry["target_lag_s"] and entry["state"] == "stale"
    detail = reader.view("mv6")
    assert [s["view"] for s in detail["schedules"]] == ["public.mv6"]


def test_view_and_job_details(reader: Reader, conn: Conn) -> None:
    detail = reader.view("public.mv5")
    assert detail["kind"] == "matview"
    assert [i["name"] for i in detail["inputs"]] == ["public.mv1", "public.test_table"]
    assert [d["name"] for d in detail["dependents"]] == ["public.mv6"]
    assert "FROM mv1" in detail["definition"] and detail["definition_note"] is None
    assert detail["status"]["state"] == "fresh"
    [run] = detail["runs"]
    assert run["status"] == "done" and run["reason"] == "never refreshed by mvgraph"
    table = reader.view("test_table")
    assert table["kind"] == "table" and table["definition"] is None and "runs" not in table
    with pytest.raises(NotFound):
        reader.view("public.nope")
    job = reader.job(run["job"])
    assert job["status"] == "done" and sorted(s["step"] for s in job["steps"]) == sorted(ALL)
    with pytest.raises(NotFound):
        reader.job(run["job"] + 1000)


@pytest.fixture
def roles(conn: Conn, db_dsn: str) -> Iterator[dict[str, str]]:
    """alice and bob (operators, alice owning a view), vera (a viewer), nemo (no level)."""
    suffix = conn.info.dbname
    names = {r: f"{r}_{suffix}" for r in ("alice", "bob", "vera", "nemo")}
    run_script(conn, f"""
        CREATE TABLE t (x int); INSERT INTO t VALUES (1);
        CREATE MATERIALIZED VIEW shared_mv AS SELECT x FROM t;
        CREATE MATERIALIZED VIEW alice_mv AS SELECT x FROM t;
        CREATE ROLE {names['alice']} LOGIN; CREATE ROLE {names['bob']} LOGIN;
        CREATE ROLE {names['vera']} LOGIN; CREATE ROLE {names['nemo']} LOGIN;
        ALTER MATERIALIZED VIEW alice_mv OWNER TO {names['alice']};
        GRANT SELECT ON t TO {names['alice']};
        SELECT mvgraph.grant_privileges('{names['alice']}', 'operator');
        SELECT mvgraph.grant_privileges('{names['bob']}', 'operator');
        SELECT mvgraph.grant_privileges('{names['vera']}', 'viewer');
    """)
    mvgraph.track(conn, ["t"])
    mvgraph.refresh(conn, "*")
    dsns = {r: psycopg.conninfo.make_conninfo(db_dsn, user=n) for r, n in names.items()}
    try:
        yield dsns
    finally:
        run_script(conn, "DELETE FROM mvgraph.job; DELETE FROM mvgraph.schedule;")
        for name in names.values():
            run_script(conn, f"DROP OWNED BY {name} CASCADE; DROP ROLE {name};")


def test_each_role_sees_its_own(roles: dict[str, str], db_dsn: str) -> None:
    alice_job = mvgraph.submit(dsn=roles["alice"], statement="SELECT 1").id
    bob_job = mvgraph.submit(dsn=roles["bob"], statement="SELECT 2").id
    mvgraph.add_schedule("alice_mv", every="1 hour", dsn=roles["alice"])

    def seen(dsn: str) -> dict[str, Any]:
        r = Reader(dsn, cache_s=0)
        try:
            return r.state()
        finally:
            r.close()

    admin, alice, bob, vera = (seen(d) for d in (db_dsn, roles["alice"], roles["bob"],
                                                   roles["vera"]))
    assert [j["id"] for j in admin["jobs"]] == [alice_job, bob_job]
    assert [j["id"] for j in alice["jobs"]] == [alice_job]
    assert [j["id"] for j in bob["jobs"]] == [bob_job]
    assert vera["jobs"] == [] and vera["history"] == []  # the admin's refresh is not hers
    assert [s["view"] for s in admin["schedules"]] == ["public.alice_mv"]
    assert [s["view"] for s in alice["schedules"]] == ["public.alice_mv"]
    assert bob["schedules"] == [] and vera["schedules"] == []
    for state in (alice, bob, vera):  # freshness is for every level
        assert state["error"] is None
        assert states(state) == {"public.shared_mv": "fresh", "public.alice_mv": "fresh"}, \
            state["views"]
    nemo = seen(roles["nemo"])
    assert "cannot read mvgraph.schema_version" in nemo["error"] and "views" not in nemo

    r = Reader(roles["vera"], cache_s=0)
    try:
        c = TestClient(create_app(r))
        page = c.get("/")
        assert page.status_code == 200 and "as vera_" in page.text
        assert c.get("/api/state").json()["jobs"] == []
        assert c.get(f"/api/job/{alice_job}").status_code == 404
        assert c.get("/api/view", params={"name": "alice_mv"}).json()["runs"] == []
    finally:
        r.close()


def test_a_lost_session_is_a_banner_then_comes_back(reader: Reader, conn: Conn) -> None:
    assert reader.state()["error"] is None
    conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                 "WHERE application_name = 'mvgraph web' AND datname = current_database()")
    broken = reader.state()
    assert broken["error"] and "\n" not in broken["error"]
    assert reader.state()["error"] is None  # a new session
    down = Reader("postgresql://someone:hunter2@127.0.0.1:1/nowhere", cache_s=0)
    error = down.state()["error"]
    assert error.startswith("cannot connect") and "hunter2" not in error
    client = TestClient(create_app(down))
    page = client.get("/")
    assert page.status_code == 200 and "cannot connect" in page.text
    assert "Traceback" not in page.text and "hunter2" not in page.text
