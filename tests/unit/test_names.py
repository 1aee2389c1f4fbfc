"""RelationName parsing and quoting."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mvgraph.model.names import RelationName, quote_ident


@pytest.mark.parametrize(("text", "schema", "name"), [
    ("mv1", "public", "mv1"),
    ("MV1", "public", "mv1"),
    ("Sales.Orders", "sales", "orders"),
    ('"Sales"."Big Orders"', "Sales", "Big Orders"),
    ('x."a.b"', "x", "a.b"),
    ('"we""ird".t', 'we"ird', "t"),
    ("db.s.t", "s", "t"),
])
def test_parse(text: str, schema: str, name: str) -> None:
    assert RelationName.parse(text) == RelationName(schema, name)


@pytest.mark.parametrize("bad", ["", "a.", '"open', "a.b.c.d", "a..b"])
def test_parse_rejects_malformed(bad: str) -> None:
    with pytest.raises(ValueError):
        RelationName.parse(bad)


def test_quote_only_when_needed() -> None:
    assert quote_ident("orders") == "orders"
    assert quote_ident("Orders") == '"Orders"'
    assert quote_ident("order") == '"order"'
    assert quote_ident("1x") == '"1x"'


@given(st.text(min_size=1, max_size=12), st.text(min_size=1, max_size=12))
def test_str_round_trips(schema: str, name: str) -> None:
    rel = RelationName(schema, name)
    assert RelationName.parse(str(rel)) == rel


def test_trailing_newline_is_quoted() -> None:
    assert quote_ident("mv\n") == '"mv\n"'
    assert RelationName.parse(str(RelationName("s", "mv\n"))) == RelationName("s", "mv\n")
