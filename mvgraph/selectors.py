"""dbt-style graph selectors: ``+mv5``, ``mv5+``, ``2+mv5+1``, ``@mv5``, globs, unions and more.

Grammar: an expression is selectors separated by spaces (union); a selector is terms joined by
commas (intersection); a term is ``[@][N+]pattern[+N]`` where ``+`` before the pattern adds
ancestors (``N+`` limits the depth), ``+`` after adds descendants, ``@`` adds descendants and all
their ancestors, and ``pattern`` is a relation name (bare names resolve through the search path)
or a glob with ``*`` / ``?`` matched against ``schema.name`` and the bare name. Double-quoted
parts (``"Sales Q1+"``, ``"My Schema"."x+y"``, ``""`` for a quote) are names as PostgreSQL
writes them: spaces, commas, ``+``, ``@`` and glob characters inside them are literal.
"""

from __future__ import annotations

import fnmatch
import glob
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from mvgraph.errors import SelectorError
from mvgraph.model.names import RelationName


class Selectable(Protocol):
    """What selection needs of a graph (:class:`mvgraph.graph.MVGraph` has it): this module sits
    below ``graph``, which calls it from ``MVGraph.select``, so it names no graph class."""

    def nodes(self) -> list[RelationName]: ...

    def resolve(self, text: str, search_path: Sequence[str] = ...) -> RelationName: ...

    def upstream(self, name: RelationName, depth: int | None = ...) -> set[RelationName]: ...

    def downstream(self, name: RelationName, depth: int | None = ...) -> set[RelationName]: ...

_PREFIX = re.compile(r"(?P<at>@)?(?:(?P<up>\d*)\+)?")
_SUFFIX = re.compile(r"(?:\+(?P<down>\d*))?\Z")
_GLOB = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class Term:
    """One parsed term: ``pattern`` as written (quotes kept); ``up`` / ``down`` are None when
    absent, '' for unlimited, else a depth; ``glob`` when an unquoted ``*``, ``?`` or ``[``
    occurs (``fnmatch`` then holds the pattern with quoted parts made literal)."""

    at: bool
    up: str | None
    pattern: str
    down: str | None
    glob: bool
    fnmatch: str


def select(graph: Selectable, expr: str,
           search_path: Sequence[str] = ("public",)) -> set[RelationName]:
    """The set of nodes an expression selects.

    Raises:
        SelectorError: the expression is empty or malformed.
        UnknownRelation: a plain name matches nothing.
    """
    selectors = split_outside_quotes(expr, str.isspace)
    if not selectors:
        raise SelectorError("empty selector; give a name such as mv5, +mv5 or mv5+")
    chosen: set[RelationName] = set()
    for selector in selectors:
        terms = split_outside_quotes(selector, ",".__eq__)
        if not terms:
            raise SelectorError(f"selector {selector!r} has no terms")
        chosen |= set.intersection(*(_expand(graph, parse_term(t), search_path) for t in terms))
    return chosen


def split_outside_quotes(text: str, is_separator: Callable[[str], bool]) -> list[str]:
    """Split ``text`` on separator characters outside double quotes; empty pieces are dropped.

    >>> split_outside_quotes('+"a b",x "c"" d"+', str.isspace)
    ['+"a b",x', '"c"" d"+']

    Raises:
        SelectorError: a double quote is not closed.
    """
    pieces: list[str] = []
    current: list[str] = []
    for chunk, quoted in _segments(text):
        if quoted:
            current.append(chunk)
            continue
        for char in chunk:
            if is_separator(char):
                pieces.append("".join(current))
                current = []
            else:
                current.append(char)
    pieces.append("".join(current))
    return [p for p in pieces if p]


def _segments(text: str) -> Iterator[tuple[str, bool]]:
    """Alternate unquoted text and quoted identifiers (quotes and ``""`` escapes kept)."""
    pos = 0
    for match in re.finditer(r'"(?:[^"]|"")*("?)', text):
        if not match.group(1):
            raise SelectorError(f"unterminated quoted name in selector {text!r}; close it with \"")
        yield text[pos:match.start()], False
        yield match.group(), True
        pos = match.end()
    yield text[pos:], False


def parse_term(term: str) -> Term:
    """Read ``[@][N+]pattern[+N]``; the pattern may hold double-quoted parts.

    >>> t = parse_term('2+"Sales Q1+"+')
    >>> t.up, t.pattern, t.down, t.glob
    ('2', '"Sales Q1+"', '', False)

    Raises:
        SelectorError: the term does not have that form.
    """
    prefix = _PREFIX.match(term)
    assert prefix is not None  # every part of it is optional
    pattern, literal, rest = _pattern(term[prefix.end():])
    suffix = _SUFFIX.match(rest)
    if not pattern or suffix is None:
        raise SelectorError(f"cannot read selector {term!r}; use forms like +mv5, mv5+, 2+mv5+1 "
                            'or +"Sales Q1+"+')
    if prefix["at"] and prefix["up"] is not None:
        raise SelectorError(f"selector {term!r} mixes @ and a leading +; use one of them")
    is_glob = any(ch in _GLOB for ch, quoted in literal if not quoted)
    return Term(bool(prefix["at"]), prefix["up"], pattern, suffix["down"], is_glob,
                "".join(glob.escape(ch) if quoted else ch for ch, quoted in literal))


def _pattern(text: str) -> tuple[str, list[tuple[str, bool]], str]:
    """The pattern at the start of ``text`` (up to an unquoted ``+`` or ``@``), its characters
    with quotes removed (each marked quoted or not), and the rest of ``text``."""
    written: list[str] = []
    literal: list[tuple[str, bool]] = []
    for chunk, quoted in _segments(text):
        if quoted:
            written.append(chunk)
            literal += [(ch, True) for ch in chunk[1:-1].replace('""', '"')]
            continue
        stop = next((i for i, ch in enumerate(chunk) if ch in "+@"), None)
        written.append(chunk if stop is None else chunk[:stop])
        literal += [(ch, False) for ch in written[-1]]
        if stop is not None:
            used = sum(map(len, written))
            return "".join(written), literal, text[used:]
    return "".join(written), literal, ""


def _expand(graph: Selectable, term: Term, search_path: Sequence[str]) -> set[RelationName]:
    base = _match(graph, term, search_path)
    result = set(base)
    for node in base:
        if term.up is not None:
            result |= graph.upstream(node, int(term.up) if term.up else None)
        if term.down is not None or term.at:
            below = graph.downstream(node, int(term.down) if term.down else None)
            result |= below
            if term.at:
                for other in below:
                    result |= graph.upstream(other)
                result |= graph.upstream(node)
    return result


def _match(graph: Selectable, term: Term, search_path: Sequence[str]) -> set[RelationName]:
    if term.glob:
        pattern = term.fnmatch
        written = term.pattern if '"' not in term.pattern else None
        return {n for n in graph.nodes() if fnmatch.fnmatchcase(f"{n.schema}.{n.name}", pattern)
                or fnmatch.fnmatchcase(n.name, pattern)
                or (written is not None and fnmatch.fnmatchcase(str(n), written))}
    return {graph.resolve(term.pattern, search_path)}
