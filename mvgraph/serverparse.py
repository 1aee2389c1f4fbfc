"""The server as the parser of last resort: PostgreSQL resolves the views sqlglot cannot parse.

Everything happens in one transaction that is always rolled back, under a local statement and
lock timeout. The scripts are walked in load order up to the last failing statement; on the way,
what a failing view may need is created as the files give it, each in a savepoint whose failure
is ignored: ``SET search_path``, ``CREATE SCHEMA / TYPE / DOMAIN / FUNCTION / OPERATOR /
COLLATION / SEQUENCE / CAST``, and the tables and views the database lacks (a relation it
already has is never touched; queries of tables and materialized views get ``WITH NO DATA``, so
no query runs). A failing view is then created as written, under its own name when the database
lacks it (later statements may read it), else under a scratch name in a schema made for the
transaction; one catalog read (``catalog.read_definitions``) gives what each one reads. Nothing
is left behind, and statements sqlglot parsed are never resolved again.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Sequence

import psycopg
from psycopg import sql

from mvgraph.catalog import read_definitions
from mvgraph.db.connect import connect
from mvgraph.db.queries import query
from mvgraph.definitions import Definition
from mvgraph.dialect import Define, RelationHead, relation_head, split_statements
from mvgraph.errors import SqlEncodingError, SqlParseError, translated
from mvgraph.names import RelationName
from mvgraph.sqlfiles import Resolver

STATEMENT_TIMEOUT = "10s"  # per statement tried in the server
LOCK_TIMEOUT = "2s"
RESOLVED = "resolved by the server"  # appended to a definition's source: "file.sql:12 (...)"

# Statements replayed as written (in a savepoint) because a view may need what they create.
_REPLAYED = re.compile(
    r"(CREATE\s+(OR\s+REPLACE\s+)?(SCHEMA|TYPE|DOMAIN|FUNCTION|OPERATOR|COLLATION|SEQUENCE|CAST|"
    r"(TEMP|TEMPORARY|UNLOGGED)\s+SEQUENCE)\b"
    r"|SET\s+(SESSION\s+|LOCAL\s+)?search_path\b|RESET\s+search_path\b)", re.IGNORECASE)
_CREATE = re.compile(r"\s*CREATE\b", re.IGNORECASE)
_RESET_ALL = re.compile(r"RESET\s+ALL\s*\Z", re.IGNORECASE)

Conn = psycopg.Connection[tuple[object, ...]]


def server_resolver(server: str | Conn) -> Resolver:
    """A resolver for ``sqlfiles.load_sql`` that asks the server at ``server`` (a DSN, or a
    connection not inside a transaction); a DSN is connected to only when something failed."""

    def resolve(scripts: Sequence[tuple[str, str]], failures: Sequence[SqlParseError],
                search_path: Sequence[str]) -> list[Define | SqlParseError]:
        if not any(_resolvable(e) for e in failures):
            return list(failures)
        if isinstance(server, str):
            with connect(server) as conn:
                return resolve_statements(conn, scripts, failures, search_path)
        return resolve_statements(server, scripts, failures, search_path)

    return resolve


def _resolvable(error: SqlParseError) -> bool:
    """A statement failure that may be a CREATE ... VIEW (the error keeps its first line)."""
    return not isinstance(error, SqlEncodingError) and bool(_CREATE.match(error.statement))


@dataclasses.dataclass(slots=True)
class _Made:
    """A failing view the server created: its index among the failures, the name the files
    give it, and the statement (line, text)."""

    index: int
    name: RelationName
    line: int
    text: str
    head: RelationHead


def resolve_statements(conn: Conn, scripts: Sequence[tuple[str, str]],
                       failures: Sequence[SqlParseError], search_path: Sequence[str]
                       ) -> list[Define | SqlParseError]:
    """For each failure, the Define the server resolved it to, or the failure (with the
    server's own message when it refused the statement too). See the module docstring.

    Raises:
        DatabaseError, ConnectionFailed: the server failed outside the statements tried.
    """
    answers: list[Define | SqlParseError] = list(failures)
    waiting: dict[tuple[str, int], list[int]] = {}
    for index, error in enumerate(failures):
        if _resolvable(error):
            waiting.setdefault((error.path, error.line), []).append(index)
    last = max((order for order, (_, path) in enumerate(scripts)
                if any(p == path for p, _ in waiting)), default=-1)
    made: dict[RelationName, _Made] = {}
    scratch = f"mvgraph_probe_{uuid.uuid4().hex[:12]}"
    with translated(), conn.transaction(force_rollback=True):
        conn.execute(query("probe_limits"), {"statement_timeout": STATEMENT_TIMEOUT,
                                             "lock_timeout": LOCK_TIMEOUT})
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(scratch)))
        initial = ", ".join(sql.Identifier(s).as_string(conn) for s in search_path)
        for text, path in scripts[: last + 1]:
            conn.execute(query("probe_search_path"), {"search_path": initial})
            for line, statement in split_statements(text):
                indexes = waiting.get((path, line))
                head = relation_head(statement)
                if indexes and head is not None and head.view:
                    index = indexes.pop(0)
                    answer = _create_failing(conn, statement, head, failures[index], scratch,
                                             len(made))
                    if isinstance(answer, SqlParseError):
                        answers[index] = answer
                    else:
                        made[answer] = _Made(index, _target(conn, head), line, statement, head)
                elif head is not None:
                    _replay_relation(conn, statement, head)
                elif _RESET_ALL.match(statement):
                    conn.execute(query("probe_search_path"), {"search_path": initial})
                elif _REPLAYED.match(statement):
                    _try(conn, statement)
        if made:
            schemas = sorted({name.schema for name in made})
            for found in read_definitions(conn, schemas, with_sql=False):
                if found.name in made:
                    item = made.pop(found.name)
                    answers[item.index] = _define(found, item, failures[item.index])
    return answers


def _target(conn: Conn, head: RelationHead) -> RelationName:
    """Where the statement creates its relation: as written, else the current schema."""
    if len(head.parts) >= 2:
        return RelationName(head.parts[-2], head.parts[-1])
    row = conn.execute(query("probe_current_schema")).fetchone()
    return RelationName(str(row[0]) if row and row[0] is not None else "public", head.parts[-1])


def _exists(conn: Conn, name: RelationName) -> bool:
    row = conn.execute(query("probe_relation_exists"),
                       {"schema": name.schema, "name": name.name}).fetchone()
    return bool(row and row[0])


def _edited(conn: Conn, statement: str, head: RelationHead,
            rename: sql.Identifier | None) -> str:
    """The statement with ``rename`` as its name, and WITH NO DATA when it has a query that
    CREATE would run (materialized views, CREATE TABLE AS)."""
    text = statement
    if head.has_query and (head.materialized or not head.view):
        if head.data_span is None:
            text += " WITH NO DATA"
        else:
            start, end = head.data_span
            text = text[:start] + "WITH NO DATA" + text[end:]
    if rename is not None:
        start, end = head.name_span
        text = text[:start] + rename.as_string(conn) + text[end:]
    return text


def _try(conn: Conn, statement: str) -> psycopg.Error | None:
    """Run one statement in a savepoint; the error if the server refused it."""
    try:
        with conn.transaction():
            conn.execute(statement.encode())
    except psycopg.Error as exc:
        if isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None:
            raise  # the connection is gone, not the statement
        return exc
    return None


def _replay_relation(conn: Conn, statement: str, head: RelationHead) -> None:
    """Create a table or view the files give, unless the database already has that name."""
    if not _exists(conn, _target(conn, head)):
        _try(conn, _edited(conn, statement, head, None))


def _create_failing(conn: Conn, statement: str, head: RelationHead, error: SqlParseError,
                    scratch: str, number: int) -> RelationName | SqlParseError:
    """Create a view sqlglot could not parse; the name it was created under, or the error with
    the server's reason."""
    target = _target(conn, head)
    created: RelationName = target
    rename: sql.Identifier | None = None
    if _exists(conn, target):
        created = RelationName(scratch, f"v{number}")
        rename = sql.Identifier(created.schema, created.name)
    refused = _try(conn, _edited(conn, statement, head, rename))
    if refused is None:
        return created
    diag = getattr(refused, "diag", None)
    reason = (diag.message_primary if diag is not None else None) or str(refused).strip()
    return SqlParseError(f"{error.message}; PostgreSQL refused it too: {reason.splitlines()[0]}",
                         error.path, error.line, error.statement)


def _define(found: Definition, item: _Made, error: SqlParseError) -> Define:
    """The definition the files give, as the server read it."""
    definition = dataclasses.replace(
        found,
        name=item.name,
        sql=item.text,
        owner=None,
        populated=(not item.head.no_data) if item.head.materialized else None,
        concurrent_index=None,
        source=f"{error.path}:{item.line} ({RESOLVED})",
    )
    return Define(definition, frozenset(), ())
