"""Named SQL queries, loaded from ``queries.sql`` (blocks headed by ``-- name: NAME``)."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import LiteralString

_HEADER = re.compile(r"^-- name: *(\S+) *$", re.MULTILINE)


@cache
def _load(package: str = "mvgraph.db") -> dict[str, str]:
    text = resources.files(package).joinpath("queries.sql").read_text(encoding="utf-8")
    parts = _HEADER.split(text)
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts), 2)}


def query(name: str, package: str = "mvgraph.db") -> LiteralString:
    """The text of one named query of ``package``'s ``queries.sql``.

    >>> "pg_class" in query("relations")
    True
    """
    return _load(package)[name]


def names(package: str = "mvgraph.db") -> list[str]:
    """All query names of ``package`` (for tests)."""
    return sorted(_load(package))
