"""The SQL front-end (``mvgraph sql``): GaussDB statement forms become library calls; every other
statement goes to PostgreSQL unchanged.

Statements of the front-end itself (never sent to PostgreSQL): ``SET BACKGROUND_DDL = true |
false`` (RisingWave: the script's following REFRESH and CREATE MATERIALIZED VIEW statements
become background jobs), ``SHOW JOBS`` (work in progress), ``CANCEL JOBS id [, id ...]``
(also ``CANCEL JOB``), ``SUSPEND JOB id`` and ``RESUME JOB id``, also written ``SUSPEND 'id'``
and ``RESUME 'id'`` (Hologres' form for a rebuild's query id). With
``background`` every statement but these is queued as a job (``mvgraph.submit``, which
validates a REFRESH's view at once) and its id returned at once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psycopg
from sqlglot.errors import TokenError
from sqlglot.tokenizer_core import Token, TokenType

from mvgraph.db.queries import query
from mvgraph.db.single import execute_one
from mvgraph.errors import (
    DatabaseError,
    MvgraphError,
    NotFound,
    PermissionDenied,
    SqlParseError,
    translate,
)
from mvgraph.model.names import quote_ident
from mvgraph.refresh.behavior import CASCADE_HINT, RefreshBehavior
from mvgraph.refresh.executor import RefreshReport
from mvgraph.sql.dialect import MvgraphPostgres, postgres_create_matview, split_statements
from mvgraph.sql.lexer import Kind, Scanner

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
    job: int | None = None  # the job a background statement was queued as
    texts: list[tuple[str | None, ...]] | None = None  # the server's text of each value


_SET_BACKGROUND = re.compile(
    r"^\s*SET\s+(?:SESSION\s+)?BACKGROUND_DDL\s*(?:=|\bTO\b)\s*'?(\w+)'?\s*(?:;\s*)?\Z",
    re.IGNORECASE)
_SHOW_JOBS = re.compile(r"^\s*SHOW\s+JOBS\s*(?:;\s*)?\Z", re.IGNORECASE)
# Linear patterns only (no two adjacent quantifiers that can take the same text): a
# statement's trailing ``;`` and blanks are stripped in Python, not by backtracking.
_STEER = re.compile(r"^\s*(CANCEL|SUSPEND|RESUME)\s+JOBS?\s+(.*)\Z",
                    re.IGNORECASE | re.DOTALL)
_TRUE, _FALSE = {"TRUE", "ON", "1", "YES"}, {"FALSE", "OFF", "0", "NO", "DEFAULT"}
_BACKGROUND_DDL = re.compile(r"^\s*(REFRESH|CREATE)\s+MATERIALIZED\s+VIEW\s", re.IGNORECASE)
_MATVIEW = re.compile(r"^\s*CREATE\s+MATERIALIZED\s+VIEW\s", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class JobStatement:
    """A statement of the front-end itself: ``verb`` is ``background`` (SET BACKGROUND_DDL,
    ``on`` says which way), ``show``, ``cancel``, ``suspend`` or ``resume`` (of ``ids``)."""

    verb: str
    ids: tuple[int, ...] = ()
    on: bool = False


def parse_job_statement(text: str) -> JobStatement | None:
    """Recognise the front-end's own statements; None for anything else.

    >>> parse_job_statement("set background_ddl = true")
    JobStatement(verb='background', ids=(), on=True)
    >>> parse_job_statement("CANCEL JOBS 4, 7;")
    JobStatement(verb='cancel', ids=(4, 7), on=False)
    >>> parse_job_statement("RESUME '12';")
    JobStatement(verb='resume', ids=(12,), on=False)
    >>> parse_job_statement("SET search_path = app") is None
    True

    Raises:
        SqlParseError: such a statement, malformed (a value that is not a boolean, ids that
            are not numbers, SUSPEND/RESUME of several jobs).
    """
    m = _SET_BACKGROUND.match(text)
    if m:
        value = m[1].upper()
        if value not in _TRUE | _FALSE:
            raise _syntax(text, f"BACKGROUND_DDL is true or false, not {m[1]!r}")
        return JobStatement("background", on=value in _TRUE)
    if _SHOW_JOBS.match(text):
        return JobStatement("show")
    m = _STEER.match(text)
    if m is None:
        return _hologres_steer(text)
    verb = m[1].lower()
    ids = m[2].rstrip()
    ids = ids[:-1].rstrip() if ids.endswith(";") else ids
    parts = [p.strip() for p in ids.split(",")]
    if not all(p.isdigit() for p in parts):
        raise _syntax(text, f"{m[1].upper()} JOBS takes job ids (numbers, comma-separated), "
                            "e.g. CANCEL JOBS 4, 7; list them with SHOW JOBS")
    if verb != "cancel" and len(parts) != 1:
        raise _syntax(text, f"{m[1].upper()} JOB takes one job id")
    return JobStatement(verb, tuple(int(p) for p in parts))


def _hologres_steer(text: str) -> JobStatement | None:
    """Hologres' ``SUSPEND '<id>'`` / ``RESUME '<id>'`` (no JOB; the id quoted or bare); None
    for anything else, ``SUSPEND JOB`` without an id included (PostgreSQL then says it)."""
    scanner = Scanner(text, standard_strings=True)
    found: list[tuple[Kind, str, bool]] = []
    while len(found) < 4 and (lexeme := scanner.next()) is not None:
        if lexeme.kind is not Kind.COMMENT:
            found.append((lexeme.kind, text[lexeme.start : lexeme.end], lexeme.closed))
        if len(found) == 1 and (found[0][0] is not Kind.WORD
                                or found[0][1].upper() not in ("SUSPEND", "RESUME")):
            return None
    if not found or [w.upper() for _, w, _ in found[1:2]] in (["JOB"], ["JOBS"]):
        return None
    verb = found[0][1].upper()
    if found[-1][0] is Kind.SEMICOLON:
        found.pop()
    kind, raw, closed = found[1] if len(found) == 2 else (Kind.OTHER, "", False)
    job = raw[1:-1] if kind is Kind.STRING and raw.startswith("'") and closed else raw
    if kind not in (Kind.STRING, Kind.NUMBER) or not (job.isascii() and job.isdigit()):
        raise _syntax(text, f"{verb} takes one job id, e.g. {verb} '12' (or {verb} JOB 12); "
                            "list them with SHOW JOBS")
    return JobStatement(verb.lower(), (int(job),))


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
                   parallel: int = 1, background: bool = False) -> Iterator[Outcome]:
    """Run a script statement by statement (autocommit), yielding each outcome.

    ``background``: every statement is queued as a job (``Outcome.job``), none runs here.

    Raises:
        SqlParseError: a GaussDB REFRESH form or a front-end statement is malformed (checked
            before anything runs).
        DatabaseError: a statement failed; the message names its line. Earlier statements stay.
    """
    from mvgraph.refresh.service import refresh
    from mvgraph.scheduler import statements as gauss

    statements = [(line, statement, _refresh_form(statement, source, line),
                   _job_form(statement, source, line), _gauss_form(statement, source, line))
                  for line, statement in split_statements(text)]  # no statement runs if any is bad
    rebuilds = {line: _rebuild_form(statement, source, line) for line, statement, *_ in statements}
    background_ddl = False
    for line, statement, refresh_stmt, job_stmt, gauss_stmt in statements:
        if rebuilds.get(line) is not None:
            yield _rebuild(conn, line, statement, source, background=background)
            continue
        if job_stmt is not None:
            if job_stmt.verb == "background":
                background_ddl = job_stmt.on
                yield Outcome(line, statement, status="SET")
            else:
                yield _steer(conn, line, statement, job_stmt, source)
            continue
        if background or (background_ddl and _BACKGROUND_DDL.match(statement)):
            job = _submit(conn, statement, refresh_stmt is not None, search_path, source, line)
            notices: list[str] = []
            if gauss_stmt is not None and gauss_stmt.kind == "create_mv":
                try:  # the view exists already (WITH NO DATA): its schedule comes with it
                    notices = [*gauss_stmt.notices,
                               *gauss.apply_schedule(conn, gauss_stmt, f"{source}:{line}")]
                except MvgraphError as exc:
                    raise _at(exc, source, line) from exc
            yield Outcome(line, statement, status=f"JOB {job}", job=job, notices=notices)
            continue
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
        runnable = postgres_create_matview(statement) if _MATVIEW.match(statement) else None
        try:  # passed untouched, no placeholders, as exactly one statement
            cur = execute_one(conn, runnable or statement)
        except psycopg.Error as exc:
            raise _failed(exc, source, line) from exc
        outcome = Outcome(line, statement, status=cur.statusmessage or "")
        if cur.description is not None:
            outcome.columns = [d.name for d in cur.description]
            outcome.rows = cur.fetchall()
            outcome.texts = _texts(cur)
        yield outcome


def _texts(cur: psycopg.Cursor[tuple[object, ...]]) -> list[tuple[str | None, ...]] | None:
    """Each value as the server wrote it (``t``, ``{1,2}``, JSON text; None for NULL), from
    the result psycopg keeps; None when the result is binary."""
    res = cur.pgresult
    if res is None or any(res.fformat(c) for c in range(res.nfields)):
        return None
    codec = cur.connection.info.encoding
    return [tuple(None if (v := res.get_value(r, c)) is None else bytes(v).decode(codec)
                  for c in range(res.nfields)) for r in range(res.ntuples)]


def _rebuild_form(statement: str, source: str, line: int) -> object | None:
    from mvgraph.rebuild.parse import parse_rebuild

    try:
        return parse_rebuild(statement)
    except SqlParseError as exc:
        raise SqlParseError(exc.message, source, line, exc.statement) from None


def _rebuild(conn: Conn, line: int, statement: str, source: str, *, background: bool
             ) -> Outcome:
    """ASYNC REBUILD: queued, its id returned at once (as Hologres' query_id); REBUILD: run
    here until it ends."""
    from mvgraph.model.status import RunStatus
    from mvgraph.rebuild import service
    from mvgraph.rebuild.parse import parse_rebuild

    stmt = parse_rebuild(statement)
    try:
        if background or (stmt is not None and stmt.asynchronous):
            job = service.submit(conn, statement)
            return Outcome(line, statement, columns=["query_id"], rows=[(str(job),)],
                           status=f"JOB {job}", job=job)
        job, status = service.run_here(conn, statement)
    except MvgraphError as exc:
        raise _at(exc, source, line) from exc
    if status is not RunStatus.OK:
        row = conn.execute(query("job_error"), {"job": job}).fetchone()
        raise DatabaseError(f"{source}:{line}: rebuild {job} {status.value}"
                            + (f": {row[0]}" if row and row[0] else ""))
    return Outcome(line, statement, columns=["query_id"], rows=[(str(job),)],
                   status="REBUILD", job=job)


def _job_form(statement: str, source: str, line: int) -> JobStatement | None:
    try:
        return parse_job_statement(statement)
    except SqlParseError as exc:
        raise SqlParseError(exc.message, source, line, exc.statement) from None


def _failed(exc: psycopg.Error, source: str, line: int) -> DatabaseError:
    err = translate(exc)
    return DatabaseError(f"{source}:{line}: {err}", getattr(err, "sqlstate", None))


_SUBMIT_RIGHTS = re.compile(
    r"for (function (submit|enqueue)|schema mvgraph)\b|needs mvgraph's operator level")


def _submit(conn: Conn, statement: str, is_refresh: bool, search_path: Sequence[str],
            source: str, line: int) -> int:
    """Queue one statement with ``mvgraph.submit``: a REFRESH resolves names through
    ``search_path`` (as in the foreground); a CREATE MATERIALIZED VIEW loses its GaussDB
    clauses (PostgreSQL creates it)."""
    from mvgraph.jobs import store

    text = (postgres_create_matview(statement) if _MATVIEW.match(statement) else None) \
        or statement
    try:
        if not is_refresh:
            return store.submit(conn, text)
        with conn.transaction():
            conn.execute(query("set_local_search_path"),
                         {"path": ", ".join(quote_ident(s) for s in search_path)})
            return store.submit(conn, text)
    except PermissionDenied as exc:
        user = conn.info.user
        if _SUBMIT_RIGHTS.search(str(exc)):
            raise PermissionDenied(f"{source}:{line}: role {user} may not submit jobs; an "
                                   f"administrator runs: mvgraph grant {user} --operator"
                                   ) from None
        raise PermissionDenied(f"{source}:{line}: {exc}") from None
    except NotFound as exc:  # a REFRESH of nothing: exit 4 at once, as in the foreground
        raise type(exc)(f"{source}:{line}: {exc}") from None
    except MvgraphError as exc:
        raise DatabaseError(f"{source}:{line}: {exc}", getattr(exc, "sqlstate", None)) from None


def _steer(conn: Conn, line: int, statement: str, stmt: JobStatement,
           source: str) -> Outcome:
    """SHOW JOBS (work in progress, as RisingWave's: the queued, running and suspended rows of
    ``mvgraph jobs``), CANCEL / SUSPEND / RESUME JOB."""
    from mvgraph.jobs import store

    try:
        if stmt.verb == "show":
            store.reap(conn)
            found = [j.to_dict() for j in store.jobs(conn, active=True)]
            columns = list(found[0]) if found else ["id", "kind", "statement", "status"]
            return Outcome(line, statement, columns=columns,
                           rows=[tuple(j.values()) for j in found], status=f"SHOW {len(found)}")
        verb = getattr(store, stmt.verb)
        results = [(job, str(verb(conn, job))) for job in stmt.ids]
    except MvgraphError as exc:
        exc.args = (f"{source}:{line}: {exc}",)
        raise
    return Outcome(line, statement, columns=["id", "status"], rows=list(results),
                   status=f"{stmt.verb.upper()} {len(results)}")
