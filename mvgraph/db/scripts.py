"""Running SQL scripts and managing throwaway databases (demo, tests)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from mvgraph.db.queries import query
from mvgraph.errors import DatabaseError, translated


def run_script(conn: psycopg.Connection[tuple[object, ...]], text: str,
               source: str = "<sql>") -> None:
    """Run a multi-statement script as one simple query (like ``psql -1``-less ``-f``)."""
    try:
        with translated():
            conn.execute(text.encode())
    except DatabaseError as exc:
        raise DatabaseError(f"{source}: {exc}", exc.sqlstate) from exc


def run_files(conn: psycopg.Connection[tuple[object, ...]], paths: Iterable[Path]) -> int:
    """Run each SQL file in order; returns how many were run."""
    count = 0
    for path in paths:
        run_script(conn, path.read_text(encoding="utf-8"), str(path))
        count += 1
    return count


def with_dbname(dsn: str, dbname: str) -> str:
    """The same server, another database."""
    params = conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return make_conninfo(**{k: str(v) for k, v in params.items()})


def recreate_database(admin: psycopg.Connection[tuple[object, ...]], name: str,
                      template: str | None = None) -> None:
    """Drop (forcibly) and create a database, optionally copied from a template."""
    with translated():
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))
        if template:
            admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)))
        else:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def create_database(admin: psycopg.Connection[tuple[object, ...]], name: str) -> None:
    """Create an empty database."""
    with translated():
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(admin: psycopg.Connection[tuple[object, ...]], name: str) -> None:
    """Drop a database, disconnecting its sessions and dropping its replication slots (a
    slot, such as tracking mode wal's, would keep the database from being dropped)."""
    with translated():
        admin.execute(query("drop_database_slots"), {"name": name})
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))
