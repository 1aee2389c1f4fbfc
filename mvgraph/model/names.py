"""Relation names: a frozen, ordered (schema, name) pair that renders the way PostgreSQL quotes."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from psycopg import sql

_PLAIN = re.compile(r"[a-z_][a-z0-9_$]*\Z")

# Reserved words that must be quoted even when lower case (a practical subset of PostgreSQL's).
_RESERVED = frozenset(
    """all analyse analyze and any array as asc asymmetric both case cast check collate column
    constraint create current_catalog current_date current_role current_time current_timestamp
    current_user default deferrable desc distinct do else end except false fetch for foreign from
    grant group having in initially intersect into lateral leading limit localtime localtimestamp
    not null offset on only or order placing primary references returning select session_user
    some symmetric table then to trailing true union unique user using variadic when where window
    with""".split()  # noqa: SIM905
)


def quote_ident(part: str) -> str:
    """Quote one identifier only when PostgreSQL needs it.

    >>> quote_ident("orders"), quote_ident("Big Orders"), quote_ident("select")
    ('orders', '"Big Orders"', '"select"')
    """
    if _PLAIN.match(part) and part not in _RESERVED:
        return part
    return '"' + part.replace('"', '""') + '"'


def _split_parts(text: str) -> list[str]:
    """Split `a."B.c"` into ['a', 'B.c'], folding unquoted parts to lower case."""
    parts: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] == '"':
            j = i + 1
            buf = []
            while True:
                if j >= n:
                    raise ValueError(f"unterminated quoted identifier in {text!r}")
                if text[j] == '"':
                    if j + 1 < n and text[j + 1] == '"':
                        buf.append('"')
                        j += 2
                        continue
                    break
                buf.append(text[j])
                j += 1
            parts.append("".join(buf))
            i = j + 1
        else:
            j = text.find(".", i)
            j = n if j == -1 else j
            raw = text[i:j].strip()
            if not raw:
                raise ValueError(f"empty name part in {text!r}")
            parts.append(raw.lower())
            i = j
        if i < n:
            if text[i] != ".":
                raise ValueError(f"unexpected character {text[i]!r} in {text!r}")
            i += 1
            if i >= n:
                raise ValueError(f"name ends with a dot: {text!r}")
    return parts


class RelationName(NamedTuple):
    """A schema-qualified relation name; ``str()`` gives the quoted ``schema.name`` form.

    A named tuple: hashing, ordering and pickling run at C speed, which matters for graphs of
    tens of thousands of nodes.
    """

    schema: str
    name: str

    @classmethod
    def parse(cls, text: str, default_schema: str = "public") -> RelationName:
        """Parse ``name``, ``schema.name`` or quoted forms; unquoted parts fold to lower case.

        >>> RelationName.parse('Sales."Big Orders"')
        RelationName(schema='sales', name='Big Orders')
        >>> str(RelationName.parse("mv1"))
        'public.mv1'
        """
        parts = _split_parts(text.strip())
        if len(parts) == 1:
            return cls(default_schema, parts[0])
        if len(parts) == 2:
            return cls(parts[0], parts[1])
        if len(parts) == 3:  # database.schema.name: the database is ignored
            return cls(parts[1], parts[2])
        raise ValueError(f"not a relation name: {text!r}")

    def __str__(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"

    def __repr__(self) -> str:
        return f"RelationName(schema={self.schema!r}, name={self.name!r})"

    @property
    def identifier(self) -> sql.Identifier:
        """The name as a psycopg identifier, for composing SQL safely."""
        from psycopg import sql

        return sql.Identifier(self.schema, self.name)
