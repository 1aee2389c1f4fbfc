"""``mvgraph rebuild``: in the foreground (steps printed, exit codes), in the background (the
job id), progress and cleanup; bad input is one line and a documented exit code."""

from __future__ import annotations

import json

import pytest

from mvgraph.db.connect import connect
from tests.conftest import cli


@pytest.fixture
def shop(db_dsn: str) -> str:
    with connect(db_dsn) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, qty int NOT NULL)")
        conn.execute("INSERT INTO orders SELECT g, g % 5 FROM generate_series(1, 500) g")
        conn.execute("CREATE MATERIALIZED VIEW per_qty AS SELECT qty, count(*) AS n "
                     "FROM orders GROUP BY qty")
        conn.execute("CREATE VIEW top_qty AS SELECT * FROM per_qty WHERE n > 1")
    return db_dsn


def test_rebuild_in_the_foreground_prints_its_steps(capsys: pytest.CaptureFixture[str],
                                                    shop: str) -> None:
    code, out, err = cli(capsys, "rebuild", "orders", "--action", "ALTER COLUMN qty TYPE bigint",
                         "--dsn", shop)
    assert code == 0, err
    for step in ("prepare", "create_tmp_table", "insert", "set_readonly", "swap", "cleanup"):
        assert step in out
    assert "done" in out.splitlines()[-1]
    with connect(shop) as conn:
        assert conn.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE "
                            "attrelid = 'top_qty'::regclass AND attname = 'qty'").fetchone() \
            == ("bigint",)


def test_rebuild_json_and_a_new_query(capsys: pytest.CaptureFixture[str], shop: str) -> None:
    code, out, err = cli(capsys, "rebuild", "per_qty", "--sql",
                         "SELECT qty, count(*) + 100 AS n FROM orders GROUP BY qty",
                         "--json", "--dsn", shop)
    assert code == 0, err
    found = json.loads(out)
    assert found["status"] == "ok"
    assert [s["step"] for s in found["steps"]] == ["prepare", "create_tmp_table", "insert",
                                                  "swap", "cleanup"]
    with connect(shop) as conn:
        assert conn.execute("SELECT min(n) FROM top_qty").fetchone() == (200,)


def test_background_progress_and_cleanup(capsys: pytest.CaptureFixture[str], shop: str) -> None:
    code, out, err = cli(capsys, "rebuild", "orders", "--action", "ADD COLUMN note text "
                         "DEFAULT md5(random()::text)", "--background", "--dsn", shop)
    assert code == 0, err
    job = int(out.strip())
    code, out, err = cli(capsys, "rebuild", "progress", str(job), "--json", "--dsn", shop)
    assert code == 0, err
    assert [row["step"] for row in json.loads(out)][:2] == ["prepare", "create_tmp_table"]
    code, out, err = cli(capsys, "suspend", str(job), "--dsn", shop)
    assert code == 0, err
    code, out, err = cli(capsys, "rebuild", "cleanup", str(job), "--dsn", shop)
    assert code == 0, err
    assert f"rebuild {job}: dropped 0 object(s)" in out
    with connect(shop) as conn:
        assert conn.execute("SELECT status FROM mvgraph.job WHERE id = %s", (job,)
                            ).fetchone() == ("cancelled",)


@pytest.mark.parametrize(("args", "code", "message"), [
    (["rebuild", "orders"], 2, "rebuild needs --action"),
    (["rebuild", "orders", "--action", "FROB x"], 2, "unknown action 'FROB x'"),
    (["rebuild", "orders", "--action", "ADD COLUMN x int", "--sql", "SELECT 1"], 2,
     "not both"),
])
def test_bad_input_is_one_line(capsys: pytest.CaptureFixture[str], shop: str,
                               args: list[str], code: int, message: str) -> None:
    got, out, err = cli(capsys, *args, "--dsn", shop)
    assert (got, out) == (code, "")
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_failed_rebuild_exits_1_and_says_why(capsys: pytest.CaptureFixture[str],
                                               shop: str) -> None:
    code, out, err = cli(capsys, "rebuild", "orders", "--action", "ALTER PRIMARY KEY (qty)",
                         "--dsn", shop)
    assert code == 1
    assert "error" in out.splitlines()[1] or "error" in out  # the step's row
    assert len(err.strip().splitlines()) == 1
    assert "could not create unique index" in err and "Key (qty)" in err


def test_the_library_runs_here_queues_and_raises(shop: str) -> None:
    import mvgraph

    job = mvgraph.rebuild_relation(shop, "orders", actions=["ALTER COLUMN qty TYPE bigint"])
    assert job.status() is mvgraph.JobStatus.DONE
    queued = mvgraph.rebuild_relation(shop, "per_qty", background=True,
                                      query="SELECT qty, count(*) AS n FROM orders GROUP BY qty")
    assert queued.status() is mvgraph.JobStatus.QUEUED
    mvgraph.cancel_job(queued, dsn=shop)
    with pytest.raises(mvgraph.RebuildFailed, match=r"could not create unique index.*Key \(qty\)"):
        mvgraph.rebuild_relation(shop, "orders", actions="ALTER PRIMARY KEY (qty)")
    with pytest.raises(mvgraph.UsageError, match="not both"):
        mvgraph.rebuild_relation(shop, "orders", actions="ADD COLUMN x int", query="SELECT 1")
