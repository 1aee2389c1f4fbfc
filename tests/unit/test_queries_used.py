"""Every named query in a package's ``queries.sql`` is run by some code: SQL nobody calls is
not kept (it drifts from the schema unseen)."""

from __future__ import annotations

import re
from pathlib import Path

import mvgraph
from mvgraph.db.queries import names, query

PACKAGES = ("mvgraph.db", "mvgraph.rebuild", "mvgraph.web")
ROOT = Path(mvgraph.__file__).parent


def _sources() -> str:
    return "\n".join(p.read_text() for p in ROOT.rglob("*.py"))


def test_every_named_query_is_used() -> None:
    code = _sources()
    # names built at run time: f"prefix_{...}" counts for every query with that prefix
    prefixes = re.findall(r'query\(f"([a-z_]+)\{', code)
    unused = [f"{package}:{name}" for package in PACKAGES for name in names(package)
              if f'"{name}"' not in code and f"'{name}'" not in code
              and not any(name.startswith(p) for p in prefixes)]
    assert not unused, f"queries nothing runs: {unused}"


def test_the_check_sees_a_query_in_use() -> None:
    assert "relations" in names() and '"relations"' in _sources()
    assert query("relations")
