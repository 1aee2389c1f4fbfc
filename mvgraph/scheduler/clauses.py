"""The values of GaussDB's ``START WITH (...)`` and ``EVERY (...)`` clauses, read as values.

A schedule clause comes from a SQL file or a statement someone else may have written, and is
evaluated by whoever applies it (an administrator running ``schedule sync --from-sql`` or
``mvgraph sql``). So it is never sent to the server as written. :func:`compile_clause` parses it
(sqlglot's tokenizer, then the small grammar below) and accepts only values:

- literals: ``'...'`` strings and numbers;
- ``interval '...'`` with optional field qualifiers (``interval '1' hour``,
  ``interval '1-2' year to month``), ``timestamp '...'``, ``timestamptz '...'``,
  ``date '...'``;
- casts to a date/time type: ``x::timestamptz``, ``CAST(x AS timestamp with time zone)``,
  ``x::date``, ``x::interval [fields]``;
- the clock: ``now()``, ``current_timestamp[(p)]``, ``current_date``, ``localtimestamp[(p)]``,
  ``sysdate`` (GaussDB's: the local time to the second);
- ``to_date('...', '...')``, ``to_timestamp('...', '...')`` and ``date_trunc('unit', x)``;
- ``+``, ``-`` (also unary), ``*``, ``/`` and parentheses.

Anything else (another function, a subquery, a column, another operator, a quoted identifier,
an E'' or dollar-quoted string) is a :class:`ClauseError`. What is accepted is rebuilt as SQL
that the server cannot resolve to anything a user defined: every function and operator is
written ``pg_catalog``-qualified (``pg_catalog.now()``, ``OPERATOR(pg_catalog.+)``), type names
are the grammar's own keywords (which PostgreSQL maps to ``pg_catalog`` types without looking at
``search_path``) or qualified, and strings go through psycopg's quoting. The server then
computes the value exactly as it computed the clause before (time zones, interval input,
daylight saving), without running code a user could have defined.

sqlglot's parser is not used for the tree: it rewrites intervals (``interval '1 h'`` becomes
``INTERVAL '1' HOUR``, ``interval 'a' 'b'`` a sum) and reads ``sysdate`` as a column, so the
value it would give back is not the one written.
"""

from __future__ import annotations

import re
from typing import Final

from psycopg import sql
from sqlglot.errors import TokenError
from sqlglot.tokenizer_core import Token, TokenType

from mvgraph.sql.dialect import MvgraphPostgres

ACCEPTED: Final = ("a literal, interval '...', a cast of a literal, now() / current_timestamp / "
                   "current_date / localtimestamp / sysdate, and + - * / on them")

_NUMBER_RE: Final = re.compile(r"\d+(\.\d*)?([eE][+-]?\d+)?\Z")
_FIELDS: Final = ("YEAR", "MONTH", "DAY", "HOUR", "MINUTE", "SECOND")
_SPANS: Final = {("YEAR", "MONTH"), ("DAY", "HOUR"), ("DAY", "MINUTE"), ("DAY", "SECOND"),
                 ("HOUR", "MINUTE"), ("HOUR", "SECOND"), ("MINUTE", "SECOND")}
# Tokens that are names or keywords (compared by their upper-case text); a quoted identifier
# (TokenType.IDENTIFIER) is never one of them.
_PUNCT: Final = frozenset({TokenType.L_PAREN, TokenType.R_PAREN, TokenType.COMMA,
                           TokenType.PLUS, TokenType.DASH, TokenType.STAR, TokenType.SLASH,
                           TokenType.DCOLON, TokenType.DOT, TokenType.STRING, TokenType.NUMBER,
                           TokenType.IDENTIFIER})
_OTHER_STRINGS: Final = frozenset({TokenType.BYTE_STRING, TokenType.HEREDOC_STRING,
                                   TokenType.UNICODE_STRING, TokenType.BIT_STRING,
                                   TokenType.HEX_STRING, TokenType.NATIONAL_STRING,
                                   TokenType.RAW_STRING})
_QUALIFIABLE: Final = frozenset({"NOW", "TO_DATE", "TO_TIMESTAMP", "DATE_TRUNC"})
_OPERATORS: Final = {TokenType.PLUS: "+", TokenType.DASH: "-", TokenType.STAR: "*",
                     TokenType.SLASH: "/"}


class ClauseError(ValueError):
    """A schedule clause that is not a value; the message names the part refused."""


def compile_clause(text: str) -> sql.Composed:
    """The clause rebuilt as SQL calling nothing a user can define.

    >>> from psycopg import sql
    >>> compile_clause("now() + interval '1' hour").as_string(None)
    "(((pg_catalog.now()) OPERATOR(pg_catalog.+) (interval '1' HOUR)))"

    Raises:
        ClauseError: anything but a value (see the module's docstring).
    """
    try:
        tokens = list(MvgraphPostgres().tokenize(text))
    except TokenError:
        raise ClauseError("it does not read as SQL (an unterminated string or comment?)"
                          ) from None
    if not tokens:
        raise ClauseError("it is empty")
    parser = _Parser(tokens)
    value = parser.expr()
    if not parser.at_end():
        raise ClauseError(f"unexpected {parser.describe()} after the value")
    return sql.Composed([sql.SQL("("), value, sql.SQL(")")])


def check_clause(text: str) -> str | None:
    """Why the clause is not a value, or None if it is one (pure: nothing is evaluated)."""
    try:
        compile_clause(text)
    except ClauseError as exc:
        return str(exc)
    return None


def clause_message(label: str, text: str, reason: str) -> str:
    """One line: which clause, what in it is refused, and what to write instead."""
    shown = " ".join(text.split())
    if len(shown) > 120:
        shown = shown[:117] + "..."
    return (f"{label} ({shown}) is not a value: {reason}; a schedule clause may hold "
            f"{ACCEPTED} (nothing in it is run)")


class _Parser:
    """Recursive descent over the tokens, building the safe SQL as it goes."""

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.i = 0

    # ---- cursor ---------------------------------------------------------------------------
    def at_end(self) -> bool:
        return self.i >= len(self.tokens)

    def peek(self, ahead: int = 0) -> Token | None:
        at = self.i + ahead
        return self.tokens[at] if at < len(self.tokens) else None

    def word(self, ahead: int = 0) -> str | None:
        """The upper-case text of a name or keyword token (not a quoted identifier)."""
        tok = self.peek(ahead)
        if tok is None or tok.token_type in _PUNCT or tok.token_type in _OTHER_STRINGS:
            return None
        return tok.text.upper()

    def is_type(self, kind: TokenType, ahead: int = 0) -> bool:
        tok = self.peek(ahead)
        return tok is not None and tok.token_type == kind

    def take(self) -> Token:
        tok = self.peek()
        if tok is None:
            raise ClauseError("it ends too early")
        self.i += 1
        return tok

    def expect(self, kind: TokenType, what: str) -> Token:
        if not self.is_type(kind):
            raise ClauseError(f"expected {what}, found {self.describe()}")
        return self.take()

    def accept_words(self, *words: str) -> bool:
        if all(self.word(k) == w for k, w in enumerate(words)):
            self.i += len(words)
            return True
        return False

    def describe(self) -> str:
        tok = self.peek()
        if tok is None:
            return "the end"
        if tok.token_type == TokenType.STRING:
            return "a string"
        return repr(tok.text)

    # ---- grammar --------------------------------------------------------------------------
    def expr(self) -> sql.Composable:
        left = self.term()
        while self.is_type(TokenType.PLUS) or self.is_type(TokenType.DASH):
            op = _OPERATORS[self.take().token_type]
            left = _binary(left, op, self.term())
        return left

    def term(self) -> sql.Composable:
        left = self.factor()
        while self.is_type(TokenType.STAR) or self.is_type(TokenType.SLASH):
            op = _OPERATORS[self.take().token_type]
            left = _binary(left, op, self.factor())
        return left

    def factor(self) -> sql.Composable:
        if self.is_type(TokenType.PLUS) or self.is_type(TokenType.DASH):
            op = _OPERATORS[self.take().token_type]
            return sql.Composed([sql.SQL(f"(OPERATOR(pg_catalog.{op}) "), self.factor(),
                                 sql.SQL(")")])
        return self.postfix()

    def postfix(self) -> sql.Composable:
        value = self.primary()
        while self.is_type(TokenType.DCOLON):
            self.take()
            value = _cast(value, self.type_name())
        return value

    def primary(self) -> sql.Composable:
        tok = self.peek()
        if tok is None:
            raise ClauseError("a value is missing")
        kind = tok.token_type
        if kind == TokenType.L_PAREN:
            self.take()
            if self.word() in ("SELECT", "WITH", "VALUES", "TABLE"):
                raise ClauseError("a subquery is not a value")
            inner = self.expr()
            self.expect(TokenType.R_PAREN, "')'")
            return sql.Composed([sql.SQL("("), inner, sql.SQL(")")])
        if kind == TokenType.STRING:
            self.take()
            if self.is_type(TokenType.STRING):
                raise ClauseError("two strings in a row")
            return sql.Literal(tok.text)
        if kind == TokenType.NUMBER:
            self.take()
            if not _NUMBER_RE.match(tok.text):
                raise ClauseError(f"{tok.text!r} is not a plain number")
            return sql.SQL(tok.text)  # digits, a dot, an exponent: checked just above
        if kind in _OTHER_STRINGS:
            raise ClauseError(f"write strings as plain '...' literals, not {tok.text!r} "
                              "in E'', U&'', $$...$$ or bit/hex form")
        if kind == TokenType.IDENTIFIER:
            raise ClauseError(f'"{tok.text}" is a quoted name, not a value')
        return self.keyword()

    def keyword(self) -> sql.Composable:
        word = self.word() or ""
        if word == "PG_CATALOG" and self.is_type(TokenType.DOT, 1) \
                and self.word(2) in _QUALIFIABLE and self.is_type(TokenType.L_PAREN, 3):
            self.i += 2  # pg_catalog.now() and the like: the same functions
            word = self.word() or ""
        if word == "INTERVAL" and self.is_type(TokenType.STRING, 1):
            self.take()
            literal = sql.Literal(self.take().text)
            fields = self.interval_fields()
            return sql.Composed([sql.SQL("interval "), literal,
                                 sql.SQL(f" {fields}" if fields else "")])
        if word in ("TIMESTAMP", "TIMESTAMPTZ", "DATE"):
            start = self.i
            target = self.type_name()
            if self.is_type(TokenType.STRING):  # timestamp '...': a typed literal
                return _cast(sql.Literal(self.take().text), target)
            self.i = start
        if word == "CAST" and self.is_type(TokenType.L_PAREN, 1):
            self.i += 2
            value = self.expr()
            if self.word() != "AS":
                raise ClauseError(f"expected AS in CAST(...), found {self.describe()}")
            self.take()
            target = self.type_name()
            self.expect(TokenType.R_PAREN, "')' closing CAST(")
            return _cast(value, target)
        if word == "NOW" and self.is_type(TokenType.L_PAREN, 1):
            self.i += 2
            self.expect(TokenType.R_PAREN, "')' after now(")
            return sql.SQL("pg_catalog.now()")
        if word in ("CURRENT_TIMESTAMP", "LOCALTIMESTAMP"):
            self.take()
            precision = self.precision()
            return sql.SQL(word + (f"({precision})" if precision is not None else ""))
        if word == "CURRENT_DATE":
            self.take()
            return sql.SQL("CURRENT_DATE")
        if word == "SYSDATE":
            self.take()
            return sql.SQL("LOCALTIMESTAMP(0)")  # GaussDB's sysdate: local time, whole seconds
        if word in ("TO_DATE", "TO_TIMESTAMP") and self.is_type(TokenType.L_PAREN, 1):
            self.i += 2
            first = self.string(f"{word.lower()}'s first argument")
            self.expect(TokenType.COMMA, f"',' in {word.lower()}(...)")
            second = self.string(f"{word.lower()}'s format")
            self.expect(TokenType.R_PAREN, f"')' closing {word.lower()}(")
            return sql.Composed([sql.SQL(f"pg_catalog.{word.lower()}("), first, sql.SQL(", "),
                                 second, sql.SQL(")")])
        if word == "DATE_TRUNC" and self.is_type(TokenType.L_PAREN, 1):
            self.i += 2
            unit = self.string("date_trunc's unit")
            self.expect(TokenType.COMMA, "',' in date_trunc(...)")
            value = self.expr()
            self.expect(TokenType.R_PAREN, "')' closing date_trunc(")
            return sql.Composed([sql.SQL("pg_catalog.date_trunc("), unit, sql.SQL(", "), value,
                                 sql.SQL(")")])
        tok = self.peek()
        assert tok is not None
        if self.is_type(TokenType.L_PAREN, 1) or (self.is_type(TokenType.DOT, 1)):
            name = self._dotted()
            if self.is_type(TokenType.L_PAREN):
                raise ClauseError(f"{name}(...) is a function call")
            raise ClauseError(f"{name} is a name (a column or table), not a value")
        if tok.token_type == TokenType.VAR:
            raise ClauseError(f"{tok.text} is a name (a column or table), not a value")
        raise ClauseError(f"{tok.text!r} is not allowed here")

    def _dotted(self) -> str:
        parts = [self.take().text]
        while self.is_type(TokenType.DOT) and self.peek(1) is not None:
            self.take()
            parts.append(self.take().text)
        return ".".join(parts)

    def string(self, what: str) -> sql.Composable:
        if not self.is_type(TokenType.STRING):
            raise ClauseError(f"{what} must be a plain '...' string, found {self.describe()}")
        return sql.Literal(self.take().text)

    def precision(self) -> int | None:
        """``(p)`` with p a small whole number, or None."""
        if not self.is_type(TokenType.L_PAREN):
            return None
        self.take()
        tok = self.expect(TokenType.NUMBER, "a precision")
        if not tok.text.isdigit() or int(tok.text) > 6:
            raise ClauseError(f"precision {tok.text!r} must be a whole number from 0 to 6")
        self.expect(TokenType.R_PAREN, "')' after the precision")
        return int(tok.text)

    def interval_fields(self) -> str:
        """``YEAR``, ``DAY TO SECOND(3)``, ... after an interval (or ''), checked."""
        first = self.word()
        if first not in _FIELDS:
            if self.is_type(TokenType.L_PAREN):
                raise ClauseError("write interval precision as a field: interval '...' "
                                  "second(p)")
            return ""
        self.take()
        out = first
        if self.word() == "TO":
            self.take()
            last = self.word()
            if last is None or (first, last) not in _SPANS:
                raise ClauseError(f"interval {first} TO {self.describe()} is not an interval "
                                  "range")
            self.take()
            out, first = f"{first} TO {last}", last
        if first == "SECOND":
            precision = self.precision()
            if precision is not None:
                out += f"({precision})"
        return out

    def type_name(self) -> sql.Composable:
        """A date/time type, written so that the server does not look it up in search_path."""
        word = self.word()
        if word == "PG_CATALOG" and self.is_type(TokenType.DOT, 1):
            self.i += 2
            word = self.word()
        if word == "TIMESTAMPTZ":
            self.take()
            precision = self.precision()
            return sql.SQL(_timestamp(precision, True))
        if word == "TIMESTAMP":
            self.take()
            precision = self.precision()
            zoned = False
            if self.accept_words("WITH", "TIME", "ZONE"):
                zoned = True
            else:
                self.accept_words("WITHOUT", "TIME", "ZONE")
            return sql.SQL(_timestamp(precision, zoned))
        if word == "DATE":
            self.take()
            return sql.SQL("pg_catalog.date")
        if word == "INTERVAL":
            self.take()
            fields = self.interval_fields()
            return sql.SQL("interval" + (f" {fields}" if fields else ""))
        raise ClauseError(f"a cast to {self.describe()}: only timestamp, timestamptz, date and "
                          "interval are schedule values")


def _timestamp(precision: int | None, zoned: bool) -> str:
    p = f"({precision})" if precision is not None else ""
    return f"timestamp{p} {'with' if zoned else 'without'} time zone"


def _cast(value: sql.Composable, target: sql.Composable) -> sql.Composed:
    return sql.Composed([sql.SQL("CAST("), value, sql.SQL(" AS "), target, sql.SQL(")")])


def _binary(left: sql.Composable, op: str, right: sql.Composable) -> sql.Composed:
    """Parenthesised: OPERATOR(...) has its own precedence in PostgreSQL's grammar."""
    return sql.Composed([sql.SQL("(("), left, sql.SQL(f") OPERATOR(pg_catalog.{op}) ("), right,
                         sql.SQL("))")])
