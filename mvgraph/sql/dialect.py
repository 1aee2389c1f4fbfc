"""SQL front end: a PostgreSQL dialect with GaussDB's materialized-view clauses, and script events.

Two things live here.

``MvgraphPostgres`` is a sqlglot dialect: PostgreSQL plus GaussDB's materialized-view
maintenance clauses::

    CREATE MATERIALIZED VIEW v
        [BUILD {DEFERRED | IMMEDIATE}]
        [REFRESH [DEFAULT | RESTRICT | CASCADE {FORWARD | BACKWARD | ALL}]
                 [START WITH (timestamptz)] [EVERY (interval)]]
        [{ENABLE | DISABLE} QUERY REWRITE]
        AS query [WITH [NO] DATA];
    ALTER MATERIALIZED VIEW v REFRESH [behaviour] [START WITH (...)] [EVERY (...)];
    ALTER MATERIALIZED VIEW v {ENABLE | DISABLE} QUERY REWRITE;

Why the extension sits at the dialect level: with ``sqlglot[c]`` installed, sqlglot's parser,
generator and expression classes are mypyc-compiled, and an interpreted class can neither
subclass them nor be instantiated as one of them ("interpreted classes cannot inherit from
compiled"). So ``MvgraphPostgres`` overrides the interpreted ``Dialect.parse`` and
``Dialect.generate``: statements of the forms above (and every ``CREATE [MATERIALIZED] VIEW``,
plus ``ALTER ... RENAME TO / SET SCHEMA``) are read by a small recursive-descent parser over
sqlglot's own tokens, which hands each embedded query and expression to the compiled Postgres
parser; every other statement goes to the Postgres parser unchanged. The trees are made of stock
sqlglot nodes:

* ``REFRESH ...`` is an ``exp.RefreshTriggerProperty`` (``method`` = behaviour as an
  ``exp.Var`` or None, ``starts`` / ``every`` = the parsed expressions; the source text of
  both is kept in ``meta``);
* ``{ENABLE|DISABLE} QUERY REWRITE`` is an ``exp.Property(this=Var('QUERY REWRITE'),
  value=Var('ENABLE'))``; ``BUILD x`` an ``exp.BuildProperty``; ``WITH [NO] DATA`` an
  ``exp.WithDataProperty``;
* ``ALTER ... SET SCHEMA s`` is an ``exp.AlterSet(option=Var('SCHEMA'), expressions=[s])``.

``MvgraphPostgres().generate`` turns these back into GaussDB/PostgreSQL text (expressions are
regenerated from the tree, so ``interval '1 s'`` comes back as ``INTERVAL '1 SECOND'``).
``parse_alter_refresh`` reads one ALTER MATERIALIZED VIEW ... REFRESH statement, and
``split_statements`` splits a script into (line, text) pairs the same way ``parse_script`` does.

``parse_script`` turns a SQL script into a list of events (:class:`Define`, :class:`Rename`,
:class:`Drop`, :class:`AlterSchedule`), pure and without I/O. The script is tokenised once;
statements are split on the semicolon tokens (strings, quoted identifiers and ``$$`` bodies are
single tokens, so their semicolons never split), and only the statements that matter are parsed.

Name resolution is PostgreSQL's, as far as one script can tell: unquoted identifiers fold to
lower case, quoted ones are kept exactly, a schema-qualified name is kept. An unqualified
``CREATE`` target goes to the first schema of the search path. An unqualified *read* goes to the
first search-path schema in which the script itself defined that name earlier, else to the first
search-path schema. The script cannot see relations defined elsewhere, so each :class:`Define`
also carries the bare names it resolved that way (``unqualified``) and the search path in force
(``search_path``): the loader, which knows every definition, re-resolves them.
"""

from __future__ import annotations

import gc
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING, Final

from sqlglot import exp
from sqlglot.dialects.postgres import Postgres
from sqlglot.errors import ParseError, SqlglotError, TokenError
from sqlglot.optimizer.normalize_identifiers import normalize_identifiers
from sqlglot.optimizer.scope import traverse_scope
from sqlglot.tokenizer_core import Token, TokenType

from mvgraph.errors import SqlParseError
from mvgraph.model.definitions import Definition, Kind, Schedule
from mvgraph.model.names import RelationName, quote_ident
from mvgraph.sql import lexer, recovery
from mvgraph.sql.events import AlterSchedule, Define, Drop, Event, Rename, ScriptResult

if TYPE_CHECKING:
    from typing import Unpack

    from sqlglot._typing import GeneratorArgs, ParserArgs
    from sqlglot.parser import Parser

__all__ = [
    "VOLATILE_FUNCTIONS",
    "AlterSchedule",
    "Define",
    "Drop",
    "Event",
    "MvgraphPostgres",
    "RelationHead",
    "Rename",
    "ScriptResult",
    "dependencies",
    "parse_alter_refresh",
    "parse_script",
    "relation_head",
    "split_statements",
    "without_psql",
]

VOLATILE_FUNCTIONS: Final[frozenset[str]] = frozenset(
    {
        # Time: STABLE in PostgreSQL, but they make a materialized view's content depend on
        # when it was refreshed, which is what matters here.
        "now",
        "current_timestamp",
        "current_date",
        "current_time",
        "localtime",
        "localtimestamp",
        "clock_timestamp",
        "statement_timestamp",
        "transaction_timestamp",
        "timeofday",
        # Randomness, sequences and transaction ids.
        "random",
        "random_normal",
        "gen_random_uuid",
        "uuid_generate_v4",
        "nextval",
        "currval",
        "setval",
        "lastval",
        "setseed",
        "txid_current",
        "pg_current_xact_id",
    }
)
"""Built-in functions whose result changes from one refresh to the next."""

# SQL keywords that stand for a call without parentheses.
_KEYWORD_FUNCTIONS: Final = frozenset(
    {"current_timestamp", "current_date", "current_time", "localtime", "localtimestamp"}
)

_BEHAVIOURS: Final = {"DEFAULT": (), "RESTRICT": (), "CASCADE": ("FORWARD", "BACKWARD", "ALL")}

# Keys of the ``meta`` dictionaries this module puts on sqlglot nodes.
META_START_SQL: Final = "mvgraph_start_sql"
META_EVERY_SQL: Final = "mvgraph_every_sql"
META_QUERY_SQL: Final = "mvgraph_query_sql"
META_VOLATILE: Final = "mvgraph_volatile_functions"
META_CHECK_OPTION: Final = "mvgraph_check_option"
META_RECURSIVE: Final = "mvgraph_recursive"
META_RECOVERED: Final = "mvgraph_recovered"  # rewrites of mvgraph.sql.recovery a parse needed
_QUERY_REWRITE: Final = "QUERY REWRITE"


# The events (plain data) live in mvgraph.sql.events; they are re-exported from here.


# --------------------------------------------------------------------------- tokens

_T = TokenType
_NOT_WORDS: Final = frozenset(
    {
        _T.STRING,
        _T.NUMBER,
        _T.IDENTIFIER,
        _T.BIT_STRING,
        _T.HEX_STRING,
        _T.BYTE_STRING,
        _T.NATIONAL_STRING,
        _T.NATIONAL_RAW_STRING,
        _T.RAW_STRING,
        _T.HEREDOC_STRING,
        _T.UNICODE_STRING,
    }
)
_WORD_RE: Final = re.compile(r"[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_$\x80-\U0010ffff]*\Z")
_ASCII_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _fold(text: str) -> str:
    """Fold an unquoted identifier the way PostgreSQL does (ASCII letters only)."""
    return text.translate(_ASCII_LOWER)


def _word(token: Token | None) -> str:
    """The upper-cased text of a keyword or bare-word token, else ''."""
    if token is None or token.token_type in _NOT_WORDS:
        return ""
    text = token.text
    if text.isidentifier() or _WORD_RE.match(text):
        return text.upper()
    parts = text.split()  # sqlglot has multi-word keyword tokens such as "PARTITION BY"
    if len(parts) > 1 and all(_WORD_RE.match(part) for part in parts):
        return " ".join(parts).upper()
    return ""


def _ident(token: Token | None) -> tuple[str, bool] | None:
    """The identifier a token spells, as (name, quoted), or None if it spells none."""
    if token is None:
        return None
    if token.token_type == _T.IDENTIFIER:
        return token.text, True
    if _word(token):
        return _fold(token.text), False
    return None


@dataclass(slots=True)
class _Statement:
    """One statement's tokens; token offsets index ``sql``, which starts on line
    ``line_offset + 1`` of its file, at column ``col_offset + 1``.

    Lines and columns are counted from token offsets, never taken from sqlglot's tokens (its
    tokenizer miscounts lines after a ``$1`` parameter)."""

    tokens: list[Token]
    sql: str
    line_offset: int = 0
    col_offset: int = 0

    @property
    def line(self) -> int:
        return self.position(self.tokens[0].start)[0]

    def position(self, offset: int) -> tuple[int, int]:
        """The file's (line, column), both 1-based, of offset ``offset`` of ``sql``."""
        newlines = self.sql.count("\n", 0, offset)
        line_start = self.sql.rfind("\n", 0, offset) + 1
        column = offset - line_start + 1 + (self.col_offset if newlines == 0 else 0)
        return newlines + 1 + self.line_offset, column

    def first_line(self) -> str:
        start = self.tokens[0].start
        end = self.sql.find("\n", start)
        return self.sql[start : end if end >= 0 else len(self.sql)].strip()

    def text(self, first: Token, last: Token) -> str:
        return self.sql[first.start : last.end + 1]


def _split_statements(tokens: list[Token]) -> Iterator[list[Token]]:
    """Split a token list into statements on semicolons.

    A ``CREATE FUNCTION/PROCEDURE ... BEGIN ATOMIC ... END`` body holds semicolons of its own;
    like psql, the split waits for the END that closes it. A psql meta-command that starts a
    statement (pg_dump writes ``\\restrict``, ``\\connect``) is a statement of its own line.
    """
    semi = _T.SEMICOLON
    size = len(tokens)
    ends = [i for i, tok in enumerate(tokens) if tok.token_type == semi]
    ends.append(size)
    start = 0
    pending: list[Token] = []
    depth = 0
    for end in ends:
        chunk = tokens[start:end]
        semicolon = tokens[end] if end < size else None
        start = end + 1
        if pending:
            pending.extend(chunk)
            depth += _block_depth(chunk, opened=True)
            if depth > 0:
                if semicolon is not None:
                    pending.append(semicolon)
                continue
            yield pending
            pending, depth = [], 0
            continue
        while chunk and chunk[0].token_type == _T.BACKSLASH:
            # A psql meta-command (\connect, \restrict, ...) ends at the end of its line.
            line = chunk[0].line
            cut = next((k for k, tok in enumerate(chunk) if tok.line > line), len(chunk))
            yield chunk[:cut]
            chunk = chunk[cut:]
        if not chunk:
            continue
        if chunk[0].token_type == _T.CREATE and _is_routine(chunk):
            depth = _block_depth(chunk, opened=False)
            if depth > 0:
                pending = chunk
                if semicolon is not None:
                    pending.append(semicolon)
                continue
        yield chunk
    if pending:
        yield pending


_ROUTINES: Final = frozenset({_T.FUNCTION, _T.PROCEDURE})


def _is_routine(chunk: list[Token]) -> bool:
    return any(tok.token_type in _ROUTINES for tok in chunk[1:7])


def _block_depth(chunk: list[Token], *, opened: bool) -> int:
    """BEGIN ATOMIC / CASE openings minus ENDs; nothing counts before a BEGIN ATOMIC opens."""
    depth = 0
    for i, tok in enumerate(chunk):
        word = _word(tok)
        if word == "BEGIN" and (opened or (i + 1 < len(chunk) and _word(chunk[i + 1]) == "ATOMIC")):
            depth += 1
            opened = True
        elif opened and word == "CASE":
            depth += 1
        elif opened and word == "END":
            depth -= 1
    return depth


# psql's own lines (meta-commands, COPY data) are found with mvgraph.sql.lexer, which lexes as
# PostgreSQL does (strings, E-strings, dollar quotes, nested comments) in linear time.
_PSQL_HINT_RE: Final = re.compile(r"\\|stdin", re.IGNORECASE)
_END_OF_COPY_RE: Final = re.compile(r"^\\\.[ \t\r]*$", re.MULTILINE)
_SENDS_QUERY_RE: Final = re.compile(r"\\(?:g|watch|crosstabview)", re.IGNORECASE)
_NOT_NEWLINE_RE: Final = re.compile(r"[^\n]")


def _from_stdin(words: Sequence[str]) -> bool:
    """True when ``words`` (lower case) are those of ``COPY ... FROM stdin``."""
    return (bool(words) and words[0] in ("copy", "\\copy")
            and any(a == "from" and b in ("stdin", "stdin;") for a, b in pairwise(words)))


def without_psql(text: str) -> str:
    """The script with psql's own text blanked: meta-commands (``\\i f``, ``\\set x 1``, ...)
    up to the end of their line, and the data lines after ``COPY ... FROM stdin;`` up to ``\\.``.
    Offsets and line numbers stay; a meta-command that sends the query (``\\g``) ends it.

    Example:
        >>> text = "\\\\set x 1\\nCOPY t FROM stdin;\\na;'b\\n\\\\.\\nselect 1 \\\\g"
        >>> [line.rstrip() for line in without_psql(text).split("\\n")]
        ['', 'COPY t FROM stdin;', '', '', 'select 1 ;']
    """
    if _PSQL_HINT_RE.search(text) is None:
        return text
    cuts: list[tuple[int, int, str]] = []
    scanner = lexer.Scanner(text, standard_strings=True)
    words: list[str] = []  # the current statement's words, lower case
    while (lexeme := scanner.next()) is not None:
        kind = lexeme.kind
        if kind is lexer.Kind.COMMENT:
            continue
        if kind is lexer.Kind.WORD:
            words.append(text[lexeme.start : lexeme.end].lower())
            continue
        if kind is lexer.Kind.META:
            sends = _SENDS_QUERY_RE.match(text, lexeme.start) is not None
            cuts.append((lexeme.start, lexeme.end, ";" if sends else " "))
            copying = _from_stdin(text[lexeme.start : lexeme.end].lower().split())
        elif kind is lexer.Kind.SEMICOLON:
            sends, copying = True, _from_stdin(words)
        else:
            words.append("")
            continue
        if copying:
            line_end = text.find("\n", lexeme.end)
            line_end = len(text) if line_end < 0 else line_end
            match = _END_OF_COPY_RE.search(text, line_end)
            scanner.pos = len(text) if match is None else match.end()
            cuts.append((line_end, scanner.pos, " "))
        if sends or copying:
            words = []
    return _blank(text, cuts)


def _blank(text: str, cuts: list[tuple[int, int, str]]) -> str:
    """Replace each (start, end, first) span by ``first`` and spaces, keeping newlines."""
    pieces: list[str] = []
    done = 0
    for start, end, first in cuts:
        pieces.append(text[done:start])
        blanked = _NOT_NEWLINE_RE.sub(" ", text[start:end])
        pieces.append(blanked if first == " " else first + blanked[1:])
        done = end
    pieces.append(text[done:])
    return "".join(pieces)


_RELEVANT_RE: Final = re.compile(
    r"""(?:
        create\s+(?:or\s+replace\s+)?
            (?:(?:global|local|temp|temporary|unlogged|recursive|incremental|materialized
               |foreign)\s+)*(?:view|table)\b
      | (?:alter|drop)\s+(?:table|view|materialized|foreign)\b
      | set\s+(?:(?:session|local)\s+)?search_path\b
    )""",
    re.IGNORECASE | re.VERBOSE,
)


def _looks_relevant(text: str) -> bool:
    """True when a statement (starting at its first word) that could not be tokenised is one
    ``parse_script`` acts on."""
    return bool(_RELEVANT_RE.match(text))


_TOKENIZERS = threading.local()


def _tokenize(text: str) -> list[Token]:
    """``_DIALECT.tokenize(text)`` with this thread's tokenizer (made once per thread: making
    one costs about what tokenising a short statement does; each call starts it afresh)."""
    tokenizer = getattr(_TOKENIZERS, "tokenizer", None)
    if tokenizer is None:
        tokenizer = _TOKENIZERS.tokenizer = _DIALECT.tokenizer()
    return tokenizer.tokenize(text)  # a new list each call (tokenize resets its state)


def _script_statements(text: str, path: str) -> Iterator[_Statement | SqlParseError | None]:
    """The statements of a script, split by :func:`mvgraph.sql.lexer.split` and each tokenised on
    its own; None stands for an irrelevant statement that would not tokenise, an error for a
    relevant one."""
    text = without_psql(text)
    for piece in lexer.split(text):
        if piece.meta:
            continue
        body = text[piece.start : piece.end]
        try:
            tokens = _tokenize(body)
        except TokenError as exc:
            if _looks_relevant(body):
                first = body.split("\n", 1)[0].strip()
                yield SqlParseError(_tokenize_message(exc), path, piece.line, first)
                continue
            yield None
            continue
        if tokens:
            column = piece.start - (text.rfind("\n", 0, piece.start) + 1)
            yield _Statement(tokens, body, piece.line - 1, column)


def split_statements(text: str) -> list[tuple[int, str]]:
    """Split a script into statements: (1-based line where each starts, its text).

    The split is psql's, on PostgreSQL's lexing (:func:`mvgraph.sql.lexer.split`): the text runs
    from the statement's first lexeme to its last, without the semicolon and the comments
    before it; strings (E-strings, continued strings), quoted identifiers, comments,
    dollar-quoted bodies, parentheses and ``BEGIN ... END`` bodies of routines are never split.
    A psql meta-command comes back as a statement of its own (its line), so a caller that
    executes statements should skip texts starting with a backslash, and should send each with
    :func:`mvgraph.db.single.execute_one`.

    Example:
        >>> split_statements("select ';';\\n\\nDO $$ begin perform 1; end $$;")
        [(1, "select ';'"), (3, 'DO $$ begin perform 1; end $$')]
    """
    return [(piece.line, text[piece.start : piece.end].rstrip()) for piece in lexer.split(text)]


# --------------------------------------------------------------------------- head parser


def _error(message: str, token: Token | None) -> ParseError:
    line = token.line if token is not None else None
    col = token.col if token is not None else None
    where = f". Line {line}, Col: {col}." if token is not None else ""
    return ParseError.new(f"{message}{where}", description=message, line=line, col=col)


class _Cursor:
    """A position in a statement's tokens, with the few matching helpers a head parser needs."""

    __slots__ = ("i", "stmt", "tokens")

    def __init__(self, stmt: _Statement, start: int = 0) -> None:
        self.stmt = stmt
        self.tokens = stmt.tokens
        self.i = start

    def peek(self, ahead: int = 0) -> Token | None:
        index = self.i + ahead
        return self.tokens[index] if index < len(self.tokens) else None

    def word(self, ahead: int = 0) -> str:
        index = self.i + ahead
        return _word(self.tokens[index]) if index < len(self.tokens) else ""

    def at_end(self) -> bool:
        return self.i >= len(self.tokens)

    def is_type(self, token_type: TokenType) -> bool:
        token = self.peek()
        return token is not None and token.token_type == token_type

    def accept(self, *words: str) -> bool:
        """Consume ``words`` if the next tokens spell them."""
        tokens, index = self.tokens, self.i
        if index + len(words) > len(tokens):
            return False
        for offset, expected in enumerate(words):
            if _word(tokens[index + offset]) != expected:
                return False
        self.i += len(words)
        return True

    def error(self, message: str) -> ParseError:
        token = self.peek()
        if token is None:
            return _error(f"{message} at end of statement", self.tokens[-1])
        return _error(f"{message}, found {token.text!r}", token)

    def ident(self, what: str = "a name") -> tuple[str, bool]:
        found = _ident(self.peek())
        if found is None:
            raise self.error(f"expected {what}")
        self.i += 1
        return found

    def name(self) -> list[tuple[str, bool]]:
        """``part[.part[.part]]`` as (name, quoted) pairs, unquoted parts folded."""
        parts = [self.ident("a relation name")]
        while self.is_type(_T.DOT):
            self.i += 1
            parts.append(self.ident("a name after '.'"))
        if len(parts) > 3:
            raise _error("too many dotted parts in a relation name", self.tokens[self.i - 1])
        return parts

    def group(self) -> list[Token]:
        """Consume a parenthesised group and return the tokens inside it."""
        if not self.is_type(_T.L_PAREN):
            raise self.error("expected '('")
        close = _matching_paren(self.tokens, self.i)
        if close < 0:
            raise _error("unbalanced parentheses", self.tokens[self.i])
        inner = self.tokens[self.i + 1 : close]
        self.i = close + 1
        return inner

    def ident_list(self) -> list[tuple[str, bool]]:
        inner = self.group()
        names: list[tuple[str, bool]] = []
        for item in _split_commas(inner):
            found = _ident(item[0]) if len(item) == 1 else None
            if found is None:
                raise _error("expected a column name", item[0] if item else self.tokens[self.i - 1])
            names.append(found)
        return names


_matching_paren = recovery.matching_paren


def _split_commas(tokens: list[Token]) -> list[list[Token]]:
    """Split on the commas at parenthesis depth 0."""
    items: list[list[Token]] = [[]]
    depth = 0
    for token in tokens:
        token_type = token.token_type
        if token_type == _T.COMMA and depth == 0:
            items.append([])
            continue
        if token_type in (_T.L_PAREN, _T.L_BRACKET):
            depth += 1
        elif token_type in (_T.R_PAREN, _T.R_BRACKET):
            depth -= 1
        items[-1].append(token)
    return items


def _parse_tokens(parser: Parser, stmt: _Statement, tokens: list[Token]) -> exp.Expr:
    """Parse tokens holding one expression or query with the compiled Postgres parser.

    When the parser rejects them, the rewrites of :mod:`mvgraph.sql.recovery` (syntax sqlglot lacks)
    are tried; the names of those used are in the result's ``meta`` (``META_RECOVERED``). The
    parser's first error is raised if nothing helps.
    """
    if _has_cte_clause(tokens):
        tokens = recovery.cte_clauses(tokens) or tokens
    try:
        return _parse_once(parser, stmt, tokens)
    except Exception as exc:  # the compiled parser also fails with TypeError and the like
        first = exc if isinstance(exc, ParseError) else _error(
            f"cannot parse ({type(exc).__name__}: {exc})", tokens[0])
    tree = _recover(parser, stmt, tokens)
    if tree is None:
        raise first
    return tree


def _has_cte_clause(tokens: list[Token]) -> bool:
    """True if a word of ``tokens`` may start a recursive CTE's SEARCH or CYCLE clause."""
    return any(tok.token_type == _T.VAR and tok.text.upper() in ("SEARCH", "CYCLE")
               for tok in tokens)


_MAX_OPAQUE: Final = 32  # calls turned opaque in one statement before giving up


def _recover(parser: Parser, stmt: _Statement, tokens: list[Token]) -> exp.Expr | None:
    """Parse again after the rewrites of :mod:`mvgraph.sql.recovery`; None if they do not help."""
    tokens, applied = recovery.rewrite(tokens)
    for _ in range(_MAX_OPAQUE + 1):
        at: int | None = None
        try:
            tree = _parse_once(parser, stmt, tokens)
        except ParseError as exc:
            details = exc.errors[0] if exc.errors else {}
            at = recovery.error_index(tokens, details.get("line"), details.get("col"))
        except Exception:  # a crash inside the parser (no position): try the SQL/XML calls
            at = recovery.special_call(tokens)
        else:
            tree.meta[META_RECOVERED] = tuple(applied)
            return tree
        changed = recovery.opaque_call(tokens, at) if at is not None else None
        if changed is None:
            return None
        tokens = changed
        if "opaque call" not in applied:
            applied.append("opaque call")
    return None


def _parse_once(parser: Parser, stmt: _Statement, tokens: list[Token]) -> exp.Expr:
    parsed = parser.parse(tokens, stmt.sql)
    if len(parsed) != 1 or parsed[0] is None:
        raise _error("expected one expression", tokens[0])
    return parsed[0]


_CREATE_MODIFIERS: Final = frozenset(
    {"GLOBAL", "LOCAL", "TEMP", "TEMPORARY", "UNLOGGED", "RECURSIVE", "INCREMENTAL",
     "MATERIALIZED", "FOREIGN"}
)


def _create_head(cur: _Cursor) -> tuple[bool, frozenset[str], str] | None:
    """After CREATE: ``[OR REPLACE] modifiers {VIEW|TABLE}`` or None for other objects."""
    replace = cur.accept("OR", "REPLACE")
    modifiers: set[str] = set()
    while (word := cur.word()) in _CREATE_MODIFIERS:
        modifiers.add(word)
        cur.i += 1
    obj = cur.word()
    if obj not in ("VIEW", "TABLE", "SEQUENCE"):
        return None
    cur.i += 1
    return replace, frozenset(modifiers), obj


def _table_node(parts: list[tuple[str, bool]]) -> exp.Table:
    idents = [exp.Identifier(this=name, quoted=quoted) for name, quoted in parts]
    table = exp.Table(this=idents[-1])
    if len(idents) >= 2:
        table.set("db", idents[-2])
    if len(idents) == 3:
        table.set("catalog", idents[0])
    return table


def _clause_expr(cur: _Cursor, parser: Parser) -> tuple[exp.Expr, str]:
    """``(expr)`` (or a bare expression) of START WITH / EVERY, parsed, with its source text."""
    if cur.is_type(_T.L_PAREN):
        opening = cur.peek()
        inner = cur.group()
        if not inner:
            raise _error("expected an expression inside '()'", opening)
    else:
        begin = cur.i
        depth = 0
        while not cur.at_end():
            token = cur.tokens[cur.i]
            if token.token_type == _T.L_PAREN:
                depth += 1
            elif token.token_type == _T.R_PAREN:
                depth -= 1
            elif depth == 0 and _word(token) in _CLAUSE_STOPS:
                break
            cur.i += 1
        inner = cur.tokens[begin : cur.i]
        if not inner:
            raise cur.error("expected an expression")
    return _parse_tokens(parser, cur.stmt, inner), cur.stmt.text(inner[0], inner[-1]).strip()


_CLAUSE_STOPS: Final = frozenset({"START", "EVERY", "AS", "ENABLE", "DISABLE", "BUILD"})


def _parse_refresh(cur: _Cursor, parser: Parser) -> exp.RefreshTriggerProperty:
    """After REFRESH: ``[behaviour] [START WITH (...)] [EVERY (...)]``."""
    behaviour: str | None = None
    word = cur.word()
    if word in _BEHAVIOURS:
        cur.i += 1
        behaviour = word
        if _BEHAVIOURS[word]:
            direction = cur.word()
            if direction not in _BEHAVIOURS[word]:
                raise cur.error(f"expected {' or '.join(_BEHAVIOURS[word])} after {word}")
            cur.i += 1
            behaviour = f"{word} {direction}"
    node = exp.RefreshTriggerProperty(method=exp.var(behaviour) if behaviour else None)
    while True:
        if cur.accept("START", "WITH"):
            key, meta = "starts", META_START_SQL
        elif cur.accept("EVERY"):
            key, meta = "every", META_EVERY_SQL
        else:
            break
        if node.args.get(key) is not None:
            raise _error(f"{'START WITH' if key == 'starts' else 'EVERY'} given twice",
                         cur.tokens[cur.i - 1])
        value, text = _clause_expr(cur, parser)
        node.set(key, value)
        node.meta[meta] = text
    return node


def _query_rewrite(cur: _Cursor) -> exp.Property | None:
    """``{ENABLE|DISABLE} QUERY REWRITE`` as a property, or None (nothing consumed)."""
    word = cur.word()
    if word in ("ENABLE", "DISABLE") and cur.word(1) == "QUERY" and cur.word(2) == "REWRITE":
        cur.i += 3
        return exp.Property(this=exp.var(_QUERY_REWRITE), value=exp.var(word))
    return None


def _view_options(tokens: list[Token], stmt: _Statement) -> list[exp.Expr]:
    """``WITH (key [= value], ...)`` as ``exp.Property`` nodes holding the source text."""
    options: list[exp.Expr] = []
    for item in _split_commas(tokens):
        if not item:
            raise _error("empty option in WITH (...)", tokens[0] if tokens else None)
        eq = next((k for k, tok in enumerate(item) if tok.token_type == _T.EQ), None)
        key = item if eq is None else item[:eq]
        value = None if eq is None else item[eq + 1 :]
        if not key or (value is not None and not value):
            raise _error("malformed option in WITH (...)", item[0])
        options.append(
            exp.Property(
                this=exp.var(stmt.text(key[0], key[-1])),
                value=exp.var(stmt.text(value[0], value[-1])) if value else exp.true(),
            )
        )
    return options


def _strip_trailing(tokens: list[Token]) -> tuple[list[Token], bool | None, str | None]:
    """Remove a trailing ``WITH [NO] DATA`` / ``WITH [CASCADED|LOCAL] CHECK OPTION``."""
    with_data: bool | None = None
    check: str | None = None
    while tokens and _word(tokens[-1]) in ("DATA", "OPTION"):
        words = [_word(tok) for tok in tokens[-4:]]
        if words[-2:] == ["WITH", "DATA"] and with_data is None:
            tokens, with_data = tokens[:-2], True
        elif words[-3:] == ["WITH", "NO", "DATA"] and with_data is None:
            tokens, with_data = tokens[:-3], False
        elif words[-3:] == ["WITH", "CHECK", "OPTION"] and check is None:
            tokens, check = tokens[:-3], "CASCADED"
        elif (
            len(words) == 4
            and words[0] == "WITH"
            and words[1] in ("CASCADED", "LOCAL")
            and words[2:] == ["CHECK", "OPTION"]
            and check is None
        ):
            tokens, check = tokens[:-4], words[1]
        else:
            break
    return tokens, with_data, check


def _parse_view(
    cur: _Cursor, parser: Parser, replace: bool, modifiers: frozenset[str]
) -> exp.Create:
    """After ``CREATE ... VIEW``: the rest of a view or materialized view, as ``exp.Create``."""
    materialized = "MATERIALIZED" in modifiers
    recursive = "RECURSIVE" in modifiers
    bad = modifiers & {"FOREIGN", "UNLOGGED"}
    if bad:
        raise _error(f"{sorted(bad)[0]} does not apply to views", cur.tokens[0])
    exists = cur.accept("IF", "NOT", "EXISTS")
    parts = cur.name()
    columns = cur.ident_list() if cur.is_type(_T.L_PAREN) else []
    properties: list[exp.Expr] = []
    if modifiers & {"TEMP", "TEMPORARY"}:
        properties.append(exp.TemporaryProperty())
    if materialized:
        properties.append(exp.MaterializedProperty())
    seen: set[str] = set()
    while not cur.accept("AS"):
        word = cur.word()
        if word in seen:
            raise cur.error(f"{word} given twice")
        seen.add(word)
        gauss = word in ("BUILD", "REFRESH", "ENABLE", "DISABLE")
        if gauss and not materialized:
            raise cur.error("only a materialized view takes this clause")
        if word == "USING":
            cur.i += 1
            method = cur.ident("an access method")[0]
            properties.append(exp.FileFormatProperty(this=exp.var(method)))
        elif word == "WITH":
            cur.i += 1
            properties.extend(_view_options(cur.group(), cur.stmt))
        elif word == "TABLESPACE":
            cur.i += 1
            name, quoted = cur.ident("a tablespace")
            properties.append(exp.TableSpaceProperty(this=exp.Identifier(this=name, quoted=quoted)))
        elif word == "BUILD":
            cur.i += 1
            mode = cur.word()
            if mode not in ("DEFERRED", "IMMEDIATE"):
                raise cur.error("expected DEFERRED or IMMEDIATE after BUILD")
            cur.i += 1
            properties.append(exp.BuildProperty(this=exp.var(mode)))
        elif word == "REFRESH":
            cur.i += 1
            properties.append(_parse_refresh(cur, parser))
        elif (rewrite := _query_rewrite(cur)) is not None:
            properties.append(rewrite)
        else:
            raise cur.error("expected AS")
    body, with_data, check = _strip_trailing(cur.tokens[cur.i :])
    if not body:
        raise cur.error("expected a query after AS")
    if with_data is not None and not materialized:
        raise _error("WITH [NO] DATA applies to materialized views only", body[-1])
    if check is not None and materialized:
        raise _error("WITH CHECK OPTION applies to views only", body[-1])
    query = _parse_tokens(parser, cur.stmt, body)
    if not isinstance(query, (exp.Query, exp.Values)):
        raise _error("expected a query after AS", body[0])
    query_sql = cur.stmt.text(body[0], body[-1])
    if recursive:
        if not columns:
            raise _error("a recursive view needs a column list", body[0])
        query, query_sql = _expand_recursive(parts[-1], columns, query, query_sql)
    table = _table_node(parts)
    column_nodes = [exp.Identifier(this=n, quoted=q) for n, q in columns]
    create = exp.Create(
        this=exp.Schema(this=table, expressions=column_nodes) if columns else table,
        kind="VIEW",
        replace=replace,
        exists=exists,
        expression=query,
        properties=exp.Properties(expressions=properties) if properties else None,
    )
    if with_data is not None:
        properties.append(exp.WithDataProperty(no=not with_data))
        create.set("properties", exp.Properties(expressions=properties))
    create.meta[META_QUERY_SQL] = query_sql
    create.meta[META_VOLATILE] = _volatile_functions(body, query_sql)
    if check is not None:
        create.meta[META_CHECK_OPTION] = check
    if recursive:
        create.meta[META_RECURSIVE] = True
    return create


def _expand_recursive(
    name: tuple[str, bool], columns: list[tuple[str, bool]], query: exp.Expr, query_sql: str
) -> tuple[exp.Expr, str]:
    """Expand a recursive view as PostgreSQL does.

    ``CREATE RECURSIVE VIEW v (c) AS q`` means
    ``CREATE VIEW v AS WITH RECURSIVE v (c) AS (q) SELECT c FROM v``.
    """
    ident = exp.Identifier(this=name[0], quoted=name[1])
    cols = [exp.Identifier(this=n, quoted=q) for n, q in columns]
    cte = exp.CTE(this=query, alias=exp.TableAlias(this=ident, columns=cols))
    select = exp.Select(
        expressions=[exp.Column(this=col.copy()) for col in cols],
        from_=exp.From(this=exp.Table(this=ident.copy())),
        with_=exp.With(expressions=[cte], recursive=True),
    )
    cols_sql = ", ".join(quote_ident(n) for n, _ in columns)
    text = (
        f"WITH RECURSIVE {quote_ident(name[0])}({cols_sql}) AS ({query_sql}) "
        f"SELECT {cols_sql} FROM {quote_ident(name[0])}"
    )
    return select, text


# A cheap first look at the lower-cased query text (case-insensitive regexes are slow).
_VOLATILE_HINT_RE: Final = re.compile("|".join(sorted(VOLATILE_FUNCTIONS)))


def _volatile_functions(tokens: list[Token], text: str) -> tuple[str, ...]:
    """Sorted names of the volatile built-ins a query calls (keyword forms count as calls)."""
    if not _VOLATILE_HINT_RE.search(text.lower()):
        return ()
    found: set[str] = set()
    last = len(tokens) - 1
    for index, token in enumerate(tokens):
        if token.token_type == _T.IDENTIFIER:
            name, keyword = token.text, False
        elif _word(token):
            name, keyword = _fold(token.text), True
        else:
            continue
        if name not in VOLATILE_FUNCTIONS:
            continue
        called = index < last and tokens[index + 1].token_type == _T.L_PAREN
        if called or (keyword and name in _KEYWORD_FUNCTIONS):
            found.add(name)
    return tuple(sorted(found))


_ALTER_KINDS: Final = (
    (("MATERIALIZED", "VIEW"), "MATERIALIZED VIEW"),
    (("FOREIGN", "TABLE"), "FOREIGN TABLE"),
    (("TABLE",), "TABLE"),
    (("VIEW",), "VIEW"),
    (("SEQUENCE",), "SEQUENCE"),
)


def _relation_kind(cur: _Cursor) -> str | None:
    for words, kind in _ALTER_KINDS:
        if cur.accept(*words):
            return kind
    return None


def _parse_alter(cur: _Cursor, parser: Parser) -> exp.Alter | None:
    """After ALTER: RENAME TO, SET SCHEMA, REFRESH and QUERY REWRITE forms, else None."""
    kind = _relation_kind(cur)
    if kind is None:
        return None
    exists = cur.accept("IF", "EXISTS")
    only = cur.accept("ONLY")
    if cur.word() == "ALL" and cur.word(1) == "IN":  # ALTER ... ALL IN TABLESPACE
        return None
    parts = cur.name()
    if cur.is_type(_T.STAR):
        cur.i += 1
    actions: list[exp.Expr] = []
    if cur.accept("RENAME", "TO"):
        new = cur.name()
        if len(new) != 1:
            raise _error("RENAME TO takes an unqualified name", cur.tokens[cur.i - 1])
        actions.append(exp.AlterRename(this=_table_node(new)))
    elif cur.accept("SET", "SCHEMA"):
        schema, quoted = cur.ident("a schema name")
        target = exp.Identifier(this=schema, quoted=quoted)
        actions.append(exp.AlterSet(option=exp.var("SCHEMA"), expressions=[target]))
    elif kind == "MATERIALIZED VIEW" and cur.word() in ("REFRESH", "ENABLE", "DISABLE"):
        while not cur.at_end():
            if cur.accept("REFRESH"):
                actions.append(_parse_refresh(cur, parser))
            elif (rewrite := _query_rewrite(cur)) is not None:
                actions.append(rewrite)
            else:
                raise cur.error("expected REFRESH or ENABLE/DISABLE QUERY REWRITE")
        if not actions:
            return None
    else:
        return None
    if not cur.at_end():
        raise cur.error("unexpected text")
    return exp.Alter(this=_table_node(parts), kind=kind, exists=exists, only=only, actions=actions)


def _parse_special(stmt: _Statement, parser: Parser) -> exp.Expr | None:
    """The dialect's own statements: CREATE [MATERIALIZED] VIEW and the ALTER forms above."""
    cur = _Cursor(stmt)
    if cur.accept("CREATE"):
        head = _create_head(cur)
        if head is not None and head[2] == "VIEW":
            return _parse_view(cur, parser, head[0], head[1])
    elif cur.accept("ALTER"):
        return _parse_alter(cur, parser)
    return None


# --------------------------------------------------------------------------- the dialect


class MvgraphPostgres(Postgres):
    """PostgreSQL with GaussDB's materialized-view clauses (see the module docstring).

    Example:
        >>> import sqlglot
        >>> tree = sqlglot.parse_one(
        ...     "ALTER MATERIALIZED VIEW v REFRESH cascade all EVERY (interval '1 h')",
        ...     dialect=MvgraphPostgres,
        ... )
        >>> tree.sql(dialect=MvgraphPostgres)
        "ALTER MATERIALIZED VIEW v REFRESH CASCADE ALL EVERY (INTERVAL '1 HOUR')"
    """

    def parse(self, sql: str, **opts: Unpack[ParserArgs]) -> list[exp.Expr | None]:
        parser = self.parser(**opts)
        results: list[exp.Expr | None] = []
        for tokens in _split_statements(self.tokenize(sql)):
            special = _parse_special(_Statement(tokens, sql), parser)
            if special is not None:
                results.append(special)
            else:
                results.extend(parser.parse(tokens, sql))
        return results or [None]

    def generate(
        self, expression: exp.Expr, copy: bool = True, **opts: Unpack[GeneratorArgs]
    ) -> str:
        if expression.find(*_LOWERED) is not None:  # never lower the caller's tree in place
            expression = expression.transform(lambda node: self._lower(node, opts), copy=True)
            copy = False
        text = super().generate(expression, copy=copy, **opts)
        check = expression.meta.get(META_CHECK_OPTION)
        if isinstance(expression, exp.Create) and check:
            text = f"{text} WITH {check} CHECK OPTION"
        return text

    def _lower(self, node: exp.Expr, opts: GeneratorArgs) -> exp.Expr:
        """Rewrite this dialect's nodes into ones the Postgres generator prints verbatim."""
        if isinstance(node, exp.RefreshTriggerProperty) and not node.args.get("kind"):
            words: list[str] = []
            method = node.args.get("method")
            if method is not None:
                words.append(method.name)
            for key, label in (("starts", "START WITH"), ("every", "EVERY")):
                value = node.args.get(key)
                if value is not None:
                    words.append(f"{label} ({self.generate(value, **opts)})")
            return exp.RefreshTriggerProperty(method=exp.var(" ".join(words) or "DEFAULT"))
        if type(node) is exp.Property and node.name == _QUERY_REWRITE:
            value = node.args.get("value")
            action = value.name if isinstance(value, exp.Expr) else "ENABLE"
            return exp.SqlReadWriteProperty(this=exp.var(f"{action} {_QUERY_REWRITE}"))
        if isinstance(node, exp.BuildProperty):
            return exp.SqlReadWriteProperty(this=exp.var(f"BUILD {node.name}"))
        if isinstance(node, exp.AlterSet):
            option = node.args.get("option")
            targets = node.expressions
            if isinstance(option, exp.Var) and option.name == "SCHEMA" and len(targets) == 1:
                return exp.var(f"SET SCHEMA {super().generate(targets[0], **opts)}")
        return node


_LOWERED: Final = (exp.RefreshTriggerProperty, exp.Property, exp.BuildProperty, exp.AlterSet)
_DIALECT: Final = MvgraphPostgres()


# --------------------------------------------------------------------------- dependencies


def _references(query: exp.Expr, text: str | None = None) -> tuple[set[RelationName], set[str]]:
    """Relations a query reads: (schema-qualified names, bare names). May mutate ``query``.

    sqlglot's scope analysis gives, for every scope (subqueries anywhere, derived tables, CTE
    bodies, set-operation arms, LATERAL), the sources that are tables rather than CTEs. When the
    query has CTEs, identifiers are first folded the PostgreSQL way so that ``FROM Foo`` matches
    a CTE named ``foo`` but ``FROM "Foo"`` does not. A table node a scope collected without
    registering it as a source is kept if it stands in FROM / JOIN and names no CTE visible
    there.

    ``text``, the query's source, allows a shortcut with the same result: a query that is one
    SELECT without subqueries or CTEs has a single scope, whose sources are its FROM/JOIN items.
    """
    tables = _flat_select_tables(query) if text is not None and _is_flat(text) else None
    if tables is None:
        tables = _scope_tables(query)
    qualified: set[RelationName] = set()
    bare: set[str] = set()
    for table in tables:
        ident = table.this
        if not isinstance(ident, exp.Identifier):  # generate_series(...), ROWS FROM (...)
            continue
        if not ident.quoted and not table.db and ident.this.lower() in _VALUE_FUNCTIONS:
            continue  # FROM CURRENT_DATE d(d): sqlglot reads the function as a table name
        name = ident.this if ident.quoted else _fold(ident.this)
        db = table.args.get("db")
        if isinstance(db, exp.Identifier) and db.this:
            qualified.add(RelationName(db.this if db.quoted else _fold(db.this), name))
        else:
            bare.add(name)
    return qualified, bare


# Reserved words that are SQL-standard functions (``FROM CURRENT_DATE d(d)`` calls one; a table
# of that name is always quoted). sqlglot parses them as table names in FROM. Upstream: "postgres:
# SQL value functions (CURRENT_DATE, CURRENT_USER, ...) as FROM items are functions, not tables".
_VALUE_FUNCTIONS: Final = frozenset(
    {"current_date", "current_time", "current_timestamp", "localtime", "localtimestamp",
     "current_user", "current_role", "session_user", "user", "system_user", "current_catalog",
     "current_schema"}
)


def _scope_tables(query: exp.Expr) -> list[exp.Table]:
    """The table nodes that are relation reads, by sqlglot's scope analysis."""
    roots = (
        [query]
        if isinstance(query, exp.Query)
        else [q for q in query.find_all(exp.Query) if q.find_ancestor(exp.Query) is None]
    )
    scopes = [scope for root in roots for scope in traverse_scope(root)]
    if any(scope.ctes for scope in scopes):
        normalize_identifiers(query, dialect=_DIALECT)
        scopes = [scope for root in roots for scope in traverse_scope(root)]
    reads: dict[int, exp.Table] = {}
    for scope in scopes:
        for source in scope.sources.values():
            if isinstance(source, exp.Table):
                reads[id(source)] = source
    for scope in scopes:  # a safety net: relation positions that no scope registered
        for table in scope.tables:
            if id(table) not in reads and _in_from_or_join(table) and not _names_cte(table):
                reads[id(table)] = table
    return list(reads.values())


def _in_from_or_join(table: exp.Table) -> bool:
    """True for a table in FROM / JOIN position (not, say, ``FOR UPDATE OF alias``)."""
    parent = table.parent
    while isinstance(parent, exp.Subquery):
        parent = parent.parent
    return isinstance(parent, (exp.From, exp.Join))


_NESTING_WORDS: Final = ("with", "values", "table", "lateral")


def _is_flat(text: str) -> bool:
    """True if query text cannot hold a second query: one SELECT, no WITH/VALUES/TABLE/LATERAL.

    A substring test: a false "not flat" (say, a column named ``selection``) only costs speed.
    """
    lowered = text.lower()
    return lowered.count("select") == 1 and not any(word in lowered for word in _NESTING_WORDS)


def _flat_select_tables(query: exp.Expr) -> list[exp.Table] | None:
    """The FROM/JOIN items of a single-scope SELECT, or None if the shape is anything else."""
    if type(query) is not exp.Select or query.args.get("with_") or query.args.get("laterals"):
        return None
    from_ = query.args.get("from_")
    items = [from_.this] if isinstance(from_, exp.From) else []
    items += [join.this for join in query.args.get("joins") or []]
    tables: list[exp.Table] = []
    for item in items:
        if not isinstance(item, exp.Table) or any(
            item.args.get(key) for key in ("joins", "laterals", "pivots")
        ):
            return None
        tables.append(item)
    return tables


def _names_cte(table: exp.Table) -> bool:
    """True if an unqualified table reference names a CTE visible where it stands."""
    if table.db or not isinstance(table.this, exp.Identifier):
        return False
    ident = table.this
    name = ident.this if ident.quoted else _fold(ident.this)
    node: exp.Expr = table
    while node.parent is not None:
        parent = node.parent
        if isinstance(parent, exp.With):
            # ``node`` is one CTE of this WITH: it sees the earlier ones, or all if RECURSIVE.
            ctes = parent.expressions
            visible = ctes if parent.args.get("recursive") else ctes[: ctes.index(node)]
            if any(_cte_name(cte) == name for cte in visible):
                return True
            node = parent.parent if parent.parent is not None else parent
            continue
        with_ = parent.args.get("with_")
        if (
            isinstance(with_, exp.With)
            and with_ is not node
            and any(_cte_name(cte) == name for cte in with_.expressions)
        ):
            return True
        node = parent
    return False


def _cte_name(cte: exp.Expr) -> str:
    alias = cte.args.get("alias")
    ident = alias.this if isinstance(alias, exp.TableAlias) else None
    if not isinstance(ident, exp.Identifier):
        return cte.alias
    return str(ident.this) if ident.quoted else _fold(str(ident.this))


_REGCLASS_FUNCTIONS: Final = frozenset({"nextval", "currval", "setval"})
_REGCLASS_HINT_RE: Final = re.compile("regclass|nextval|currval|setval")


def _regclass_reads(query: exp.Expr, text: str | None = None) -> tuple[set[RelationName], set[str]]:
    """Relations named by string literals that PostgreSQL turns into regclass constants, which
    pg_depend records as dependencies: ``'s'::regclass`` (or CAST) and the first argument of
    nextval / currval / setval. Returns (schema-qualified names, bare names).

    >>> import sqlglot
    >>> q = sqlglot.parse_one("SELECT nextval('s'), 'A.b'::regclass, lower('x')",
    ...                       dialect=MvgraphPostgres)
    >>> _regclass_reads(q)
    ({RelationName(schema='a', name='b')}, {'s'})
    """
    qualified: set[RelationName] = set()
    bare: set[str] = set()
    if text is not None and not _REGCLASS_HINT_RE.search(text.lower()):
        return qualified, bare
    for node in query.find_all(exp.Cast, exp.Anonymous):
        if isinstance(node, exp.Cast):
            to = node.args.get("to")
            literal = node.this if isinstance(to, exp.Expr) and to.name.lower() == "regclass" \
                else None
        else:
            literal = node.expressions[0] if node.name.lower() in _REGCLASS_FUNCTIONS \
                and node.expressions else None
        if not isinstance(literal, exp.Literal) or not literal.is_string:
            continue
        try:
            name = RelationName.parse(str(literal.this), default_schema="\x00")
        except ValueError:
            continue
        if name.schema == "\x00":
            bare.add(name.name)
        else:
            qualified.add(name)
    return qualified, bare


def dependencies(select: exp.Expr, search_path: Sequence[str]) -> frozenset[RelationName]:
    """The relations a query reads, unqualified names resolved to the first search-path schema.

    CTE names, subquery aliases, table functions and column references are not dependencies.
    The argument is not modified.

    Example:
        >>> import sqlglot
        >>> query = sqlglot.parse_one(
        ...     'WITH c AS (SELECT * FROM a) SELECT * FROM c JOIN s."B" ON true'
        ...     " WHERE EXISTS (SELECT 1 FROM generate_series(1, 2) g, d)",
        ...     dialect=MvgraphPostgres,
        ... )
        >>> sorted(str(name) for name in dependencies(query, ["app", "public"]))
        ['app.a', 'app.d', 's."B"']
    """
    qualified, bare = _references(select.copy())
    more, more_bare = _regclass_reads(select)
    qualified |= more
    bare |= more_bare
    default = _clean_path(search_path)[0]
    return frozenset(qualified | {RelationName(default, name) for name in bare})


# --------------------------------------------------------------------------- scripts


def _clean_path(search_path: Sequence[str]) -> tuple[str, ...]:
    """A search path without ``$user`` and empty entries; ``('public',)`` if nothing is left."""
    path = tuple(dict.fromkeys(s for s in search_path if s and s != "$user"))
    return path or ("public",)


@dataclass(slots=True)
class _State:
    """What a script has established so far: the search path and the names it defined."""

    initial: tuple[str, ...]
    path: tuple[str, ...]
    defined: dict[str, set[str]]
    # function name -> the relation whose row type it returns (RETURNS [SETOF] rel)
    returns: dict[str, RelationName] = field(default_factory=dict)

    def target(self, parts: Sequence[str]) -> RelationName:
        """Where CREATE puts a relation: qualified as written, else the first path schema."""
        if len(parts) == 1:
            return RelationName(self.path[0], parts[0])
        return RelationName(parts[-2], parts[-1])

    def read(self, parts: Sequence[str]) -> RelationName:
        """What a reference means: qualified as written, else see ``resolve``."""
        if len(parts) == 1:
            return self.resolve(parts[0])
        return RelationName(parts[-2], parts[-1])

    def resolve(self, name: str) -> RelationName:
        """The first path schema where this script defined ``name``, else pg_catalog for a
        ``pg_*`` name (PostgreSQL searches it first), else the first schema."""
        schemas = self.defined.get(name)
        if schemas:
            for schema in self.path:
                if schema in schemas:
                    return RelationName(schema, name)
        if name.startswith("pg_"):
            return RelationName("pg_catalog", name)
        return RelationName(self.path[0], name)

    def add(self, name: RelationName) -> None:
        self.defined.setdefault(name.name, set()).add(name.schema)

    def remove(self, name: RelationName) -> None:
        self.defined.get(name.name, set()).discard(name.schema)


def _parts(table: exp.Table) -> list[str]:
    return [part for part in (table.catalog, table.db, table.name) if part]


def _schedule(properties: Sequence[exp.Expr]) -> Schedule | None:
    """The Schedule spelled by REFRESH / QUERY REWRITE nodes, or None if there are none."""
    refresh: exp.RefreshTriggerProperty | None = None
    rewrite: bool | None = None
    for prop in properties:
        if isinstance(prop, exp.RefreshTriggerProperty):
            refresh = prop
        elif type(prop) is exp.Property and prop.name == _QUERY_REWRITE:
            value = prop.args.get("value")
            rewrite = isinstance(value, exp.Expr) and value.name.upper() == "ENABLE"
    if refresh is None and rewrite is None:
        return None
    if refresh is None:
        return Schedule(query_rewrite=rewrite)
    method = refresh.args.get("method")
    meta = refresh.meta if refresh.meta else {}
    return Schedule(
        behavior=" ".join(method.name.upper().split()) if isinstance(method, exp.Expr) else None,
        start=meta.get(META_START_SQL) or _sql_of(refresh.args.get("starts")),
        every=meta.get(META_EVERY_SQL) or _sql_of(refresh.args.get("every")),
        query_rewrite=rewrite,
    )


def _sql_of(node: object) -> str | None:
    return node.sql(dialect=_DIALECT) if isinstance(node, exp.Expr) else None


def _define_view(create: exp.Create, stmt: _Statement, state: _State, path: str) -> Define:
    target = create.this
    columns: tuple[str, ...] = ()
    if isinstance(target, exp.Schema):
        columns = tuple(col.name for col in target.expressions)
        target = target.this
    assert isinstance(target, exp.Table)
    props_node = create.args.get("properties")
    props: list[exp.Expr] = list(props_node.expressions) if props_node is not None else []
    materialized = any(isinstance(p, exp.MaterializedProperty) for p in props)
    populated: bool | None = None
    if materialized:
        no_data = any(isinstance(p, exp.WithDataProperty) and p.args.get("no") for p in props)
        deferred = any(isinstance(p, exp.BuildProperty) and p.name == "DEFERRED" for p in props)
        populated = not (no_data or deferred)
    meta = create.meta
    query = create.expression
    assert isinstance(query, exp.Expr)
    qualified, bare = _references(query, meta.get(META_QUERY_SQL))
    more, more_bare = _regclass_reads(query, meta.get(META_QUERY_SQL))
    qualified |= more
    bare |= more_bare
    path_now = state.path
    reads = qualified | {state.resolve(name) for name in bare} | _row_functions(query, state)
    name = state.target(_parts(target))
    state.add(name)
    definition = Definition(
        name=name,
        kind=Kind.MATVIEW if materialized else Kind.VIEW,
        reads=frozenset(reads),
        sql=meta.get(META_QUERY_SQL),
        populated=populated,
        volatile_functions=meta.get(META_VOLATILE, ()),
        schedule=_schedule(props) if materialized else None,
        source=f"{path}:{stmt.line}",
        columns=columns,
    )
    return Define(definition, frozenset(bare), path_now)


_CONSTRAINT_WORDS: Final = frozenset(
    {"CONSTRAINT", "PRIMARY KEY", "UNIQUE", "CHECK", "FOREIGN KEY", "EXCLUDE", "LIKE"}
)


# What may follow the name of a table created without a column list (CREATE TABLE x
# [USING m] [WITH (...) | WITHOUT OIDS] [ON COMMIT ...] [TABLESPACE ts] AS {query | EXECUTE},
# or PARTITION OF / OF type).
_AFTER_TABLE_NAME: Final = frozenset(
    {"AS", "PARTITION", "OF", "USING", "WITH", "WITHOUT", "ON", "TABLESPACE"})


def _define_table(cur: _Cursor, modifiers: frozenset[str], state: _State, path: str) -> Define:
    """After ``CREATE ... TABLE``: name, kind and column names. Only the head is checked."""
    if "MATERIALIZED" in modifiers or "RECURSIVE" in modifiers:
        raise _error("not a valid CREATE TABLE", cur.tokens[0])
    cur.accept("IF", "NOT", "EXISTS")
    parts = [part for part, _ in cur.name()]
    columns: tuple[str, ...] = ()
    if cur.is_type(_T.L_PAREN):
        columns = _column_names(cur.group())
    elif cur.at_end() or cur.word() not in _AFTER_TABLE_NAME:
        raise cur.error("expected '(' or AS after the table name")
    depth = 0
    partitioned = False
    for index in range(cur.i, len(cur.tokens)):
        token = cur.tokens[index]
        token_type = token.token_type
        if token_type == _T.L_PAREN:
            depth += 1
        elif token_type == _T.R_PAREN:
            depth -= 1
            if depth < 0:
                raise _error("unbalanced parentheses", token)
        elif depth == 0 and token_type == _T.ALIAS:
            break  # CREATE TABLE ... AS query: the query is not a dependency
        elif depth == 0 and token_type == _T.PARTITION_BY:
            partitioned = True
    else:
        if depth:
            raise _error("unbalanced parentheses", cur.tokens[-1])
    if "FOREIGN" in modifiers:
        kind = Kind.FOREIGN_TABLE
    else:
        kind = Kind.PARTITIONED_TABLE if partitioned else Kind.TABLE
    name = state.target(parts)
    state.add(name)
    definition = Definition(
        name=name, kind=kind, source=f"{path}:{cur.stmt.line}", columns=columns
    )
    return Define(definition, frozenset(), state.path)


def _define_sequence(cur: _Cursor, modifiers: frozenset[str], state: _State, path: str
                     ) -> Define:
    """After ``CREATE ... SEQUENCE``: its name (the options are not read)."""
    if modifiers - {"TEMP", "TEMPORARY", "UNLOGGED"}:
        raise _error("not a valid CREATE SEQUENCE", cur.tokens[0])
    cur.accept("IF", "NOT", "EXISTS")
    name = state.target([part for part, _ in cur.name()])
    state.add(name)
    definition = Definition(name=name, kind=Kind.SEQUENCE, source=f"{path}:{cur.stmt.line}")
    return Define(definition, frozenset(), state.path)


def _column_names(inner: list[Token]) -> tuple[str, ...]:
    """Column names of a table's ``(...)`` list, skipping table constraints and LIKE."""
    names: list[str] = []
    for item in _split_commas(inner):
        if not item or _word(item[0]) in _CONSTRAINT_WORDS:
            continue
        found = _ident(item[0])
        if found is not None:
            names.append(found[0])
    return tuple(names)


def _alter_events(alter: exp.Alter, state: _State) -> list[Event]:
    table = alter.this
    assert isinstance(table, exp.Table)
    old = state.read(_parts(table))
    events: list[Event] = []
    schedule_props: list[exp.Expr] = []
    for action in alter.args.get("actions") or []:
        if isinstance(action, exp.AlterRename):
            new_table = action.this
            assert isinstance(new_table, exp.Table)
            events.append(Rename(old, RelationName(old.schema, new_table.name)))
        elif isinstance(action, exp.AlterSet):
            events.append(Rename(old, RelationName(action.expressions[0].name, old.name)))
        else:
            schedule_props.append(action)
    schedule = _schedule(schedule_props)
    if schedule is not None:
        events.append(AlterSchedule(old, schedule))
    for event in events:
        if isinstance(event, Rename):
            state.remove(event.old)
            state.add(event.new)
    return events


def _drop_events(cur: _Cursor, state: _State) -> list[Event] | None:
    """After DROP: ``{TABLE|VIEW|MATERIALIZED VIEW|FOREIGN TABLE} [IF EXISTS] a, b [CASCADE]``."""
    if _relation_kind(cur) is None:
        return None
    cur.accept("IF", "EXISTS")
    names = [state.read([part for part, _ in cur.name()])]
    while cur.is_type(_T.COMMA):
        cur.i += 1
        names.append(state.read([part for part, _ in cur.name()]))
    if cur.word() in ("CASCADE", "RESTRICT"):
        cur.i += 1
    if not cur.at_end():
        raise cur.error("unexpected text")
    for name in names:
        state.remove(name)
    return [Drop(name) for name in names]


def _set_search_path(cur: _Cursor, state: _State) -> bool:
    """After SET: ``[SESSION|LOCAL] search_path {TO|=} {DEFAULT | a, "B", 'c'}``."""
    if cur.word() in ("SESSION", "LOCAL"):
        cur.i += 1
    found = _ident(cur.peek())
    if found is None or found[0].lower() != "search_path":
        return False
    cur.i += 1
    if not (cur.accept("TO") or cur.is_type(_T.EQ)):
        return False
    if cur.is_type(_T.EQ):
        cur.i += 1
    if cur.accept("DEFAULT") and cur.at_end():
        state.path = state.initial
        return True
    schemas: list[str] = []
    for item in _split_commas(cur.tokens[cur.i :]):
        token = item[0] if len(item) == 1 else None
        if token is not None and token.token_type == _T.STRING:
            schemas.append(token.text)
            continue
        part = _ident(token)
        if part is None:
            raise _error("expected a schema name in SET search_path", item[0] if item else None)
        schemas.append(part[0])
    state.path = _clean_path(schemas)
    return True


def _apply(stmt: _Statement, parser: Parser, state: _State, path: str, events: list[Event]) -> bool:
    """Act on one statement; False if it is irrelevant."""
    cur = _Cursor(stmt, 1)
    first = stmt.tokens[0]
    word = _word(first)
    if word == "CREATE":
        head = _create_head(cur)
        if head is None:
            _function_returns(_Cursor(stmt, 1), state)
            return False
        replace, modifiers, obj = head
        if obj == "VIEW":
            create = _parse_view(cur, parser, replace, modifiers)
            events.append(_define_view(create, stmt, state, path))
        elif obj == "SEQUENCE":
            events.append(_define_sequence(cur, modifiers, state, path))
        else:
            events.append(_define_table(cur, modifiers, state, path))
        return True
    if word == "ALTER":
        alter = _parse_alter(cur, parser)
        if alter is None:
            return False
        events.extend(_alter_events(alter, state))
        return True
    if word == "DROP":
        drops = _drop_events(cur, state)
        if drops is None:
            return False
        events.extend(drops)
        return True
    if word == "SET":
        return _set_search_path(cur, state)
    if word == "RESET" and len(stmt.tokens) == 2 and _is_search_path_reset(stmt.tokens[1]):
        state.path = state.initial
        return True
    return False


def _function_returns(cur: _Cursor, state: _State) -> None:
    """Note ``CREATE [OR REPLACE] FUNCTION f(...) RETURNS [SETOF] rel`` where ``rel`` is a
    relation this script defined: a view reading f's columns reads ``rel`` (pg_depend records
    the row type's columns)."""
    cur.accept("OR", "REPLACE")
    if not cur.accept("FUNCTION") or cur.at_end():
        return
    try:
        name = cur.name()
        if not cur.is_type(_T.L_PAREN):
            return
        cur.group()
        if not cur.accept("RETURNS"):
            return
        cur.accept("SETOF")
        returned = [part for part, _ in cur.name()]
    except ParseError:
        return
    if cur.is_type(_T.L_PAREN) or cur.is_type(_T.L_BRACKET) or cur.word() == "ARRAY":
        return  # a type with a modifier or an array: not a row type
    if len(returned) == 1 and not state.defined.get(returned[0]):
        return
    state.returns[name[-1][0]] = state.read(returned)


_AGGREGATE_STAR: Final = (exp.Count, exp.AggFunc)


def _row_functions(query: exp.Expr, state: _State) -> set[RelationName]:
    """The relations whose row type functions called in FROM return, where the query reads
    their columns (``*``, ``alias.col``, or a bare column when the call is the only source)."""
    if not state.returns:
        return set()
    found: set[RelationName] = set()
    for table in query.find_all(exp.Table):
        call = table.this
        if not isinstance(call, exp.Anonymous) or str(call.name) not in state.returns:
            continue
        select = table.find_ancestor(exp.Select)
        if select is None:
            continue
        alias = table.alias_or_name
        sources = len(list(select.find_all(exp.Table)))
        uses = any(not isinstance(star.parent, _AGGREGATE_STAR)
                   for star in select.find_all(exp.Star))
        uses = uses or any(col.table == alias or (not col.table and sources == 1)
                           for col in select.find_all(exp.Column))
        if uses:
            found.add(state.returns[str(call.name)])
    return found


def _is_search_path_reset(token: Token) -> bool:
    return token.text.strip().lower() in ("search_path", "all")


# sqlglot descriptions that name its internals (a class, a token's repr, its end-of-input
# marker); they are said as PostgreSQL says a syntax error, at the token found.
_INTERNAL_MARKS: Final = ("<class ", "<Token ", "SENTINEL", "Required keyword",
                          "Invalid expression", "Unexpected token", "Failed to parse")


def _tokenize_message(exc: TokenError) -> str:
    """A tokenizer failure in a line, without the statement's text."""
    return "cannot read the statement (an unterminated quote, comment or dollar quote?)" \
        if "Error tokenizing" in str(exc) else f"cannot read the statement: {exc}"


def _describe(exc: SqlglotError, stmt: _Statement) -> tuple[str, tuple[int, int] | None]:
    """sqlglot's error as a message and the file's (line, column) it points at.

    The position is counted from the token's offset in the text (sqlglot's own lines are
    wrong after a ``$1``); a description naming parser internals becomes PostgreSQL's
    ``syntax error at or near "x"`` (``at end of input``).
    """
    details = (exc.errors[0] if exc.errors else {}) if isinstance(exc, ParseError) else {}
    description = str(details.get("description") or str(exc).split("\n", 1)[0])
    at = recovery.error_index(stmt.tokens, details.get("line"), details.get("col"))
    token = stmt.tokens[at] if at is not None else None
    past_end = token is not None and (
        (at == len(stmt.tokens) - 1 and details.get("col") != token.col)
        or "SENTINEL" in description)
    if any(mark in description for mark in _INTERNAL_MARKS):
        if token is None or past_end:
            description = "syntax error at end of input"
        else:
            description = f'syntax error at or near "{stmt.text(token, token)}"'
    if token is None:
        return description, None
    if past_end:
        line, column = stmt.position(token.end + 1)
        return description, (line, column)
    return description, stmt.position(token.start)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: parsing allocates millions of short-lived objects."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def parse_script(
    text: str, *, path: str = "<sql>", search_path: Sequence[str] = ("public",),
    keep_going: bool = False,
) -> ScriptResult:
    """Turn a SQL script into events, in statement order.

    Acts on CREATE TABLE / VIEW / MATERIALIZED VIEW (GaussDB clauses included) / SEQUENCE, ALTER ...
    RENAME TO / SET SCHEMA, ALTER MATERIALIZED VIEW ... REFRESH / QUERY REWRITE, DROP of those
    kinds and SET search_path (which changes how later statements resolve names); every other
    statement, including ones that cannot be parsed at all, is counted in ``ignored``. psql's
    meta-commands and ``COPY ... FROM stdin`` data are skipped.

    Args:
        text: The script.
        path: Named in ``Definition.source`` ("path:line") and in errors.
        search_path: The search path the script starts with.
        keep_going: Collect malformed statements in ``errors`` and go on instead of raising.

    Returns:
        The events, the number of ignored statements and (``keep_going``) the errors.

    Raises:
        SqlParseError: A CREATE VIEW / MATERIALIZED VIEW / TABLE (or a relevant ALTER, DROP or
            SET search_path) is malformed; names the path and the statement's first line.
            The first one, after reading the whole script, unless ``keep_going``.

    Example:
        >>> result = parse_script(
        ...     "SET search_path TO app;\\n"
        ...     "CREATE TABLE t (id int);\\n"
        ...     "CREATE INDEX ON t (id);\\n"
        ...     "CREATE MATERIALIZED VIEW mv AS SELECT id, now() FROM t WITH NO DATA;",
        ...     path="x.sql",
        ... )
        >>> result.ignored
        1
        >>> mv = result.events[-1].definition
        >>> str(mv.name), sorted(map(str, mv.reads)), mv.populated, mv.volatile_functions, mv.source
        ('app.mv', ['app.t'], False, ('now',), 'x.sql:4')
    """
    initial = _clean_path(search_path)
    state = _State(initial, initial, {})
    events: list[Event] = []
    errors: list[SqlParseError] = []
    error_at: list[int] = []
    ignored = 0
    parser = _DIALECT.parser()
    with _gc_paused():
        for stmt in _script_statements(text, path):
            if stmt is None:
                ignored += 1
            elif isinstance(stmt, SqlParseError):
                errors.append(stmt)
                error_at.append(len(events))
            else:
                try:
                    ignored += not _apply(stmt, parser, state, path, events)
                except SqlglotError as exc:
                    message, at = _describe(exc, stmt)
                    errors.append(SqlParseError(message, path, stmt.line, stmt.first_line(),
                                                at=at))
                    error_at.append(len(events))
                except Exception as exc:
                    # A bug in sqlglot or here must cost this statement only, never the run.
                    message = f"cannot parse statement ({type(exc).__name__}: {exc})"
                    errors.append(SqlParseError(message, path, stmt.line, stmt.first_line()))
                    error_at.append(len(events))
                    parser = _DIALECT.parser()  # its state may be half-way through anything
    if errors and not keep_going:
        raise errors[0]
    return ScriptResult(tuple(events), ignored, tuple(errors), tuple(error_at))


def parse_alter_refresh(
    statement_text: str, *, search_path: Sequence[str] = ("public",)
) -> tuple[RelationName, Schedule] | None:
    """Read ``ALTER MATERIALIZED VIEW v REFRESH ...`` (or ``... QUERY REWRITE``).

    Returns None for any other statement. An unqualified name resolves to the first schema of
    ``search_path``. Fields of the Schedule left None were not given.

    Raises:
        SqlParseError: The statement is such an ALTER but malformed.

    Example:
        >>> parse_alter_refresh("ALTER MATERIALIZED VIEW s.v REFRESH default;")
        (RelationName(schema='s', name='v'), Schedule(behavior='DEFAULT', start=None, every=None, query_rewrite=None))
        >>> parse_alter_refresh("ALTER MATERIALIZED VIEW v RENAME TO w") is None
        True
    """  # noqa: E501
    try:
        tokens = _DIALECT.tokenize(statement_text)
    except TokenError as exc:
        first = statement_text.strip().split("\n", 1)[0]
        raise SqlParseError(_tokenize_message(exc), "<sql>", 1, first) from None
    chunks = list(_split_statements(tokens))
    if len(chunks) != 1:
        return None
    stmt = _Statement(chunks[0], statement_text)
    cur = _Cursor(stmt)
    if not cur.accept("ALTER"):
        return None
    try:
        alter = _parse_alter(cur, _DIALECT.parser())
    except ParseError as exc:
        message, at = _describe(exc, stmt)
        raise SqlParseError(message, "<sql>", stmt.line, stmt.first_line(), at=at) from None
    if alter is None:
        return None
    schedule = _schedule(alter.args.get("actions") or [])
    if schedule is None:
        return None
    table = alter.this
    assert isinstance(table, exp.Table)
    state = _State(_clean_path(search_path), _clean_path(search_path), {})
    return state.read(_parts(table)), schedule


@dataclass(frozen=True, slots=True)
class RelationHead:
    """The head of a ``CREATE ... TABLE`` or ``CREATE ... VIEW`` statement, read from its tokens
    alone (its query is not parsed): enough to run the statement under another name.

    ``name_span`` and ``data_span`` are (start, end) offsets into the statement's text, end
    exclusive; ``data_span`` covers a trailing ``WITH [NO] DATA``.
    """

    view: bool
    materialized: bool
    parts: tuple[str, ...]
    name_span: tuple[int, int]
    has_query: bool
    no_data: bool
    data_span: tuple[int, int] | None


def _create_cursor(statement: str) -> _Cursor | None:
    """A cursor after the CREATE of a script holding one CREATE statement, else None."""
    try:
        chunks = list(_split_statements(_DIALECT.tokenize(statement)))
    except TokenError:
        return None
    if len(chunks) != 1:
        return None
    cur = _Cursor(_Statement(chunks[0], statement))
    return cur if cur.accept("CREATE") else None


def relation_head(statement: str) -> RelationHead | None:
    """Read the head of one ``CREATE [OR REPLACE] [modifiers] {TABLE|VIEW}`` statement.

    Returns None for any other statement, or one whose head cannot be read.

    Example:
        >>> h = relation_head('CREATE MATERIALIZED VIEW s."M" AS SELECT a <<< 1 FROM t')
        >>> h.parts, h.name_span, h.has_query, h.no_data
        (('s', 'M'), (25, 30), True, False)
    """
    cur = _create_cursor(statement)
    head = None if cur is None else _create_head(cur)
    if cur is None or head is None:
        return None
    _, modifiers, obj = head
    cur.accept("IF", "NOT", "EXISTS")
    first = cur.i
    try:
        parts = tuple(part for part, _ in cur.name())
    except ParseError:
        return None
    tokens = cur.tokens
    name_span = (tokens[first].start, tokens[cur.i - 1].end + 1)
    depth = 0
    has_query = obj == "VIEW"
    for token in tokens[cur.i :]:
        if token.token_type == _T.L_PAREN:
            depth += 1
        elif token.token_type == _T.R_PAREN:
            depth -= 1
        elif depth == 0 and token.token_type == _T.ALIAS:
            has_query = True
            break
    words = [_word(t) for t in tokens[-3:]]
    data_span: tuple[int, int] | None = None
    no_data = False
    if has_query and words[-3:] == ["WITH", "NO", "DATA"]:
        data_span, no_data = (tokens[-3].start, tokens[-1].end + 1), True
    elif has_query and words[-2:] == ["WITH", "DATA"]:
        data_span = (tokens[-2].start, tokens[-1].end + 1)
    return RelationHead(obj == "VIEW", "MATERIALIZED" in modifiers, parts, name_span, has_query,
                        no_data, data_span)


def postgres_create_matview(statement: str) -> str | None:
    """The PostgreSQL text of a ``CREATE MATERIALIZED VIEW`` that may carry GaussDB's clauses
    (``BUILD``, ``REFRESH ... [START WITH (...)] [EVERY (...)]``, ``{ENABLE|DISABLE} QUERY
    REWRITE``): those clauses are cut out (schedules are not kept yet), the rest is kept as
    written. None for any other statement, or one whose head cannot be read.

    Example:
        >>> postgres_create_matview("CREATE MATERIALIZED VIEW m REFRESH CASCADE ALL "
        ...                         "START WITH (now()) EVERY (interval '1 h') AS SELECT 1")
        'CREATE MATERIALIZED VIEW m AS SELECT 1'
        >>> postgres_create_matview("CREATE VIEW v AS SELECT 1") is None
        True
    """
    cur = _create_cursor(statement)
    head = None if cur is None else _create_head(cur)
    if cur is None or head is None or head[2] != "VIEW" or "MATERIALIZED" not in head[1]:
        return None
    cur.accept("IF", "NOT", "EXISTS")
    try:
        cur.name()
        if cur.is_type(_T.L_PAREN):
            cur.group()
        cuts: list[tuple[int, int]] = []
        while not cur.at_end() and cur.word() != "AS":
            first = cur.i
            word = cur.word()
            if word == "BUILD":
                cur.i += 2
            elif word == "REFRESH":
                cur.i += 1
                _parse_refresh(cur, _DIALECT.parser())
            elif _query_rewrite(cur) is None:  # USING, WITH (...), TABLESPACE: kept
                cur.i += 1
                if cur.is_type(_T.L_PAREN):
                    cur.group()
                continue
            cuts.append((cur.tokens[first].start, cur.tokens[cur.i - 1].end + 1))
    except (ParseError, IndexError):
        return None
    text = statement[: cur.tokens[-1].end + 1]
    for start, end in reversed(cuts):
        text = text[:start].rstrip() + " " + text[end:].lstrip()
    return text.strip()
