"""Parallel runs against a server with few connection slots (a cluster of its own)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import psycopg
import pytest

import mvgraph
from mvgraph.cli import run
from mvgraph.db.connect import connect
from mvgraph.db.install import init
from mvgraph.db.scripts import run_script
from tests.pgserver import bindir, cluster_from_bindir

MAX_CONNECTIONS = 12
RESERVED = 3  # superuser_reserved_connections, the default
KEEP_FREE = 2  # what mvgraph leaves to others on a server this small
VIEWS = 20


@pytest.fixture(scope="module")
def small_server() -> Iterator[str]:
    """A second server with max_connections = 12, holding 20 slow independent views."""
    with cluster_from_bindir(bindir(), max_connections=MAX_CONNECTIONS) as dsn:
        with connect(dsn) as conn:
            init(conn)
            run_script(conn, "CREATE TABLE t (id int PRIMARY KEY);"
                       "INSERT INTO t SELECT generate_series(1, 10);" + "".join(
                           f"CREATE MATERIALIZED VIEW m{i} AS SELECT id, pg_sleep(0.02)::text "
                           f"AS nap FROM t WHERE id % {i} = 0;" for i in range(1, VIEWS + 1)))
            mvgraph.track(conn, every=True)
        yield dsn


class Watcher(threading.Thread):
    """Opens a fresh connection every few milliseconds (another client) and counts mvgraph's."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn, self.stop, self.most, self.failures = dsn, threading.Event(), 0, []

    def run(self) -> None:
        while not self.stop.wait(0.01):
            try:
                with psycopg.connect(self.dsn, autocommit=True) as c:
                    row = c.execute("SELECT count(*) FROM pg_stat_activity "
                                    "WHERE application_name LIKE 'mvgraph%'").fetchone()
                    self.most = max(self.most, int(row[0]) if row else 0)
            except psycopg.Error as exc:
                self.failures.append(str(exc))


def test_parallel_stays_within_the_free_slots(small_server: str,
                                              caplog: pytest.LogCaptureFixture) -> None:
    watcher = Watcher(small_server)
    watcher.start()
    with caplog.at_level(logging.WARNING, logger="mvgraph"):
        code = run(["refresh", "*", "-j", "40", "--force", "--json", "--dsn", small_server])
    watcher.stop.set()
    watcher.join()
    assert code == 0
    assert watcher.failures == []  # another client could connect throughout
    assert 1 < watcher.most <= MAX_CONNECTIONS - RESERVED - KEEP_FREE
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "room for" in warnings[0], warnings


def test_parallel_is_capped_by_the_steps_that_can_run_at_once(
        small_server: str, caplog: pytest.LogCaptureFixture) -> None:
    """A chain cannot run side by side: -j 40 on it opens no connection besides the run's."""
    with connect(small_server) as conn:
        conn.execute("CREATE MATERIALIZED VIEW c1 AS SELECT count(*) AS n FROM m1")
        conn.execute("CREATE MATERIALIZED VIEW c2 AS SELECT n + 1 AS n FROM c1")
    watcher = Watcher(small_server)
    watcher.start()
    with caplog.at_level(logging.WARNING, logger="mvgraph"):
        report = mvgraph.refresh(small_server, "c2", "cascade backward", parallel=40,
                                 force=True)
    watcher.stop.set()
    watcher.join()
    assert report.status == "ok" and len(report.refreshed) == 3
    assert watcher.most == 1
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_refused_connections_mean_fewer_workers_not_a_failed_run(
        small_server: str, caplog: pytest.LogCaptureFixture) -> None:
    """Other clients take every slot while the first step runs: the run goes on, one view at a
    time, on the connection it has."""
    with connect(small_server) as conn:
        run_script(conn, "CREATE MATERIALIZED VIEW r AS SELECT id FROM t;" + "".join(
            f"CREATE MATERIALIZED VIEW f{i} AS SELECT count(*) AS n FROM r;"
            for i in range(3)))
    hogs: list[psycopg.Connection[tuple[object, ...]]] = []

    def take_every_slot(event: object) -> None:
        while isinstance(event, mvgraph.StepStarted) and str(event.name) == "public.r":
            try:
                hogs.append(psycopg.connect(small_server, autocommit=True))
            except psycopg.OperationalError:
                return

    try:
        with caplog.at_level(logging.WARNING, logger="mvgraph"):
            report = mvgraph.refresh(small_server, "r+", parallel=3, force=True,
                                     listener=take_every_slot)
    finally:
        for c in hogs:
            c.close()
    assert len(hogs) > 5  # the slots really were taken
    assert report.status == "ok" and len(report.refreshed) == 4
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot open another connection" in warnings[0], warnings
