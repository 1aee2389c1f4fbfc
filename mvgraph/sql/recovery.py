"""Where sqlglot's PostgreSQL parser falls short: token rewrites tried after a parse fails.

sqlglot's parser is mypyc-compiled (``sqlglot[c]``) and cannot be subclassed, so mvgraph does not
override its methods. Instead, when the stock parser rejects a query (or fails inside, as it does
on ``a ?# b``), :func:`recover` rewrites the statement's tokens into a form the parser reads with
the same relation reads, and the caller parses again. A statement sqlglot already parses never
comes here, so the common path costs nothing.

Each rewrite names the sqlglot gap it works around (the wording of an upstream issue):

* ``operators``: PostgreSQL lexes any run of ``+-*/<>=~!@#%^&|`?`` as one operator (geometric
  ``?#``, ``##``, ``|>>``, network ``<<=``, user-defined ``<<<``); sqlglot's tokenizer knows a fixed
  set and splits the rest (``?`` becomes a placeholder; ``a ?# b`` raises TypeError). Upstream:
  "postgres: lex unknown operator runs as one token and parse them as exp.Operator".
  Here a binary run becomes ``OPERATOR(run)`` (which sqlglot reads as ``exp.Operator``) and a
  prefix one (``@-@ p``, ``OPERATOR(s.-) p``) is dropped.
* ``join alias``: ``t1 JOIN t2 USING (a) AS x`` (PostgreSQL 14). Upstream: "postgres: USING (...)
  AS alias on joins". The alias is dropped (it names columns, not relations).
* ``collation for``: ``COLLATION FOR (expr)``. Upstream: "postgres: COLLATION FOR (expr)".
  Becomes ``pg_collation_for(expr)``, PostgreSQL's own function for it.
* ``is normalized``: ``x IS [NOT] [NFC|NFD|NFKC|NFKD] NORMALIZED``; sqlglot reads ``x IS
  NORMALIZED`` as ``x IS <column normalized>`` and fails when an alias follows. Upstream:
  "postgres: IS [NOT] [form] NORMALIZED predicate". Read as ``x IS [NOT] NULL``.
* ``at local``: ``x AT LOCAL`` (PostgreSQL 17). Upstream: "postgres: AT LOCAL". Dropped.
* ``order by using``: ``ORDER BY x USING <`` / ``USING OPERATOR(s.<)``. Upstream: "postgres: ORDER
  BY ... USING operator". The ``USING op`` is dropped.
* ``bit varying``: the type ``bit varying(n)`` that ``pg_get_viewdef`` prints. Upstream:
  "postgres: BIT VARYING type". Becomes ``varbit``.
* ``cte clauses``: ``SEARCH ... SET`` and ``CYCLE ... USING`` after a recursive CTE; see
  :func:`cte_clauses` (applied before the first parse: sqlglot misreads some silently).
* ``opaque call``: a call whose arguments sqlglot cannot read — the SQL/JSON constructors and
  query functions (``JSON_ARRAY(x FORMAT JSON RETURNING json)``, ``JSON(...)``,
  ``JSON_SERIALIZE``, ``JSON_QUERY ... WITH WRAPPER``, ``JSON_EXISTS ... PASSING``,
  ``JSON_TABLE`` with PASSING/NESTED/ERROR ON ERROR), XML functions (``XMLPARSE``,
  ``XMLSERIALIZE``, ``XMLPI``, ``XMLROOT``, ``XMLEXISTS``), ``SUBSTRING(s SIMILAR p ESCAPE e)``.
  Upstream: "postgres: SQL/JSON (PG16/17) constructors, query functions and JSON_TABLE clauses"
  and "postgres: XMLPARSE/XMLSERIALIZE/XMLPI/XMLROOT/XMLEXISTS". The call found at the parse
  error becomes ``mvgraph_opaque_<name>(subqueries)``: its arguments are dropped except the
  subqueries inside them, which are the only part that can read a relation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from sqlglot.tokenizer_core import Token, TokenType

__all__ = [
    "OPAQUE_PREFIX", "cte_clauses", "error_index", "matching_paren", "opaque_call", "rewrite",
    "special_call",
]

_T = TokenType
OPAQUE_PREFIX: Final = "mvgraph_opaque_"
_OPERATOR_CHARS: Final = frozenset("+-*/<>=~!@#%^&|`?")
# Runs sqlglot's Postgres parser reads as the operators they are; any other run is rewritten.
_KNOWN_OPERATORS: Final = frozenset(
    {"+", "-", "*", "/", "%", "^", "=", "<>", "!=", "<", ">", "<=", ">=", "||", "&&", "@>",
     "<@", "~", "~*", "!~", "!~*", "~~", "~~*", "!~~", "!~~*", "->", "->>", "#>", "#>>", "?",
     "?|", "?&", "@?", "@@", "#-", "<<", ">>", "-|-", "&<", "&>", "<->", "#", "?-"}
)
# Prefix operators sqlglot reads (``*`` stands for itself: ``SELECT *``, ``count(*)``).
_PREFIX_OPERATORS: Final = frozenset({"-", "+", "~", "*"})
# Tokens after which an operator is a prefix one (they cannot end an operand).
_NOT_OPERAND_TYPES: Final = frozenset({_T.L_PAREN, _T.COMMA, _T.L_BRACKET, _T.DCOLON})
_NOT_OPERAND_WORDS: Final = frozenset(
    {"SELECT", "WHERE", "AND", "OR", "NOT", "WHEN", "THEN", "ELSE", "CASE", "ON", "HAVING", "BY",
     "ORDER BY", "GROUP BY", "PARTITION BY", "RETURNING", "IN", "IS", "LIKE", "ILIKE", "DISTINCT",
     "ALL", "ANY", "SOME", "BETWEEN", "AS", "FROM", "LIMIT", "OFFSET", "USING", "VALUE", "FILTER"}
)
_QUERY_WORDS: Final = frozenset({"SELECT", "WITH", "VALUES", "TABLE"})


def _synth(token_type: TokenType, text: str, at: Token) -> Token:
    """A token standing where ``at`` stood (errors keep pointing at the source)."""
    return Token(token_type, text, at.line, at.col, at.start, at.end)


def _upper(token: Token) -> str:
    return token.text.upper() if token.token_type not in (_T.STRING, _T.IDENTIFIER) else ""


def _is_op_char_token(token: Token) -> bool:
    text = token.text
    return bool(text) and token.token_type not in (_T.STRING, _T.IDENTIFIER) and all(
        char in _OPERATOR_CHARS for char in text
    )


def _operator_runs(tokens: list[Token]) -> list[tuple[int, int, str]]:
    """(first, end, text) of each run of adjacent operator tokens, split PostgreSQL's way."""
    runs: list[tuple[int, int, str]] = []
    i, size = 0, len(tokens)
    while i < size:
        if not _is_op_char_token(tokens[i]):
            i += 1
            continue
        j = i + 1
        while (
            j < size and _is_op_char_token(tokens[j]) and tokens[j].start == tokens[j - 1].end + 1
        ):
            j += 1
        text = "".join(tok.text for tok in tokens[i:j])
        # PostgreSQL: a multi-character operator ends in + or - only if it holds one of ~!@#%^&|`?
        if len(text) > 1 and not any(char in "~!@#%^&|`?" for char in text):
            while j - i > 1 and text[-1] in "+-" and tokens[j - 1].text in "+-":
                j -= 1
                text = text[:-1]
        runs.append((i, j, text))
        i = j
    return runs


def _operators(tokens: list[Token]) -> list[Token] | None:
    """Unknown binary operator runs -> ``OPERATOR(run)``; unknown prefix runs and prefix
    ``OPERATOR(...)`` are dropped."""
    out: list[Token] = []
    changed = False
    i = 0
    runs = {first: (end, text) for first, end, text in _operator_runs(tokens)}
    while i < len(tokens):
        token = tokens[i]
        prev = out[-1] if out else None
        binary = _ends_operand(prev)
        if prev is not None and prev.token_type == _T.USING:  # ORDER BY x USING op: see _words
            end = runs[i][0] if i in runs else i + 1
            out.extend(tokens[i:end])
            i = end
            continue
        if token.token_type == _T.OPERATOR and i + 1 < len(tokens) and (
            tokens[i + 1].token_type == _T.L_PAREN
        ):
            close = matching_paren(tokens, i + 1)
            if close > 0:  # OPERATOR(schema.op): one name sqlglot reads whole, or a prefix: gone
                changed = True
                if binary:
                    name = "".join(tok.text for tok in tokens[i + 2 : close])
                    out += (token, tokens[i + 1], _synth(_T.VAR, name, token), tokens[close])
                i = close + 1
                continue
        if i in runs:
            end, text = runs[i]
            if (text in _KNOWN_OPERATORS and binary) or text in _PREFIX_OPERATORS:
                out.extend(tokens[i:end])
            elif binary:
                changed = True
                out += (_synth(_T.OPERATOR, "OPERATOR", token), _synth(_T.L_PAREN, "(", token))
                out += (_synth(_T.VAR, text, token), _synth(_T.R_PAREN, ")", token))
            else:
                changed = True
            i = end
            continue
        out.append(token)
        i += 1
    return out if changed else None


def _ends_operand(prev: Token | None) -> bool:
    """True if an operator after ``prev`` is binary."""
    if prev is None or prev.token_type in _NOT_OPERAND_TYPES or _is_op_char_token(prev):
        return False
    return _upper(prev) not in _NOT_OPERAND_WORDS


def matching_paren(tokens: list[Token], at: int) -> int:
    """Index of the parenthesis closing the one at ``at``, else -1."""
    depth = 0
    for index in range(at, len(tokens)):
        token_type = tokens[index].token_type
        if token_type == _T.L_PAREN:
            depth += 1
        elif token_type == _T.R_PAREN:
            depth -= 1
            if depth == 0:
                return index
    return -1


def _words(tokens: list[Token]) -> list[Token] | None:
    """The keyword-level rewrites: join alias, COLLATION FOR, AT LOCAL, ORDER BY ... USING op,
    BIT VARYING."""
    out: list[Token] = []
    changed = False
    i = 0
    size = len(tokens)
    while i < size:
        token = tokens[i]
        word = _upper(token)
        nxt = _upper(tokens[i + 1]) if i + 1 < size else ""
        if token.token_type == _T.USING and i + 1 < size and tokens[i + 1].token_type == _T.L_PAREN:
            close = matching_paren(tokens, i + 1)
            if close > 0 and close + 2 < size and tokens[close + 1].token_type == _T.ALIAS:
                out.extend(tokens[i : close + 1])
                i = close + 3  # USING (...) AS x: the join alias goes
                changed = True
                continue
        if token.token_type == _T.USING and out and i + 1 < size and (
            tokens[i + 1].token_type != _T.L_PAREN or _upper(tokens[i + 1]) == "OPERATOR"
        ) and _in_order_by(out):
            # ORDER BY x USING op: skip the operator (a run, or OPERATOR(...))
            j = i + 1
            if tokens[j].token_type == _T.OPERATOR:
                close = matching_paren(tokens, j + 1)
                j = close + 1 if close > 0 else j + 1
            else:
                while j < size and _is_op_char_token(tokens[j]):
                    j += 1
            i = j
            changed = True
            continue
        if word == "IS":
            skip = 2 if nxt == "NOT" else 1
            length = _normalized_length(tokens, i + skip)
            if length:  # x IS [NOT] [form] NORMALIZED: read as x IS [NOT] NULL
                out.extend(tokens[i : i + skip])
                out.append(_synth(_T.NULL, "NULL", tokens[i + skip]))
                i += skip + length
                changed = True
                continue
        if (word, nxt) in _WORD_PAIRS:  # COLLATION FOR, BIT VARYING, AT LOCAL
            replacement = _WORD_PAIRS[word, nxt]
            if replacement:
                out.append(_synth(_T.VAR, replacement, token))
            i += 2
            changed = True
            continue
        out.append(token)
        i += 1
    return out if changed else None


# Two words and what replaces them ('' = nothing).
_WORD_PAIRS: Final = {
    ("COLLATION", "FOR"): "pg_collation_for",
    ("BIT", "VARYING"): "varbit",
    ("AT", "LOCAL"): "",
}


def _normalized_length(tokens: list[Token], at: int) -> int:
    """How many tokens ``[NFC|NFD|NFKC|NFKD] NORMALIZED`` at ``at`` spans, else 0."""
    words = [_upper(tok) for tok in tokens[at : at + 2]]
    if words[:1] == ["NORMALIZED"]:
        return 1
    if len(words) == 2 and words[0] in ("NFC", "NFD", "NFKC", "NFKD") and words[1] == "NORMALIZED":
        return 2
    return 0


def _in_order_by(before: list[Token]) -> bool:
    """True if the tokens so far end inside an ORDER BY list at the current depth."""
    depth = 0
    for token in reversed(before):
        if token.token_type == _T.R_PAREN:
            depth += 1
        elif token.token_type == _T.L_PAREN:
            if depth == 0:
                return False
            depth -= 1
        elif depth == 0 and token.token_type == _T.ORDER_BY:
            return True
        elif depth == 0 and _upper(token) in ("SELECT", "FROM", "WHERE", "ON", "JOIN"):
            return False
    return False


_REWRITES: Final[tuple[tuple[str, Callable[[list[Token]], list[Token] | None]], ...]] = (
    ("operators", _operators),
    ("keywords", _words),
)


def _skip_cte_clause(tokens: list[Token], at: int) -> int:
    """The index after a ``SEARCH ... SET col`` or ``CYCLE ... [USING col]`` clause starting at
    ``at`` (the clause's first word), or ``at`` when none starts there."""
    size = len(tokens)
    word = _upper(tokens[at]) if at < size else ""
    after = _upper(tokens[at + 1]) if at + 1 < size else ""
    if word == "SEARCH" and after in ("DEPTH", "BREADTH"):
        stop = "SET"
    elif word == "CYCLE" and at + 1 < size and tokens[at + 1].token_type != _T.L_PAREN:
        stop = "USING"
    else:
        return at
    i = at + 1
    while i < size and tokens[i].token_type not in (_T.L_PAREN, _T.R_PAREN, _T.SELECT):
        is_set = tokens[i].token_type == _T.SET
        if (stop == "SET" and is_set) or (stop == "USING" and not is_set
                                          and _upper(tokens[i]) == "USING"):
            return i + 2  # the column named after SET (SEARCH) or USING (CYCLE)
        i += 1
    return at


def cte_clauses(tokens: list[Token]) -> list[Token] | None:
    """The tokens without the ``SEARCH {DEPTH|BREADTH} FIRST BY ... SET col`` and ``CYCLE ...
    SET col [TO v DEFAULT v] USING col`` clauses of recursive CTEs (PostgreSQL 14), or None
    when there are none. Upstream: "postgres: SEARCH / CYCLE clauses of WITH RECURSIVE". They
    only add computed columns: no relation is read in them.

    sqlglot misreads some of these without failing, so this runs before the first parse.
    """
    out: list[Token] = []
    opens: list[int] = []  # indexes (in tokens) of the open parentheses
    changed = False
    i = 0
    size = len(tokens)
    while i < size:
        token = tokens[i]
        out.append(token)
        i += 1
        if token.token_type == _T.L_PAREN:
            opens.append(i - 1)
        elif token.token_type == _T.R_PAREN and opens:
            opener = opens.pop()
            before = _upper(tokens[opener - 1]) if opener > 0 else ""
            if before not in ("AS", "MATERIALIZED"):
                continue
            while (end := _skip_cte_clause(tokens, i)) != i:
                i = end
                changed = True
    return out if changed else None


def rewrite(tokens: list[Token]) -> tuple[list[Token], list[str]]:
    """Apply every deterministic rewrite; the tokens and the names of those that changed them."""
    applied: list[str] = []
    for name, function in _REWRITES:
        changed = function(tokens)
        if changed is not None:
            tokens = changed
            applied.append(name)
    return tokens, applied


def error_index(tokens: list[Token], line: object, col: object) -> int | None:
    """The index of the token a sqlglot ParseError points at (its line and end column)."""
    if not isinstance(line, int) or not isinstance(col, int):
        return None
    best: int | None = None
    for index, token in enumerate(tokens):
        if (token.line, token.col) <= (line, col):
            best = index
        else:
            break
    return best


def opaque_call(tokens: list[Token], at: int) -> list[Token] | None:
    """Replace the innermost call around token ``at`` by ``mvgraph_opaque_<name>(subqueries)``.

    Returns None when ``at`` stands in no call (nothing more to try).
    """
    opener = _opening_call(tokens, at)
    if opener is None:
        return None
    close = matching_paren(tokens, opener)
    name = tokens[opener - 1]
    inner = tokens[opener + 1 : close]
    kept: list[Token] = []
    for group in _subqueries(inner):
        if kept:
            kept.append(_synth(_T.COMMA, ",", group[0]))
        kept.extend(group)
    base = name.text.lower()
    if not base.startswith(OPAQUE_PREFIX):
        base = OPAQUE_PREFIX + base
    replaced = [_synth(_T.VAR, base, name), tokens[opener], *kept, tokens[close]]
    return tokens[: opener - 1] + replaced + tokens[close + 1 :]


def _opening_call(tokens: list[Token], at: int) -> int | None:
    """The ``(`` of the innermost ``name(...)`` holding token ``at`` (or opened right at it)."""
    depth = 0
    for index in range(min(at, len(tokens) - 1), -1, -1):
        token_type = tokens[index].token_type
        if token_type == _T.R_PAREN and index != at:
            depth += 1
        elif token_type == _T.L_PAREN:
            if depth > 0:
                depth -= 1
                continue
            named = index > 0 and _is_callable_name(tokens[index - 1])
            if named and matching_paren(tokens, index) > 0:
                return index
    return None


def _is_callable_name(token: Token) -> bool:
    if token.token_type in (_T.IDENTIFIER, _T.STRING, _T.NUMBER):
        return token.token_type == _T.IDENTIFIER
    return token.text.replace("_", "a").isalnum() and _upper(token) not in (
        "IN", "EXISTS", "ANY", "ALL", "SOME", "ARRAY", "AS", "ON", "USING", "VALUES", "FROM",
        "JOIN", "LATERAL", "OVER", "FILTER", "WITHIN", "AND", "OR", "NOT", "SELECT", "WHERE",
        "BY", "WINDOW", "WHEN", "THEN", "ELSE", "CASE", "END",
    )


def _subqueries(inner: list[Token]) -> list[list[Token]]:
    """The parenthesised queries among ``inner``'s tokens, and a leading bare query cut at a
    top-level RETURNING (``JSON_ARRAY(SELECT ... RETURNING t)``), each as ``( ... )`` tokens."""
    groups: list[list[Token]] = []
    if inner and _upper(inner[0]) in _QUERY_WORDS:
        depth, end = 0, len(inner)
        for index, token in enumerate(inner):
            if token.token_type == _T.L_PAREN:
                depth += 1
            elif token.token_type == _T.R_PAREN:
                depth -= 1
            elif depth == 0 and token.token_type == _T.RETURNING:
                end = index
                break
        left, right = _synth(_T.L_PAREN, "(", inner[0]), _synth(_T.R_PAREN, ")", inner[end - 1])
        return [[left, *inner[:end], right]]
    index = 0
    while index < len(inner):
        token = inner[index]
        if (
            token.token_type == _T.L_PAREN
            and index + 1 < len(inner)
            and _upper(inner[index + 1]) in _QUERY_WORDS
        ):
            close = matching_paren(inner, index)
            if close > 0:
                groups.append(inner[index : close + 1])
                index = close + 1
                continue
        index += 1
    return groups


def special_call(tokens: list[Token]) -> int | None:
    """The first token inside an ``XML...(`` or ``JSON...(`` call not yet made opaque: where to
    go on when the parser crashed without saying where (``XMLTABLE ... FOR ORDINALITY`` raises
    TypeError in sqlglot 30)."""
    for index in range(len(tokens) - 2):
        word = _upper(tokens[index])
        if word.startswith(("XML", "JSON")) and tokens[index + 1].token_type == _T.L_PAREN:
            return index + 2
    return None
