"""GaussDB's materialized-view schedule statements in the SQL front-end (``mvgraph sql``).

* ``CREATE MATERIALIZED VIEW v [BUILD ...] REFRESH [behaviour] START WITH (ts) EVERY (iv)
  [ENABLE|DISABLE QUERY REWRITE] AS query``: the view is created by PostgreSQL without the
  GaussDB clauses, and its schedule added, in one transaction.
* ``ALTER MATERIALIZED VIEW v REFRESH [behaviour] [START WITH (ts)] [EVERY (iv)]``: the
  schedule changes (``REFRESH default`` alone changes the behaviour and keeps the clock).
* ``CREATE TABLE ... WITH (ORIENTATION = COLUMN, ...) DISTRIBUTE BY hash(c)``: GaussDB-only
  storage clauses are dropped with a notice (PostgreSQL has no such storage).
* Any ``DROP``: schedules whose view is gone are removed (the sql_drop event trigger does it
  for drops made outside mvgraph, where it is installed).

``classify`` is pure (checked before a script runs); ``run`` does the I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg
from sqlglot.errors import SqlglotError, TokenError
from sqlglot.tokenizer_core import Token, TokenType

from mvgraph.errors import SqlParseError
from mvgraph.model.definitions import Schedule as ScheduleClause
from mvgraph.model.names import RelationName
from mvgraph.sql.dialect import Define, MvgraphPostgres, parse_alter_refresh, parse_script

Conn = psycopg.Connection[tuple[object, ...]]
_UNQUALIFIED = "\x00"  # a schema no name has: marks a name written without one
# Storage options of GaussDB tables that PostgreSQL has no use for.
_GAUSS_OPTIONS = frozenset({
    "ORIENTATION", "COLVERSION", "COMPRESSION", "COMPRESSLEVEL", "MAX_BATCHROW",
    "PARTIAL_CLUSTER_ROWS", "DELTAROW_THRESHOLD", "STORAGE_TYPE", "SEGMENT", "HASHBUCKET",
    "BUCKETCNT", "INTERNAL_MASK", "ENABLE_DELTA", "COMPRESSTYPE", "COMPRESS_LEVEL",
    "COMPRESS_CHUNK_SIZE", "COMPRESS_PREALLOC_CHUNKS", "COMPRESS_BYTE_CONVERT",
    "COMPRESS_DIFF_CONVERT", "ENABLE_TDE", "ENCRYPT_ALGO", "DEK_CIPHER", "CMK_ID",
})


@dataclass(frozen=True, slots=True)
class GaussStatement:
    """A statement the front-end rewrites: ``plain`` is what PostgreSQL runs (None: nothing)."""

    kind: str  # "create_mv", "alter_mv", "create_table", "drop"
    plain: str | None
    name: RelationName | None = None  # schema _UNQUALIFIED when written without one
    clause: ScheduleClause | None = None
    notices: tuple[str, ...] = ()


@dataclass(slots=True)
class Result:
    """What running one rewritten statement did."""

    status: str
    notices: list[str] = field(default_factory=list)


def classify(text: str) -> GaussStatement | None:
    """Recognise the statements above; None for everything else (run as written).

    >>> classify("CREATE TABLE t (a int) WITH (ORIENTATION = COLUMN) DISTRIBUTE BY hash(a)").plain
    'CREATE TABLE t (a int)'

    Raises:
        SqlParseError: such a statement, malformed.
    """
    try:
        tokens = [t for t in MvgraphPostgres().tokenize(text)
                  if t.token_type != TokenType.SEMICOLON]
    except TokenError:
        return None
    words = [_word(t) for t in tokens[:4]]
    if words[:1] == ["DROP"]:
        return GaussStatement("drop", text)
    if words[:3] == ["CREATE", "MATERIALIZED", "VIEW"]:
        return _create_mv(text, tokens)
    if words[:3] == ["ALTER", "MATERIALIZED", "VIEW"]:
        return _alter_mv(text)
    if words[:1] == ["CREATE"] and "TABLE" in words[1:4]:
        return _create_table(text, tokens)
    return None


def _word(tok: Token) -> str:
    return tok.text.upper() if tok.token_type != TokenType.IDENTIFIER else f'"{tok.text}"'


def _syntax(text: str, message: str) -> SqlParseError:
    return SqlParseError(f"syntax error: {message}", statement=text.strip().split("\n", 1)[0])


def _top_level(tokens: list[Token], begin: int) -> list[tuple[int, int]]:
    """(index, depth) of each token from ``begin``."""
    out, depth = [], 0
    for i in range(begin, len(tokens)):
        kind = tokens[i].token_type
        if kind == TokenType.R_PAREN:
            depth -= 1
        out.append((i, depth))
        if kind == TokenType.L_PAREN:
            depth += 1
    return out


def _cut(text: str, spans: Sequence[tuple[int, int, str]]) -> str:
    """``text`` with each character span (start, end exclusive) replaced by its text."""
    out, at = [], 0
    for start, end, new in sorted(spans):
        out.append(text[at:start] + new)
        at = end
    out.append(text[at:])
    return "".join(out).strip().rstrip(";").rstrip()


def _create_mv(text: str, tokens: list[Token]) -> GaussStatement | None:
    try:
        events = parse_script(text, search_path=(_UNQUALIFIED,)).events
    except SqlParseError as exc:
        raise _syntax(text, exc.message) from None
    except SqlglotError:
        return None
    define = next((e for e in events if isinstance(e, Define)), None)
    if define is None or define.definition.schedule is None:
        return None
    clause = define.definition.schedule
    spans: list[tuple[int, int, str]] = []
    notices: list[str] = []
    level = _top_level(tokens, 3)
    i = 0
    while i < len(level):
        idx, depth = level[i]
        word = _word(tokens[idx])
        if depth == 0 and tokens[idx].token_type == TokenType.ALIAS:
            break
        if depth == 0 and word in ("REFRESH", "BUILD", "ENABLE", "DISABLE"):
            j = i + 1
            while j < len(level):
                jdx, jdepth = level[j]
                jword = _word(tokens[jdx])
                after_start = _word(tokens[jdx - 1]) == "START"  # START WITH goes on
                if jdepth == 0 and (tokens[jdx].token_type == TokenType.ALIAS or jword in (
                        "REFRESH", "BUILD", "ENABLE", "DISABLE", "USING", "TABLESPACE")
                        or (jword == "WITH" and not after_start)):
                    break
                j += 1
            last = tokens[level[j - 1][0]]
            spans.append((tokens[idx].start, last.end + 1, ""))
            if word in ("ENABLE", "DISABLE"):
                notices.append(f"{word} QUERY REWRITE accepted and ignored: PostgreSQL does not "
                               "rewrite queries to use materialized views")
            elif word == "BUILD":
                mode = _word(tokens[level[i + 1][0]]) if i + 1 < len(level) else ""
                if mode == "DEFERRED":
                    raise _syntax(text, "BUILD DEFERRED is not supported; write WITH NO DATA "
                                        "at the end instead")
            i = j
            continue
        i += 1
    plain = _cut(text, spans)
    _check_values(text, clause)
    has_clock = clause.every is not None or clause.start is not None
    return GaussStatement("create_mv", plain, define.definition.name,
                          clause if has_clock or clause.behavior else None, tuple(notices))


def _alter_mv(text: str) -> GaussStatement | None:
    try:
        found = parse_alter_refresh(text, search_path=(_UNQUALIFIED,))
    except SqlParseError as exc:
        raise _syntax(text, exc.message) from None
    if found is None:
        return None
    name, clause = found
    _check_values(text, clause)
    notices = []
    if clause.query_rewrite is not None:
        word = "ENABLE" if clause.query_rewrite else "DISABLE"
        notices.append(f"{word} QUERY REWRITE accepted and ignored: PostgreSQL does not "
                       "rewrite queries to use materialized views")
    refresh = clause.behavior is not None or clause.start is not None or clause.every is not None
    return GaussStatement("alter_mv", None, name, clause if refresh else None, tuple(notices))


def _check_values(text: str, clause: ScheduleClause) -> None:
    """START WITH and EVERY must be values (checked before any statement of a script runs)."""
    from mvgraph.scheduler.clauses import check_clause, clause_message

    for label, value in (("START WITH", clause.start), ("EVERY", clause.every)):
        reason = check_clause(value) if value is not None else None
        if value is not None and reason is not None:
            raise SqlParseError(clause_message(label, value, reason),
                                statement=text.strip().split("\n", 1)[0])


def _create_table(text: str, tokens: list[Token]) -> GaussStatement | None:
    """Drop GaussDB-only storage options, ``DISTRIBUTE BY ...`` and ``TO {GROUP|NODE} ...``."""
    level = _top_level(tokens, 2)
    spans: list[tuple[int, int, str]] = []
    notices: list[str] = []
    seen_columns = False
    i = 0
    while i < len(level):
        idx, depth = level[i]
        tok = tokens[idx]
        word = _word(tok)
        if depth == 0 and tok.token_type == TokenType.ALIAS:
            break  # CREATE TABLE ... AS query: the query is left alone
        if depth == 0 and tok.token_type == TokenType.L_PAREN and not seen_columns:
            seen_columns = True
        elif depth == 0 and word == "WITH" and seen_columns and i + 1 < len(level) \
                and tokens[level[i + 1][0]].token_type == TokenType.L_PAREN:
            end = _group_end(level, i + 1)
            kept, dropped = _split_options(text, tokens, [x for x, _ in level[i + 2:end]])
            if dropped:
                notices.append(f"storage option{'s' if len(dropped) > 1 else ''} "
                               f"{', '.join(dropped)} dropped: GaussDB only")
                spans.append((tok.start, tokens[level[end][0]].end + 1,
                              f"WITH ({', '.join(kept)})" if kept else ""))
            i = end + 1
            continue
        elif depth == 0 and " ".join(word.split()) == "DISTRIBUTE BY":  # one token
            end = _clause_end(tokens, level, i + 1)
            spans.append((tok.start, tokens[level[end][0]].end + 1, ""))
            notices.append(f"{_snippet(text, spans[-1])} dropped: PostgreSQL does not "
                           "distribute tables")
            i = end + 1
            continue
        elif depth == 0 and word == "TO" and i + 1 < len(level) \
                and _word(tokens[level[i + 1][0]]) in ("GROUP", "NODE"):
            end = _clause_end(tokens, level, i + 2)
            spans.append((tok.start, tokens[level[end][0]].end + 1, ""))
            notices.append(f"{_snippet(text, spans[-1])} dropped: GaussDB only")
            i = end + 1
            continue
        i += 1
    if not spans:
        return None
    return GaussStatement("create_table", _cut(text, spans), notices=tuple(notices))


def _group_end(level: list[tuple[int, int]], opening: int) -> int:
    """Position (in ``level``) of the parenthesis closing the one at ``opening``."""
    depth = level[opening][1]
    for k in range(opening + 1, len(level)):
        if level[k][1] == depth:
            return k
    return len(level) - 1


def _clause_end(tokens: list[Token], level: list[tuple[int, int]], k: int) -> int:
    """Last position of ``word [word] [( ... )]`` starting at ``k``."""
    end = min(k, len(level) - 1)
    while end + 1 < len(level) and level[end + 1][1] == 0 \
            and tokens[level[end + 1][0]].token_type == TokenType.L_PAREN:
        end = _group_end(level, end + 1)
    if end == k and k + 1 < len(level) \
            and tokens[level[k + 1][0]].token_type == TokenType.L_PAREN:
        end = _group_end(level, k + 1)
    return end


def _split_options(text: str, tokens: list[Token], inner: list[int]) -> tuple[list[str],
                                                                              list[str]]:
    """The ``WITH (...)`` options as (kept texts, dropped GaussDB keys)."""
    items: list[list[int]] = [[]]
    depth = 0
    for x in inner:
        kind = tokens[x].token_type
        if kind == TokenType.COMMA and depth == 0:
            items.append([])
            continue
        depth += (kind == TokenType.L_PAREN) - (kind == TokenType.R_PAREN)
        items[-1].append(x)
    kept, dropped = [], []
    for item in items:
        if not item:
            continue
        key = tokens[item[0]].text.upper()
        body = text[tokens[item[0]].start:tokens[item[-1]].end + 1]
        if key in _GAUSS_OPTIONS:
            dropped.append(" ".join(body.split()))
        else:
            kept.append(body)
    return kept, dropped


def _snippet(text: str, span: tuple[int, int, str]) -> str:
    return " ".join(text[span[0]:span[1]].split())


# ---- running ---------------------------------------------------------------------------------

def run(conn: Conn, gs: GaussStatement, source: str) -> Result:
    """Run one rewritten statement; schedule changes and the statement share a transaction.

    Raises:
        MvgraphError: the statement or the schedule change failed (nothing of it stays).
    """
    from mvgraph.errors import translated
    from mvgraph.scheduler import store

    result = Result("", list(gs.notices))
    if gs.kind == "drop":  # as written (DROP DATABASE cannot run in a transaction block)
        with translated():
            cur = conn.execute((gs.plain or "").encode())
        result.status = cur.statusmessage or ""
        for name in store.remove_orphans(conn):
            result.notices.append(f"schedule of {name} removed with its view")
        return result
    with conn.transaction():
        if gs.plain is not None:
            with translated():
                cur = conn.execute(gs.plain.encode())
            result.status = cur.statusmessage or ""
        if gs.kind in ("create_mv", "alter_mv"):
            result.status = f"{gs.kind.split('_')[0].upper()} MATERIALIZED VIEW"  # GaussDB's
            result.notices += apply_schedule(conn, gs, source)
    return result


def apply_schedule(conn: Conn, gs: GaussStatement, source: str) -> list[str]:
    """Create, alter or keep the schedule a CREATE / ALTER MATERIALIZED VIEW's REFRESH clause
    gives its (existing) view; returns the notices to show."""
    from mvgraph.scheduler import service, store

    if gs.clause is None or gs.name is None:
        return []
    oid, qualified = store.find_matview(conn, _written(gs.name), _session_path(conn))
    action, row = service.apply_clause(conn, oid, qualified, gs.clause, source=source)
    if row is not None and action != "unchanged":
        return [f"schedule {action}: {row.what}, {service.describe_clock(row)}"]
    if action == "none":
        return [f"{qualified} has no schedule: give EVERY (interval) to refresh it on a clock"]
    return []


def _written(name: RelationName) -> str:
    from mvgraph.model.names import quote_ident

    return quote_ident(name.name) if name.schema == _UNQUALIFIED else str(name)


def _session_path(conn: Conn) -> list[str]:
    from mvgraph.db.queries import query

    row = conn.execute(query("current_schemas")).fetchone()
    return list(row[0]) if row and isinstance(row[0], list) else ["public"]
