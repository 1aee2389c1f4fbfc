"""Named SQL queries, loaded from ``queries.sql`` (blocks headed by ``-- name: NAME``)."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import LiteralString

_HEADER = re.compile(r"^-- name: *(\S+) *$", re.MULTILINE)


@cache
def _load() -> dict[str, str]:
    text = resources.files("mvgraph.db").joinpath("queries.sql").read_text(encoding="utf-8")
    parts = _HEADER.split(text)
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts), 2)}


def query(name: str) -> LiteralString:
    """The text of one named query.

    >>> "pg_class" in query("relations")
    True
    """
    return _load()[name]


def names() -> list[str]:
    """All query names (for tests)."""
    return sorted(_load())
