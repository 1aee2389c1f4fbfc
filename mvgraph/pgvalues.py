"""Query values for people and for JSON: ``mvgraph sql``, ``SHOW JOBS`` and job results.

:func:`pg_text` writes a value as PostgreSQL's text output does (``t``/``f``, ``{1,2}``, JSON
text, NULL as the empty string like psql); :func:`json_value` makes it a JSON value (a jsonb
object stays an object, a boolean stays a boolean). When the server's own text of a value is at
hand (``mvgraph sql`` keeps it), that text is shown instead: :func:`pg_text` is for values that
come back from psycopg or from JSON.

Imports only the standard library.
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

__all__ = ["json_value", "pg_text"]

#: Characters that make an array element need double quotes (PostgreSQL's array_out).
_ARRAY_SPECIAL = frozenset('{},"\\ \t\n\r\v\f')


def pg_text(value: object) -> str:
    r"""``value`` as PostgreSQL prints it; None is the empty string (psql's NULL).

    >>> [pg_text(v) for v in (None, True, False, 3, 1.5, float("inf"), Decimal("1E+2"))]
    ['', 't', 'f', '3', '1.5', 'Infinity', '100']
    >>> pg_text([1, None, "a b", ""]), pg_text({"a": None, "b": [1, True]})
    ('{1,NULL,"a b",""}', '{"a": null, "b": [1, true]}')
    >>> pg_text(datetime.fromisoformat("2024-05-01T10:00:00+00:00")), pg_text(b"\x01\xff")
    ('2024-05-01 10:00:00+00', '\\x01ff')
    >>> pg_text(timedelta(days=1, hours=2, microseconds=5))
    '1 day 02:00:00.000005'
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, Decimal):
        return format(value, "f") if value.is_finite() else str(value).replace("sNaN", "NaN")
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, default=pg_text)
    if isinstance(value, list | tuple):
        return "{" + ",".join(_element(v) for v in value) + "}"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")[:26 if value.microsecond else 19] + _offset(value)
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return _interval(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    return str(value)


def json_value(value: object) -> Any:
    """``value`` as a JSON value: numbers, booleans, null, objects and arrays as such; what
    JSON has no form for (timestamps, intervals, bytes, NaN) as PostgreSQL's text.

    >>> json_value({"a": None}), json_value(True), json_value(Decimal("2.50")), json_value([1])
    ({'a': None}, True, 2.5, [1])
    >>> json_value(Decimal("12345678901234567890.123456789")), json_value(float("nan"))
    ('12345678901234567890.123456789', 'NaN')
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else _float(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            return pg_text(value)
        if value == value.to_integral_value():
            return int(value)
        as_float = float(value)
        return as_float if Decimal(repr(as_float)) == value else format(value, "f")
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    return pg_text(value)


def _float(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return float.__repr__(value)


def _element(value: object) -> str:
    """One array element: NULL, a nested array, or text quoted where array_out quotes it."""
    if value is None:
        return "NULL"
    if isinstance(value, list | tuple):
        return pg_text(value)
    text = pg_text(value)
    if text == "" or text.upper() == "NULL" or any(c in _ARRAY_SPECIAL for c in text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def _offset(value: datetime) -> str:
    offset = value.utcoffset()
    if offset is None:
        return ""
    seconds = int(offset.total_seconds())
    sign, seconds = ("-", -seconds) if seconds < 0 else ("+", seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{sign}{hours:02d}" + (f":{minutes:02d}" if minutes or secs else "") + (
        f":{secs:02d}" if secs else "")


def _interval(value: timedelta) -> str:
    days, seconds, micro = value.days, value.seconds, value.microseconds
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}" + (f".{micro:06d}" if micro else "")
    if not days:
        return clock
    unit = "day" if days == 1 else "days"
    sign = "+" if days < 0 else ""  # PostgreSQL: "-1 days +01:00:00"
    return f"{days} {unit}" + ("" if clock == "00:00:00" else f" {sign}{clock}")
