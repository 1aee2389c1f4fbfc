"""``json.dumps(obj, indent=n)`` text, made several times faster.

With an indent, the standard library encodes in pure Python, a generator per container and a
``yield`` per token (the C encoder only does compact output): that costs more than building a
large graph from a warm parse cache. :func:`dumps` writes the same text (the same separators,
``ensure_ascii``, key order, float forms) with one recursive function and the C string encoder.
"""

from __future__ import annotations

import json
import math
from json.encoder import encode_basestring_ascii
from typing import Any

__all__ = ["dumps"]


def dumps(obj: Any, indent: int = 2) -> str:
    """Exactly ``json.dumps(obj, indent=indent)`` for dicts with string keys, lists, tuples,
    strings, ints, floats, booleans and None; anything else goes to :func:`json.dumps`.

    >>> dumps({"a": [1, 2.5, None], "b": {}, "c": "é"}) == json.dumps(
    ...     {"a": [1, 2.5, None], "b": {}, "c": "é"}, indent=2)
    True
    """
    out: list[str] = []
    try:
        _write(obj, out, "\n", " " * indent)
    except (_Unsupported, RecursionError):  # json.dumps then raises what it raises
        return json.dumps(obj, indent=indent)
    return "".join(out)


class _Unsupported(Exception):
    """A value this encoder leaves to the standard library."""


def _write(o: Any, out: list[str], newline: str, step: str) -> None:
    if isinstance(o, str):
        out.append(encode_basestring_ascii(o))
    elif o is None:
        out.append("null")
    elif o is True:
        out.append("true")
    elif o is False:
        out.append("false")
    elif isinstance(o, int):
        out.append(int.__repr__(o))
    elif isinstance(o, float):
        out.append(_float(o))
    elif isinstance(o, dict):
        if not o:
            out.append("{}")
            return
        inner = newline + step
        first = True
        for key, value in o.items():
            if not isinstance(key, str):
                raise _Unsupported
            out.append("{" + inner if first else "," + inner)
            first = False
            out.append(encode_basestring_ascii(key))
            out.append(": ")
            _write(value, out, inner, step)
        out.append(newline + "}")
    elif isinstance(o, list | tuple):
        if not o:
            out.append("[]")
            return
        inner = newline + step
        first = True
        for value in o:
            out.append("[" + inner if first else "," + inner)
            first = False
            _write(value, out, inner, step)
        out.append(newline + "]")
    else:
        raise _Unsupported


def _float(o: float) -> str:
    if math.isnan(o):
        return "NaN"
    if math.isinf(o):
        return "Infinity" if o > 0 else "-Infinity"
    return float.__repr__(o)
