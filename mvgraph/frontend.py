"""The SQL front-end (``mvgraph sql``): GaussDB statement forms become library calls; every other
statement goes to PostgreSQL unchanged."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psycopg
from sqlglot.errors import TokenError
from sqlglot.tokenizer_core import Token, TokenType

from mvgraph.dialect import MvgraphPostgres, split_statements
from mvgraph.errors import DatabaseError, MvgraphError, SqlParseError, translate
from mvgraph.names import quote_ident
from mvgraph.refresh.behavior import CASCADE_HINT, RefreshBehavior
from mvgraph.refresh.executor import RefreshReport

if TYPE_CHECKING:
    from mvgraph.scheduler.statements import GaussStatement

Conn = psycopg.Connection[tuple[object, ...]]

_BEHAVIOR_WORDS = {"DEFAULT", "RESTRICT", "CASCADE", "FORWARD", "BACKWARD", "ALL"}
_DIRECTIONS = {"FORWARD", "BACKWARD", "ALL"}


@dataclass(frozen=True, slots=True)
class RefreshStatement:
    """``REFRESH MATERIALIZED VIEW [CONCURRENTLY] name [behaviour]`` in GaussDB's form."""

    name: str  # as written, quoted where needed; resolved through the search path when bare
    behavior: RefreshBehavior
    concurrently: bool


@dataclass(slots=True)
class Outcome:
    """What one statement of a script did."""

    line: int
    text: str
    report: RefreshReport | None = None
    columns: list[str] = field(default_factory=list)
    rows: list[tuple[object, ...]] = field(default_factory=list)
    status: str = ""
    notices: list[str] = field(default_factory=list)  # e.g. GaussDB clauses dropped


def parse_refresh(text: str) -> RefreshStatement | None:
    """Recognise the GaussDB REFRESH form; None for anything else (``WITH [NO] DATA`` included).

    >>> parse_refresh("refresh materialized view S.mv5 cascade all")  # doctest: +ELLIPSIS
    RefreshStatement(name='s.mv5', behavior=<...CASCADE_ALL...>, concurrently=False)
    >>> parse_refresh("REFRESH MATERIALIZED VIEW mv WITH NO DATA") is None
    True

    Raises:
        SqlParseError: a string literal for the name, or a behaviour outside GaussDB's grammar
            (a bare CASCADE, say).
    """
    dialect = MvgraphPostgres()
    try:
        head = [t for t in dialect.tokenize(text) if t.token_type != TokenType.SEMICOLON]
        # sqlglot reads REFRESH as a command whose arguments are one string: tokenise them too
        if len(head) != 2 or head[0].token_type != TokenType.COMMAND \
                or head[0].text.upper() != "REFRESH":
            return None
        tokens = dialect.tokenize(head[1].text)
    except TokenError:
        return None
    words = [_word(t) for t in tokens]
    if words[:2] != ["MATERIALIZED", "VIEW"]:
        return None
    i = 2
    concurrently = i < len(words) and words[i] == "CONCURRENTLY"
    i += int(concurrently)
    parts: list[str] = []
    while i < len(tokens) and len(parts) < 2:
        if tokens[i].token_type == TokenType.STRING:
            raise _syntax(text, f"the view name '{tokens[i].text}' is a string literal; write "
                                "it as a name, e.g. mv5 or \"Mv 5\"")
        part = _name_part(tokens[i])
        if part is None:
            return None
        parts.append(part)
        i += 1
        if i < len(tokens) and tokens[i].token_type == TokenType.DOT:
            i += 1
        else:
            break
    behavior = _behavior(text, words[i:])
    if not parts or behavior is None:
        return None
    return RefreshStatement(".".join(quote_ident(p) for p in parts), behavior, concurrently)


def _behavior(text: str, rest: list[str]) -> RefreshBehavior | None:
    """GaussDB's ``[DEFAULT | RESTRICT | CASCADE {FORWARD | BACKWARD | ALL}]``; None when the
    words are not a behaviour at all (``WITH NO DATA``: PostgreSQL's own form)."""
    if not rest:
        return RefreshBehavior.DEFAULT
    if rest[0] not in _BEHAVIOR_WORDS:
        return None
    if rest in (["DEFAULT"], ["RESTRICT"]) or (
            len(rest) == 2 and rest[0] == "CASCADE" and rest[1] in _DIRECTIONS):
        return RefreshBehavior.parse(" ".join(rest))
    if rest == ["CASCADE"]:
        raise _syntax(text, f"bare CASCADE has no direction; {CASCADE_HINT}")
    raise _syntax(text, f"unexpected {' '.join(rest)!r} after the view name; use DEFAULT, "
                        f"RESTRICT or a cascade ({CASCADE_HINT})")


def _syntax(text: str, message: str) -> SqlParseError:
    return SqlParseError(f"syntax error: {message}", statement=text.strip().split("\n", 1)[0])


def _name_part(tok: Token) -> str | None:
    if tok.token_type == TokenType.IDENTIFIER:
        return tok.text
    if tok.text.replace("$", "_").isidentifier():
        return tok.text.lower()
    return None


def _word(tok: Token) -> str:
    return tok.text.upper() if tok.token_type != TokenType.IDENTIFIER else f'"{tok.text}"'


def _refresh_form(statement: str, source: str, line: int) -> RefreshStatement | None:
    try:
        return parse_refresh(statement)
    except SqlParseError as exc:
        raise SqlParseError(exc.message, source, line, exc.statement) from None


def _gauss_form(statement: str, source: str, line: int) -> GaussStatement | None:
    from mvgraph.scheduler.statements import classify

    try:
        return classify(statement)
    except SqlParseError as exc:
        raise SqlParseError(exc.message, source, line, exc.statement) from None


def _at(exc: MvgraphError, source: str, line: int) -> MvgraphError:
    """The same error, its message prefixed with where the statement is."""
    if isinstance(exc, DatabaseError):
        return type(exc)(f"{source}:{line}: {exc}", exc.sqlstate)
    try:
        return type(exc)(f"{source}:{line}: {exc}")
    except TypeError:
        return exc


def execute_script(conn: Conn, text: str, *, source: str = "<sql>",
                   search_path: Sequence[str] = ("public",),
                   parallel: int = 1) -> Iterator[Outcome]:
    """Run a script statement by statement (autocommit), yielding each outcome.

    Raises:
        SqlParseError: a GaussDB REFRESH form is malformed (checked before anything runs).
        DatabaseError: a statement failed; the message names its line. Earlier statements stay.
    """
    from mvgraph.refresh.service import refresh
    from mvgraph.scheduler import statements as gauss

    statements = [(line, statement, _refresh_form(statement, source, line),
                   _gauss_form(statement, source, line))
                  for line, statement in split_statements(text)]  # no statement runs if any is bad
    for line, statement, refresh_stmt, gauss_stmt in statements:
        if gauss_stmt is not None:
            try:
                done = gauss.run(conn, gauss_stmt, f"{source}:{line}")
            except MvgraphError as exc:
                raise _at(exc, source, line) from exc
            yield Outcome(line, statement, status=done.status, notices=done.notices)
            continue
        if refresh_stmt is not None:
            report = refresh(conn, [refresh_stmt.name], refresh_stmt.behavior.value,
                             concurrently="always" if refresh_stmt.concurrently else "auto",
                             parallel=parallel, search_path=search_path)
            yield Outcome(line, statement, report=report, status="REFRESH MATERIALIZED VIEW")
            continue
        try:
            cur = conn.execute(statement.encode())  # bytes: passed untouched, no placeholders
        except psycopg.Error as exc:
            err = translate(exc)
            raise DatabaseError(f"{source}:{line}: {err}", getattr(err, "sqlstate", None)
                                ) from exc
        outcome = Outcome(line, statement, status=cur.statusmessage or "")
        if cur.description is not None:
            outcome.columns = [d.name for d in cur.description]
            outcome.rows = cur.fetchall()
        yield outcome
