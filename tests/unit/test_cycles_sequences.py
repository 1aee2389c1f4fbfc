"""Cycles among catalog views, sequences and system relations: the pure parts."""

from __future__ import annotations

from pathlib import Path

import pytest

from mvgraph import Kind, RelationName, load_graph
from mvgraph.errors import CycleError
from mvgraph.graph import MVGraph
from mvgraph.model.definitions import Definition
from mvgraph.refresh.behavior import MVFacts, decide
from mvgraph.sql.dialect import Define, parse_script


def n(name: str) -> RelationName:
    return RelationName.parse(name)


def d(name: str, kind: Kind, *reads: str) -> Definition:
    return Definition(n(name), kind, frozenset(n(r) for r in reads))


DEFS = [
    d("t", Kind.TABLE), d("b", Kind.TABLE),
    d("j.v2", Kind.VIEW, "j.v3"), d("j.v3", Kind.VIEW, "j.v2", "t"),
    d("m", Kind.MATVIEW, "j.v2"), d("m2", Kind.MATVIEW, "m"),
    d("a", Kind.MATVIEW, "t"), d("c", Kind.MATVIEW, "a", "b"),
]


def test_cycles_stay_an_error_by_default() -> None:
    with pytest.raises(CycleError, match=r"j\.v2 -> j\.v3 -> j\.v2"):
        MVGraph.from_definitions(DEFS)


def test_warned_cycle_leaves_a_deterministic_dag() -> None:
    g = MVGraph.from_definitions(reversed(DEFS), on_cycle="warn")
    assert [c.path for c in g.cycles] == ["j.v2 -> j.v3 -> j.v2"]
    assert len(g.warnings) == 1 and "public.m cannot be refreshed or read" in g.warnings[0]
    assert [str(x) for x in g.order()] == ["public.b", "public.m", "public.m2", "public.t",
                                           "public.a", "public.c"]
    assert [[str(x) for x in layer] for layer in g.layers()] == [
        ["public.b", "public.m", "public.t"], ["public.a", "public.m2"], ["public.c"]]
    assert g.upstream(n("c")) == {n("a"), n("b"), n("t")}
    assert g.downstream(n("t")) == {n("a"), n("c")}
    assert n("j.v2") not in g


def test_require_acyclic_names_who_needs_the_cycle() -> None:
    g = MVGraph.from_definitions(DEFS, on_cycle="warn")
    g.require_acyclic([n("a"), n("c")])
    with pytest.raises(CycleError) as info:
        g.require_acyclic([n("a"), n("m2")])
    assert str(info.value).startswith("public.m2 depends on j.v2, which is in a dependency "
                                      "cycle: j.v2 -> j.v3 -> j.v2")
    assert info.value.exit_code == 1
    for text in ("j.v3", "v3", '"j"."v2"'):
        with pytest.raises(CycleError, match=r"dependency cycle: j\.v2"):
            g.resolve(text)
    assert g.resolve("m") == n("m")


def test_json_round_trip_keeps_the_cycles() -> None:
    g = MVGraph.from_definitions(DEFS, on_cycle="warn")
    data = g.to_dict()
    assert data["cycles"] == [{"members": ["j.v2", "j.v3"],
                               "read_by": [{"from": "j.v2", "to": "public.m"}]}]
    again = MVGraph.from_json(g.to_json())
    assert again.to_dict() == data
    assert "cycles" not in MVGraph.from_definitions(DEFS[:2]).to_dict()
    assert g.subgraph([n("a"), n("t")]).cycles == []
    assert g.subgraph([n("m")]).cycles == g.cycles
    assert "%% dependency cycle left out: j.v2 -> j.v3 -> j.v2" in g.to_mermaid()


def test_undefined_system_relations_are_system_nodes_without_warning() -> None:
    g = MVGraph.from_definitions([d("v", Kind.VIEW, "pg_catalog.pg_locks",
                                    "information_schema.tables", "nowhere")])
    assert g.kind(n("pg_catalog.pg_locks")) is Kind.SYSTEM
    assert g.kind(n("information_schema.tables")) is Kind.SYSTEM
    assert g.kind(n("nowhere")) is Kind.EXTERNAL
    assert len(g.warnings) == 1 and "public.nowhere" in g.warnings[0]


def test_kinds_of_inputs_that_cannot_be_tracked() -> None:
    assert not Kind.SEQUENCE.is_base and not Kind.SYSTEM.is_base
    assert Kind.SEQUENCE.always_changing and Kind.SYSTEM.always_changing
    assert not Kind.TABLE.always_changing and not Kind.EXTERNAL.always_changing


def test_reason_names_volatile_inputs() -> None:
    from datetime import datetime

    facts = MVFacts(n("mv"), refreshed_at=datetime(2024, 1, 1), volatile=("nextval",),
                    volatile_inputs=("sequence public.s",))
    assert decide(facts)[1] == "calls nextval; reads sequence public.s (always stale)"


def _defs(sql: str) -> dict[str, Definition]:
    return {str(e.definition.name): e.definition
            for e in parse_script(sql).events if isinstance(e, Define)}


def test_sequences_in_scripts() -> None:
    defs = _defs("""
        CREATE SEQUENCE s; CREATE TEMP SEQUENCE IF NOT EXISTS x.t START 5;
        CREATE VIEW a AS SELECT nextval('s'), currval('X.T'), setval('"Odd"', 1);
        CREATE VIEW b AS SELECT 'k.r'::regclass, CAST('q' AS regclass), lower('nope'),
                                nextval('s'::text::regclass);
        CREATE VIEW c AS SELECT last_value FROM s;
    """)
    assert defs["public.s"].kind is Kind.SEQUENCE and defs["x.t"].kind is Kind.SEQUENCE
    assert sorted(map(str, defs["public.a"].reads)) == ['public."Odd"', "public.s", "x.t"]
    assert sorted(map(str, defs["public.b"].reads)) == ["k.r", "public.q"]
    assert sorted(map(str, defs["public.c"].reads)) == ["public.s"]
    assert defs["public.a"].volatile_functions == ("currval", "nextval", "setval")


def test_pg_names_resolve_to_pg_catalog_unless_defined() -> None:
    defs = _defs("""
        CREATE TABLE pg_mine (a int);
        CREATE VIEW v AS SELECT * FROM pg_locks, pg_mine, pg_catalog.pg_class, tables;
    """)
    assert sorted(map(str, defs["public.v"].reads)) == [
        "pg_catalog.pg_class", "pg_catalog.pg_locks", "public.pg_mine", "public.tables"]


def test_sequences_rename_drop_and_unused(tmp_path: Path) -> None:
    (tmp_path / "a.sql").write_text("""
        CREATE SEQUENCE s1; CREATE SEQUENCE s2; CREATE SEQUENCE unused;
        ALTER SEQUENCE s1 RENAME TO s3; ALTER SEQUENCE s2 OWNED BY NONE;
        CREATE VIEW v AS SELECT nextval('s3'), nextval('s2');
        DROP SEQUENCE IF EXISTS s2;
    """)
    (tmp_path / "b.sql").write_text("CREATE TABLE pg_late (a int);\n")
    (tmp_path / "a2.sql").write_text("CREATE VIEW w AS SELECT a FROM pg_late;\n")
    g = load_graph(sql=[tmp_path / "a.sql", tmp_path / "a2.sql", tmp_path / "b.sql"],
                   use_cache=False)
    assert g.kind(n("s3")) is Kind.SEQUENCE
    assert n("unused") not in g  # a sequence no view reads is left out, as the catalog does
    assert g.kind(n("s2")) is Kind.EXTERNAL  # dropped, still read
    assert g.inputs(n("w")) == [n("pg_late")]  # defined in a later file: the user's table
