"""Shared fixtures: one PostgreSQL server per session, one fresh database per test."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # fixtures/ is importable as a package

from mvgraph.db.connect import connect  # noqa: E402
from mvgraph.db.install import init  # noqa: E402
from mvgraph.db.scripts import drop_database, recreate_database, with_dbname  # noqa: E402
from tests.pgserver import test_server  # noqa: E402

FIXTURES = ROOT / "mvgraph" / "examples"  # the example schemas (package data; the demo loads them)
TEMPLATE = "mvgraph_test_template"
_PRIVATE_BASE: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    """Each run gets its own base temporary directory.

    pytest's shared ``/tmp/pytest-of-USER`` is reset to mode 0700 by every run that starts, and
    the embedded server (its own system user when tests run as root) must traverse the path to
    its data directory: a second test run on the machine would cut a running server off.
    """
    if not config.option.basetemp:
        base = tempfile.mkdtemp(prefix="mvgraph-tests-")
        _PRIVATE_BASE.append(base)
        config.option.basetemp = base


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the private base directory made by ``pytest_configure``."""
    for base in _PRIVATE_BASE:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def server_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """DSN of the session's server (its maintenance database)."""
    os.environ.setdefault("MVGRAPH_CACHE_DIR", str(tmp_path_factory.mktemp("parse-cache")))
    with test_server() as dsn:
        # the throwaway server of the server parse (mvgraph.sql.serverparse): scratch databases and
        # roles on the session's server instead of an embedded server of their own
        os.environ.setdefault("MVGRAPH_PARSE_SERVER", dsn)
        with connect(dsn) as admin:
            recreate_database(admin, TEMPLATE)
        with connect(with_dbname(dsn, TEMPLATE)) as conn:
            init(conn)  # the schema and, as a superuser, the event triggers
        yield dsn
        with connect(dsn) as admin:
            drop_database(admin, TEMPLATE)


@pytest.fixture
def db_dsn(server_dsn: str) -> Iterator[str]:
    """A fresh database, copied from the migrated template, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with connect(server_dsn) as admin:
        recreate_database(admin, name, template=TEMPLATE)
    try:
        yield with_dbname(server_dsn, name)
    finally:
        with connect(server_dsn) as admin:
            drop_database(admin, name)


@pytest.fixture
def conn(db_dsn: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """An autocommit connection to the test's database."""
    with connect(db_dsn) as c:
        yield c


@pytest.fixture
def empty_db_dsn(server_dsn: str) -> Iterator[str]:
    """A fresh database without the mvgraph schema."""
    name = f"e_{uuid.uuid4().hex[:12]}"
    with connect(server_dsn) as admin:
        recreate_database(admin, name)
    try:
        yield with_dbname(server_dsn, name)
    finally:
        with connect(server_dsn) as admin:
            drop_database(admin, name)


@pytest.fixture
def gauss_dsn(db_dsn: str) -> str:
    """A fresh database holding the GaussDB nested example (mv1, mv5, mv6 over test_table)."""
    from mvgraph.db.scripts import run_files

    with connect(db_dsn) as c:
        run_files(c, [FIXTURES / "gaussdb_nested" / "schema.sql"])
    return db_dsn


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    from mvgraph.cli import run

    code = run(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err
