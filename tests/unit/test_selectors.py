"""Selectors over names that need double quotes: every name refresh accepts can be selected."""

from __future__ import annotations

import pytest

from mvgraph import Definition, Kind, MVGraph, RelationName
from mvgraph.errors import SelectorError

R = RelationName
ODD = ['x; DROP TABLE t; --', 'Sales Q1+', 'a b', 'a,b', 'at@home', 'star*', 'q"uote']


@pytest.fixture
def odd() -> MVGraph:
    """t -> each odd view -> "My Schema"."x+y" (which reads every odd view)."""
    defs = [Definition(R("public", "t"), Kind.TABLE)]
    defs += [Definition(R("public", n), Kind.MATVIEW, frozenset({R("public", "t")})) for n in ODD]
    defs.append(Definition(R("My Schema", "x+y"), Kind.MATVIEW,
                           frozenset(R("public", n) for n in ODD)))
    return MVGraph.from_definitions(defs)


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@pytest.mark.parametrize("name", ODD)
def test_each_quoted_name_selects_exactly_that_view(odd: MVGraph, name: str) -> None:
    assert odd.select(quoted(name)) == [R("public", name)]
    assert odd.select(f"public.{quoted(name)}") == [R("public", name)]


@pytest.mark.parametrize("name", ODD)
def test_operators_work_around_quoted_names(odd: MVGraph, name: str) -> None:
    node = R("public", name)
    top = R("My Schema", "x+y")
    assert odd.select(f"+{quoted(name)}+") == [R("public", "t"), node, top]
    assert odd.select(f"1+{quoted(name)}") == [R("public", "t"), node]
    assert odd.select(f"{quoted(name)}+1") == [node, top]
    assert set(odd.select(f"@{quoted(name)}")) == set(odd.g.nodes)


def test_schema_qualified_quoted_names_unions_and_intersections(odd: MVGraph) -> None:
    top = R("My Schema", "x+y")
    assert odd.select('"My Schema"."x+y"') == [top]
    assert set(odd.select('1+"My Schema"."x+y"')) == {R("public", n) for n in ODD} | {top}
    assert odd.select('"a b" "a,b"') == [R("public", "a b"), R("public", "a,b")]
    assert odd.select('+"a,b"+,"Sales Q1+"+') == [top]


def test_quoted_glob_characters_are_literal_but_unquoted_ones_glob(odd: MVGraph) -> None:
    assert odd.select('"star*"') == [R("public", "star*")]
    assert odd.select('"My Schema".*') == [R("My Schema", "x+y")]
    assert R("public", "star*") in odd.select("public.s*")


@pytest.mark.parametrize("expr", ['"a b', '+"a b"++', '"a b"x+y+', '@2+"a b"'])
def test_malformed_quoted_selectors_are_selector_errors(odd: MVGraph, expr: str) -> None:
    with pytest.raises(SelectorError):
        odd.select(expr)
