"""mvgraph.jsontext.dumps writes exactly what json.dumps(obj, indent=n) writes."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from mvgraph.jsontext import dumps

SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
           | st.text())
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=4), max_leaves=30)


@given(VALUES, st.integers(min_value=0, max_value=4))
def test_same_text_as_json_dumps(value: Any, indent: int) -> None:
    assert dumps(value, indent) == json.dumps(value, indent=indent)


class Color(StrEnum):
    RED = "red"


def test_subclasses_tuples_and_what_it_leaves_to_json() -> None:
    value = {"k": Color.RED, "t": (1, (2, "ü")), "n": {1: "int key"}, "e": [[], {}]}
    assert dumps(value) == json.dumps(value, indent=2)
    assert dumps({"x": {"y": [float("inf"), -0.0]}}) == json.dumps(
        {"x": {"y": [float("inf"), -0.0]}}, indent=2)
