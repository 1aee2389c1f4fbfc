"""Unit tests for the synthetic view-DAG generator in fixtures/synthetic.py (no database)."""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from fixtures.synthetic import ROWS_PER_TABLE, SyntheticSchema, generate  # noqa: E402

# Relation references in generated SQL: schema-qualified, schema maybe quoted.
_REF = re.compile(r'(?:FROM|JOIN)\s+((?:"[^"]+"|[a-z_][a-z0-9_]*)\.[a-z_][a-z0-9_]*)')
_CREATE = re.compile(
    r'^CREATE (MATERIALIZED VIEW|VIEW) ((?:"[^"]+"|[a-z_][a-z0-9_]*)\.[a-z0-9_]+) AS (.*);$'
)

PARAMS = [
    # n_views, depth, fan_in, n_tables, seed
    (200, 8, 3, None, 0),
    (1000, 8, 3, None, 1),
    (500, 12, 5, 7, 2),
    (64, 1, 4, None, 3),
    (30, 5, 1, 3, 4),
    (300, 20, 2, 1, 5),
]


def _check_dag(s: SyntheticSchema, depth: int, fan_in: int) -> None:
    """Shared structural assertions on a generated schema."""
    defined: set[str] = set(s.tables)
    assert len(defined) == len(s.tables), "table names must be unique"
    for name, reads in s.views:
        assert name not in defined, f"{name} defined twice"
        assert 1 <= len(reads) <= fan_in
        assert len(set(reads)) == len(reads), f"{name} reads a relation twice"
        for r in reads:
            assert r in defined, f"{name} reads {r}, which is not created before it"
        defined.add(name)

    levels = s.levels()
    n_layers = min(depth, len(s.views))
    assert max((levels[v] for v, _ in s.views), default=0) == n_layers
    layers = s.layers()
    assert layers[0] == s.tables
    assert len(layers) == n_layers + 1
    sizes = [len(layer) for layer in layers[1:]]
    assert sum(sizes) == len(s.views)
    if sizes:
        assert max(sizes) - min(sizes) <= 1, f"layers unbalanced: {sizes}"
    # Every view reads at least one relation of the layer directly below its own.
    for name, reads in s.views:
        assert any(levels[r] == levels[name] - 1 for r in reads)
    # Views are created layer by layer.
    view_levels = [levels[v] for v, _ in s.views]
    assert view_levels == sorted(view_levels)


@pytest.mark.parametrize(("n_views", "depth", "fan_in", "n_tables", "seed"), PARAMS)
def test_structure(n_views: int, depth: int, fan_in: int, n_tables: int | None, seed: int) -> None:
    s = generate(n_views, depth=depth, fan_in=fan_in, n_tables=n_tables, seed=seed)
    assert len(s.views) == n_views
    assert len(s.tables) == (n_tables if n_tables is not None else max(2, n_views // 10))
    _check_dag(s, depth, fan_in)


def test_deterministic_for_a_seed() -> None:
    a = generate(2_000, depth=9, fan_in=4, seed=42)
    b = generate(2_000, depth=9, fan_in=4, seed=42)
    assert a == b
    assert a.sql(view_every=3) == b.sql(view_every=3)
    assert generate(2_000, depth=9, fan_in=4, seed=43) != a


def test_fan_in_range_is_used() -> None:
    s = generate(2_000, fan_in=4, seed=9)
    counts = Counter(len(reads) for _, reads in s.views)
    assert set(counts) == {1, 2, 3, 4}


def test_fan_in_capped_by_available_relations() -> None:
    s = generate(5, depth=5, fan_in=10, n_tables=1, seed=0)
    _check_dag(s, 5, 10)
    assert s.views[0][1] == ["public.t0"]  # only one relation exists below the first view


def test_fewer_views_than_depth() -> None:
    s = generate(3, depth=8)
    _check_dag(s, 8, 3)
    assert len(s.layers()) == 4  # tables + one view per layer


def test_zero_views() -> None:
    s = generate(0)
    assert s.views == []
    assert s.layers() == [s.tables]
    assert "CREATE TABLE" in s.sql()


@pytest.mark.parametrize(
    "kwargs",
    [{"depth": 0}, {"fan_in": 0}, {"n_tables": 0}],
)
def test_invalid_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        generate(10, **kwargs)
    with pytest.raises(ValueError):
        generate(-1)


def test_names_and_quoted_schema() -> None:
    s = generate(20, schema="Big Schema", seed=1)
    assert s.tables[0] == '"Big Schema".t0'
    assert s.views[0][0] == '"Big Schema".v0'
    script = s.sql()
    assert script.startswith('CREATE SCHEMA IF NOT EXISTS "Big Schema";')
    plain = generate(20, schema="marts")
    assert plain.views[-1][0] == "marts.v19"
    assert "CREATE SCHEMA IF NOT EXISTS marts;" in plain.sql()
    assert "CREATE SCHEMA" not in generate(20).sql()


def _statements(script: str) -> list[tuple[str, str, list[str]]]:
    """(kind, name, relations referenced) for every CREATE [MATERIALIZED] VIEW line."""
    out = []
    for line in script.splitlines():
        m = _CREATE.match(line)
        if m:
            out.append((m.group(1), m.group(2), _REF.findall(m.group(3))))
    return out


@pytest.mark.parametrize("schema", ["public", "Big Schema"])
def test_sql_matches_declared_edges(schema: str) -> None:
    s = generate(300, fan_in=4, seed=5, schema=schema)
    stmts = _statements(s.sql(view_every=5))
    assert [name for _, name, _ in stmts] == [v for v, _ in s.views]
    for (_, _, refs), (_, reads) in zip(stmts, s.views, strict=True):
        assert refs == reads


def test_sql_kinds_and_options() -> None:
    s = generate(200, seed=2)
    script = s.sql(view_every=5)
    assert script.count("CREATE TABLE ") == len(s.tables)
    assert script.count("INSERT INTO ") == len(s.tables)
    assert script.count("CREATE MATERIALIZED VIEW ") == 160
    assert script.count("CREATE VIEW ") == 40
    assert len(s.plain_views(5)) == 40
    assert len(s.materialized_views(5)) == 160
    assert s.plain_views(5)[0] == "public.v4"  # every 5th view, 1-based
    kinds = {name: kind for kind, name, _ in _statements(script)}
    assert all(kinds[v] == "VIEW" for v in s.plain_views(5))
    assert all(kinds[v] == "MATERIALIZED VIEW" for v in s.materialized_views(5))
    assert script.count("WITH DATA;") == 160
    assert "WITH NO DATA" not in script
    assert "CREATE UNIQUE INDEX" not in script

    assert s.sql().count("CREATE VIEW ") == 0
    no_data = s.sql(with_data=False, view_every=5)
    assert no_data.count("WITH NO DATA;") == 160
    indexed = s.sql(unique_indexes=True, view_every=5)
    assert indexed.count("CREATE UNIQUE INDEX ON ") == 160
    assert f"VALUES (1, 13), (2, 26), ({ROWS_PER_TABLE}, 39);" in script


def test_queries_use_id_and_v_columns_only() -> None:
    s = generate(500, fan_in=5, seed=11)
    styles: Counter[str] = Counter()
    for line in s.sql().splitlines():
        if "MATERIALIZED VIEW" not in line:
            continue
        assert line.split(" AS ", 1)[1].startswith("SELECT id, ")
        styles["union" if "UNION ALL" in line else "join" if " JOIN " in line else "single"] += 1
    assert set(styles) == {"union", "join", "single"}


def test_sql_files_split_in_dependency_order(tmp_path: Path) -> None:
    s = generate(1_050, seed=3)
    paths = s.sql_files(tmp_path / "out", per_file=500, view_every=4)
    assert [p.name for p in paths] == [
        "000_tables.sql",
        "001_views.sql",
        "002_views.sql",
        "003_views.sql",
    ]
    assert paths == sorted(paths)
    texts = [p.read_text(encoding="utf-8") for p in paths]
    assert "".join(texts) == s.sql(view_every=4)
    assert texts[0].count("CREATE TABLE") == len(s.tables)
    assert [len(_statements(t)) for t in texts] == [0, 500, 500, 50]
    # Nothing in a file reads a relation created in a later file.
    defined = set(s.tables)
    for text in texts[1:]:
        for _, name, refs in _statements(text):
            assert set(refs) <= defined
            defined.add(name)
    with pytest.raises(ValueError):
        s.sql_files(tmp_path, per_file=0)
