"""Numbered SQL migrations for the ``mvgraph`` schema, recorded in ``mvgraph.schema_version``.

Only :func:`mvgraph.db.install.init` (``mvgraph init``) applies them outside the tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

import psycopg

from mvgraph.db.queries import query
from mvgraph.errors import translated

Conn = psycopg.Connection[tuple[object, ...]]
_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file: ``NNNN_name.sql``."""

    version: int
    name: str
    text: str


@cache
def migrations() -> tuple[Migration, ...]:
    """All migrations shipped in the package, in version order."""
    folder = resources.files("mvgraph.db").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        m = _FILE.match(entry.name)
        if m:
            found.append(Migration(int(m[1]), m[2], entry.read_text(encoding="utf-8")))
    return tuple(sorted(found, key=lambda x: x.version))


def latest_version() -> int:
    """The version a fully migrated schema has."""
    return migrations()[-1].version if migrations() else 0


def current_version(conn: Conn) -> int:
    """The version installed in the database (0 when mvgraph was never installed)."""
    with translated():
        row = conn.execute(query("schema_version_exists")).fetchone()
        if not row or not row[0]:
            return 0
        row = conn.execute(query("schema_version")).fetchone()
        return int(str(row[0])) if row else 0


def migrate(conn: Conn, target: int | None = None) -> list[Migration]:
    """Apply pending migrations up to ``target`` (default: all) in one transaction.

    Safe to call from several processes at once: an advisory lock serialises them.
    Returns the migrations applied.
    """
    goal = latest_version() if target is None else target
    if current_version(conn) >= goal:
        return []
    applied: list[Migration] = []
    with translated(), conn.transaction():
        conn.execute(query("migration_lock"))
        conn.execute(query("bootstrap"))
        have = current_version(conn)
        for m in migrations():
            if have < m.version <= goal:
                conn.execute(m.text.encode())
                conn.execute(query("record_migration"), {"version": m.version, "name": m.name})
                applied.append(m)
    return applied
