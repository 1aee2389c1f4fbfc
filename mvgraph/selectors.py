"""dbt-style graph selectors: ``+mv5``, ``mv5+``, ``2+mv5+1``, ``@mv5``, globs, unions and more.

Grammar: an expression is selectors separated by spaces (union); a selector is terms joined by
commas (intersection); a term is ``[@][N+]pattern[+N]`` where ``+`` before the pattern adds
ancestors (``N+`` limits the depth), ``+`` after adds descendants, ``@`` adds descendants and all
their ancestors, and ``pattern`` is a relation name (bare names resolve through the search path)
or a glob with ``*`` / ``?`` matched against ``schema.name`` and the bare name.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mvgraph.errors import SelectorError
from mvgraph.names import RelationName

if TYPE_CHECKING:
    from mvgraph.graph import MVGraph

_TERM = re.compile(r"^(?P<at>@)?(?:(?P<up>\d*)\+)?(?P<pattern>[^+@]+?)(?:\+(?P<down>\d*))?$")


def select(graph: MVGraph, expr: str,
           search_path: Sequence[str] = ("public",)) -> set[RelationName]:
    """The set of nodes an expression selects.

    Raises:
        SelectorError: the expression is empty or malformed.
        UnknownRelation: a plain name matches nothing.
    """
    selectors = expr.split()
    if not selectors:
        raise SelectorError("empty selector; give a name such as mv5, +mv5 or mv5+")
    chosen: set[RelationName] = set()
    for selector in selectors:
        parts = [_term(graph, term, search_path) for term in selector.split(",") if term]
        if not parts:
            raise SelectorError(f"selector {selector!r} has no terms")
        chosen |= set.intersection(*parts)
    return chosen


def _term(graph: MVGraph, term: str, search_path: Sequence[str]) -> set[RelationName]:
    m = _TERM.match(term)
    if not m:
        raise SelectorError(f"cannot read selector {term!r}; use forms like +mv5, mv5+, 2+mv5+1")
    if m["at"] and m["up"] is not None:
        raise SelectorError(f"selector {term!r} mixes @ and a leading +; use one of them")
    base = _match(graph, m["pattern"], search_path)
    result = set(base)
    for node in base:
        if m["up"] is not None:
            result |= graph.upstream(node, int(m["up"]) if m["up"] else None)
        if m["down"] is not None or m["at"]:
            below = graph.downstream(node, int(m["down"]) if m["down"] else None)
            result |= below
            if m["at"]:
                for other in below:
                    result |= graph.upstream(other)
                result |= graph.upstream(node)
    return result


def _match(graph: MVGraph, pattern: str, search_path: Sequence[str]) -> set[RelationName]:
    if any(ch in pattern for ch in "*?["):
        return {n for n in graph.g if fnmatch.fnmatchcase(f"{n.schema}.{n.name}", pattern)
                or fnmatch.fnmatchcase(str(n), pattern) or fnmatch.fnmatchcase(n.name, pattern)}
    return {graph.resolve(pattern, search_path)}
