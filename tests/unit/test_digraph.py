"""mvgraph.digraph against networkx, its reference: the same orders, cycles and components."""

from __future__ import annotations

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mvgraph.digraph import (
    DiGraph,
    NoCycle,
    NotAcyclic,
    find_cycle,
    is_directed_acyclic_graph,
    lexicographical_topological_sort,
    strongly_connected_components,
)

Edges = list[tuple[int, int]]
graphs = st.tuples(st.integers(1, 12), st.lists(st.tuples(st.integers(0, 11),
                                                          st.integers(0, 11)), max_size=30))


def both(n: int, edges: Edges) -> tuple[DiGraph[int], nx.DiGraph]:
    ours: DiGraph[int] = DiGraph()
    ref: nx.DiGraph = nx.DiGraph()
    for g in (ours, ref):
        g.add_nodes_from(range(n))
        g.add_edges_from((u % n, v % n) for u, v in edges)
    return ours, ref


@settings(max_examples=200, deadline=None)
@given(graphs)
def test_views_and_lookups_agree(graph: tuple[int, Edges]) -> None:
    ours, ref = both(*graph)
    assert list(ours.nodes) == list(ref.nodes) and list(ours) == list(ref)
    assert list(ours.edges) == list(ref.edges)
    assert ours.number_of_edges() == ref.number_of_edges() == len(ours.edges)
    for node in ref:
        assert list(ours.predecessors(node)) == list(ref.predecessors(node))
        assert list(ours.successors(node)) == list(ref.successors(node))
    keep = set(list(ref)[::2])
    assert set(ours.subgraph(keep).edges) == set(ref.subgraph(keep).edges)
    assert list(ours.subgraph(keep)) == list(ref.subgraph(keep))


@settings(max_examples=200, deadline=None)
@given(graphs)
def test_algorithms_agree(graph: tuple[int, Edges]) -> None:
    ours, ref = both(*graph)
    acyclic = nx.is_directed_acyclic_graph(ref)
    assert is_directed_acyclic_graph(ours) == acyclic
    if acyclic:
        assert list(lexicographical_topological_sort(ours, key=lambda n: -n)) == list(
            nx.lexicographical_topological_sort(ref, key=lambda n: -n))
        with pytest.raises(NoCycle):
            find_cycle(ours)
    else:
        with pytest.raises(NotAcyclic):
            list(lexicographical_topological_sort(ours, key=str))
        cycle = find_cycle(ours)
        assert all(ref.has_edge(u, v) for u, v in cycle)
        assert all(cycle[i][1] == cycle[(i + 1) % len(cycle)][0] for i in range(len(cycle)))
        assert cycle == list(nx.find_cycle(ref))
    assert sorted(map(sorted, strongly_connected_components(ours))) == sorted(
        map(sorted, nx.strongly_connected_components(ref)))


def test_attributes_and_removal() -> None:
    g: DiGraph[str] = DiGraph()
    g.add_nodes_from([("a", {"kind": "table"}), "b"])
    g.add_node("b", kind="view")
    g.add_edge("a", "b")
    g.add_edge("b", "c")
    assert g.nodes["a"] == {"kind": "table"} and g.nodes["b"] == {"kind": "view"}
    assert ("a", "b") in g.edges and ("b", "a") not in g.edges and "c" in g
    copy = g.copy()
    copy.nodes["a"]["kind"] = "changed"
    assert g.nodes["a"]["kind"] == "table"
    g.remove_nodes_from(["b", "zz"])
    assert list(g) == ["a", "c"] and not list(g.edges)
    assert [] not in g
