"""Names in server-written SQL: :func:`rename_relations` rewrites the relations a definition
reads or names, token by token (``mvgraph.sql.lexer``), never by pattern over the text;
:func:`temp_name` makes the temporary names a rebuild creates things under."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from psycopg import sql

from mvgraph.sql.lexer import Kind, Lexeme, lex

QualifiedName = tuple[str, str]  # (schema, name), as stored in the catalog (not quoted)
NAME_BYTES: Final = 63  # NAMEDATALEN - 1


def quote_qualified(schema: str, name: str) -> str:
    """``schema.name``, each part quoted (always, as psycopg does)."""
    return sql.Identifier(schema, name).as_string(None)


def rename_relations(definition: str, renames: dict[QualifiedName, QualifiedName], *,
                     alias: bool = True) -> str:
    """``definition`` (server-written SQL with every relation name schema-qualified) with each
    reference to a relation in ``renames`` replaced by its new name; a reference with no
    alias gets its old name as alias, so column references stay valid.

    Only names where a relation is read or named are replaced: a FROM item (after FROM, JOIN,
    ONLY, a comma of a FROM list, the parenthesis of a join), the target of ON / TO / INTO /
    UPDATE / REFERENCES (index, trigger and rule definitions, foreign keys) and a type after
    ``::`` (a row type, replaced without alias); ``alias=False`` never appends one (for DDL
    text such as an index or a trigger definition). A function call ``s.f(`` and a column
    reference ``alias.column`` are left alone, as is every byte not replaced.

    >>> rename_relations("SELECT t.a FROM s.t WHERE (t.a > 0)", {("s", "t"): ("s", "t__rb1")})
    'SELECT t.a FROM "s"."t__rb1" "t" WHERE (t.a > 0)'
    """
    lexemes = [x for x in lex(definition) if x.kind is not Kind.COMMENT]
    out: list[str] = []
    done = 0
    for start, end, position, after in _references(definition, lexemes):
        old = (_part(definition, lexemes[start]), _part(definition, lexemes[start + 2]))
        new = renames.get(old)
        if new is None:
            continue
        text = quote_qualified(*new)
        if alias and position == "item" and not _has_alias(definition, after):
            text += " " + sql.Identifier(old[1]).as_string(None)
        out += [definition[done:lexemes[start].start], text]
        done = lexemes[end].end
    return "".join([*out, definition[done:]])


_FROM_END: Final = frozenset({"where", "group", "having", "window", "order", "limit", "offset",
                              "fetch", "for", "union", "intersect", "except", "returning",
                              "select", "values", "set"})
_PLAIN: Final = frozenset({"on", "to", "into", "references"})
_NOT_ALIAS: Final = _FROM_END | _PLAIN | frozenset({
    "join", "left", "right", "full", "inner", "cross", "natural", "using", "tablesample",
    "with", "lateral", "do", "default", "not", "deferrable", "initially", "when", "then",
    "else", "end", "and", "or", "is", "from", "partition"})


@dataclass(slots=True)
class _Level:
    """A parenthesis level while scanning: inside a FROM list? has it a SELECT/DELETE/UPDATE
    (so that FROM starts a FROM list, not ``EXTRACT(x FROM y)``)?"""

    from_list: bool = False
    query: bool = False


def _references(text: str, lexemes: list[Lexeme]) -> Iterator[tuple[int, int, str, Lexeme |
                                                                     None]]:
    """Each ``schema . name`` in a relation position: (index of its first lexeme, of its last,
    'item' / 'plain' / 'type', the lexeme after it)."""
    levels = [_Level(query=True)]
    expect: str | None = None
    i = 0
    while i < len(lexemes):
        if expect is not None and _qualified_at(text, lexemes, i, expect):
            yield i, i + 2, expect, lexemes[i + 3] if i + 3 < len(lexemes) else None
            expect, i = None, i + 3
            continue
        expect = _next_expect(text, lexemes, i, levels, expect)
        i += 1


def _qualified_at(text: str, lexemes: list[Lexeme], i: int, expect: str) -> bool:
    """Is a two-part name (not three, not a call) at ``i``?"""
    names = (Kind.WORD, Kind.IDENT)
    part = lexemes[i:i + 4]
    if len(part) < 3 or part[0].kind not in names or part[2].kind not in names:
        return False
    if text[part[1].start:part[1].end] != ".":
        return False
    following = text[part[3].start:part[3].end] if len(part) > 3 else ""
    return following != "." and (following != "(" or expect == "plain")


def _next_expect(text: str, lexemes: list[Lexeme], i: int, levels: list[_Level],
                 expect: str | None) -> str | None:
    """What lexeme ``i`` makes of the next one: a relation position or not (None); keeps the
    parenthesis levels."""
    x = lexemes[i]
    word = text[x.start:x.end].lower() if x.kind is Kind.WORD else ""
    level = levels[-1]
    if x.kind is Kind.OPEN:
        levels.append(_Level(from_list=expect == "item"))
        return "item" if expect == "item" else None
    if x.kind is Kind.CLOSE:
        if len(levels) > 1:
            levels.pop()
        return None
    if x.kind is Kind.OTHER:
        char = text[x.start:x.end]
        if char == ",":
            return "item" if level.from_list else None
        double = i > 0 and lexemes[i - 1].end == x.start and text[lexemes[i - 1].start:
                                                                   x.start] == ":"
        return "type" if char == ":" and double else None
    if word == "from":
        before = lexemes[i - 1] if i > 0 else None
        distinct = before is not None and text[before.start:before.end].lower() == "distinct"
        if level.query and not distinct:
            level.from_list = True
            return "item"
        return None
    if word in ("select", "values", "delete", "update"):
        level.query = True
    if word in _FROM_END:
        level.from_list = False
    if word in ("join", "update"):
        return "item"
    if word in ("only", "lateral"):
        return expect
    return "plain" if word in _PLAIN else None


def _part(text: str, x: Lexeme) -> str:
    """An identifier's value: an unquoted word folded (ASCII) to lower case, a quoted one as
    written, its doubled quotes undone."""
    raw = text[x.start:x.end]
    if x.kind is Kind.IDENT:
        return raw[1:-1].replace('""', '"') if raw.startswith('"') else raw
    return raw.translate(_LOWER)


_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _has_alias(text: str, after: Lexeme | None) -> bool:
    """Does the FROM item whose name is followed by ``after`` have an alias?"""
    if after is None:
        return False
    if after.kind is Kind.IDENT:
        return True
    word = text[after.start:after.end].lower()
    return after.kind is Kind.WORD and (word == "as" or word not in _NOT_ALIAS)


def temp_name(name: str, job: int, tag: str = "rb") -> str:
    """``<name>__<tag><job>``, the base cut so that the whole fits in 63 bytes (PostgreSQL's
    identifier limit), never in the middle of a UTF-8 character.

    >>> temp_name("orders", 42), len(temp_name("é" * 40, 7).encode())
    ('orders__rb42', 63)
    """
    suffix = f"__{tag}{job}"
    room = NAME_BYTES - len(suffix.encode())
    if room < 1:
        raise ValueError(f"the suffix {suffix!r} leaves no room for a name")
    base = name.encode()[:room].decode(errors="ignore")
    return base + suffix


def rename_qualifier(text: str, old: str, new: str) -> str:
    """``text`` with ``new`` for ``old`` where ``old`` qualifies a column (``old.col``): the
    relation's own columns inside a subquery of a policy expression, which ``pg_get_expr``
    qualifies with the bare relation name. Relation names, types and calls are left alone.

    >>> rename_qualifier("(x > 0) AND (EXISTS ( SELECT 1 FROM s.t b WHERE (b.id = t.p)))",
    ...                  "t", "t__rb1")
    '(x > 0) AND (EXISTS ( SELECT 1 FROM s.t b WHERE (b.id = "t__rb1".p)))'
    """
    lexemes = [x for x in lex(text) if x.kind is not Kind.COMMENT]
    named = {i for first, last, _, _ in _references(text, lexemes) for i in range(first, last + 1)}
    out, done = [], 0
    for i, x in enumerate(lexemes):
        if i in named or x.kind not in (Kind.WORD, Kind.IDENT) or _part(text, x) != old:
            continue
        if _text(text, lexemes, i + 1) != "." or _text(text, lexemes, i - 1) == ".":
            continue
        if _text(text, lexemes, i + 3) == "(":  # schema.function(
            continue
        out += [text[done:x.start], sql.Identifier(new).as_string(None)]
        done = x.end
    return "".join([*out, text[done:]])


def _text(text: str, lexemes: list[Lexeme], i: int) -> str:
    """The text of lexeme ``i`` ('' outside the list)."""
    return text[lexemes[i].start:lexemes[i].end] if 0 <= i < len(lexemes) else ""
