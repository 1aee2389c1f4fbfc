"""MVGraph: construction, traversal, ordering, layers, selectors and export (no database)."""

from __future__ import annotations

import json

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mvgraph import CycleError, Definition, Kind, MVGraph, RelationName, UndefinedReference
from mvgraph.errors import SelectorError, UnknownRelation
from mvgraph.graph import diff

R = RelationName


def mv(name: str, *reads: str, kind: Kind = Kind.MATVIEW) -> Definition:
    return Definition(R.parse(name), kind, frozenset(R.parse(r) for r in reads))


def table(name: str) -> Definition:
    return Definition(R.parse(name), Kind.TABLE)


@pytest.fixture
def gauss() -> MVGraph:
    """The GaussDB example: mv1 over t1, mv5 over mv1 and t2, mv6 over mv5; mv2 unrelated."""
    return MVGraph.from_definitions([
        table("t1"), table("t2"), mv("mv1", "t1"), mv("mv5", "mv1", "t2"), mv("mv6", "mv5"),
        mv("mv2", "t2"), mv("v_top", "mv6", kind=Kind.VIEW),
    ])


def names(nodes: object) -> list[str]:
    return [str(n) for n in nodes]  # type: ignore[attr-defined]


def test_edges_run_from_input_to_dependent(gauss: MVGraph) -> None:
    assert gauss.g.has_edge(R("public", "mv1"), R("public", "mv5"))
    assert not gauss.g.has_edge(R("public", "mv5"), R("public", "mv1"))


def test_upstream_and_downstream_are_transitive(gauss: MVGraph) -> None:
    assert sorted(names(gauss.upstream(R("public", "mv6")))) == [
        "public.mv1", "public.mv5", "public.t1", "public.t2"]
    assert sorted(names(gauss.downstream(R("public", "mv1")))) == [
        "public.mv5", "public.mv6", "public.v_top"]
    assert names(gauss.upstream(R("public", "mv6"), depth=1)) == ["public.mv5"]


def test_order_is_deterministic_with_ties_by_name(gauss: MVGraph) -> None:
    assert names(gauss.order()) == [
        "public.t1", "public.mv1", "public.t2", "public.mv2", "public.mv5", "public.mv6",
        "public.v_top"]


def test_layers_are_longest_path_depth(gauss: MVGraph) -> None:
    assert [names(layer) for layer in gauss.layers()] == [
        ["public.t1", "public.t2"], ["public.mv1", "public.mv2"], ["public.mv5"],
        ["public.mv6"], ["public.v_top"]]


def test_cycle_is_an_error_naming_the_cycle() -> None:
    with pytest.raises(CycleError) as info:
        MVGraph.from_definitions([mv("a", "c"), mv("b", "a"), mv("c", "b")])
    assert set(info.value.cycle) == {"public.a", "public.b", "public.c"}
    assert "->" in str(info.value)


def test_undefined_reference_is_external_with_warning_or_error_when_strict() -> None:
    g = MVGraph.from_definitions([mv("a", "missing")])
    assert g.kind(R("public", "missing")) is Kind.EXTERNAL
    assert any("public.missing" in w for w in g.warnings)
    with pytest.raises(UndefinedReference, match=r"public\.missing"):
        MVGraph.from_definitions([mv("a", "missing")], strict=True)


@pytest.mark.parametrize(("expr", "expected"), [
    ("mv5", ["public.mv5"]),
    ("+mv5", ["public.t1", "public.mv1", "public.t2", "public.mv5"]),
    ("mv5+", ["public.mv5", "public.mv6", "public.v_top"]),
    ("+mv5+", ["public.t1", "public.mv1", "public.t2", "public.mv5", "public.mv6",
               "public.v_top"]),
    ("1+mv6", ["public.mv5", "public.mv6"]),
    ("mv1+1", ["public.mv1", "public.mv5"]),
    ("mv1 mv2", ["public.mv1", "public.mv2"]),
    ("+mv5,mv1+", ["public.mv1", "public.mv5"]),
    ("public.mv*", ["public.mv1", "public.mv2", "public.mv5", "public.mv6"]),
    ("@mv2", ["public.t2", "public.mv2"]),
])
def test_selectors(gauss: MVGraph, expr: str, expected: list[str]) -> None:
    assert names(gauss.select(expr)) == expected


@pytest.mark.parametrize(("expr", "message"), [
    ("", "empty selector"), ("   ", "empty selector"), ("@2+mv1", "mixes @ and a leading +"),
    ("mv1++", "cannot read selector"),
])
def test_bad_selectors_are_usage_errors(gauss: MVGraph, expr: str, message: str) -> None:
    with pytest.raises(SelectorError, match=message):
        gauss.select(expr)


def test_resolve_bare_names_through_search_path_and_uniqueness() -> None:
    g = MVGraph.from_definitions([table("a.x"), table("b.x"), table("b.y")])
    assert g.resolve("y") == R("b", "y")
    assert g.resolve("x", ["b", "a"]) == R("b", "x")
    with pytest.raises(UnknownRelation, match="ambiguous"):
        g.resolve("x")
    with pytest.raises(UnknownRelation, match="not in the graph"):
        g.resolve("nope")


def test_json_shape_and_round_trip(gauss: MVGraph) -> None:
    data = json.loads(gauss.to_json())
    assert {"name": "public.mv1", "kind": "matview"}.items() <= data["nodes"][1].items()
    assert {"from": "public.t1", "to": "public.mv1"} in data["edges"]
    again = MVGraph.from_json(gauss.to_json())
    assert diff(gauss, again).empty
    assert again.to_json() == gauss.to_json()


def test_quoted_names_survive_export() -> None:
    g = MVGraph.from_definitions([table('"Sales"."Big Orders"'),
                                  mv('r."Daily"', '"Sales"."Big Orders"')])
    data = json.loads(g.to_json())
    assert data["edges"] == [{"from": '"Sales"."Big Orders"', "to": 'r."Daily"'}]
    assert diff(g, MVGraph.from_json(g.to_json())).empty
    assert '"\\"Sales\\".\\"Big Orders\\""' in g.to_dot()
    assert "flowchart LR" in g.to_mermaid()


def test_diff_reports_each_kind_of_difference(gauss: MVGraph) -> None:
    other = MVGraph.from_definitions([
        table("t1"), table("t2"), mv("mv1", "t1"), mv("mv5", "mv1"), mv("mv6", "mv5"),
        mv("mv2", "t2", kind=Kind.VIEW), mv("extra", "t1")])
    d = diff(gauss, other)
    assert names(d.missing) == ["public.v_top"]
    assert names(d.extra) == ["public.extra"]
    assert [(str(n), a, b) for n, a, b in d.kind_changed] == [("public.mv2", "matview", "view")]
    assert (R("public", "t2"), R("public", "mv5")) in d.edges_missing
    assert not d.empty


# ---- properties over random DAGs ---------------------------------------------------------------

@st.composite
def dags(draw: st.DrawFn) -> MVGraph:
    n = draw(st.integers(min_value=1, max_value=25))
    defs = []
    for i in range(n):
        reads = draw(st.sets(st.integers(min_value=0, max_value=i - 1), max_size=3)) if i else set()
        kind = Kind.TABLE if not reads else draw(st.sampled_from([Kind.MATVIEW, Kind.VIEW]))
        defs.append(Definition(R("s", f"n{i:02d}"), kind,
                               frozenset(R("s", f"n{j:02d}") for j in reads)))
    return MVGraph.from_definitions(defs)


@settings(max_examples=60, deadline=None)
@given(dags())
def test_order_respects_every_edge(g: MVGraph) -> None:
    position = {n: i for i, n in enumerate(g.order())}
    assert len(position) == len(g)
    assert all(position[s] < position[t] for s, t in g.g.edges)


@settings(max_examples=60, deadline=None)
@given(dags(), st.data())
def test_selectors_match_their_definitions(g: MVGraph, data: st.DataObject) -> None:
    node = data.draw(st.sampled_from(sorted(g.g.nodes)))
    ancestors = nx.ancestors(g.g, node)
    descendants = nx.descendants(g.g, node)
    assert set(g.select(f"+{node}")) == ancestors | {node}
    assert set(g.select(f"{node}+")) == descendants | {node}
    assert set(g.select(f"+{node}+")) == ancestors | descendants | {node}
    one_up = set(g.g.predecessors(node))
    assert set(g.select(f"1+{node}")) == one_up | {node}


@settings(max_examples=60, deadline=None)
@given(dags())
def test_json_round_trips(g: MVGraph) -> None:
    again = MVGraph.from_json(g.to_json())
    assert set(again.g.nodes) == set(g.g.nodes)
    assert set(again.g.edges) == set(g.g.edges)
    assert all(again.kind(n) == g.kind(n) for n in g.g)


@settings(max_examples=60, deadline=None)
@given(dags())
def test_layers_place_inputs_strictly_below(g: MVGraph) -> None:
    depth = g.depths()
    assert all(depth[s] < depth[t] for s, t in g.g.edges)
    assert all(depth[n] == 0 for n in g.g if not g.inputs(n))
