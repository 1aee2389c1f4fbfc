"""Executing text from a file or a user as exactly one statement.

psycopg sends a query without parameters with the simple query protocol, in which the server
runs every statement the text holds. ``execute_one`` always uses the extended protocol (one
Parse message), in which the server refuses a text that holds more than one statement, so a
statement mvgraph's splitter misread can never carry others along.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg._queries import PostgresQuery

Conn = psycopg.Connection[Any]


class OneStatementCursor(psycopg.Cursor[Any]):
    """A cursor whose every execute goes through the extended query protocol."""

    def _execute_send(self, query: PostgresQuery, *, force_extended: bool = False,
                      binary: bool | None = None) -> None:
        super()._execute_send(query, force_extended=True, binary=binary)


def execute_one(conn: Conn, statement: str) -> OneStatementCursor:
    """Run ``statement`` (passed untouched: no placeholders) as exactly one statement.

    Raises:
        psycopg.Error: the server refused it (``cannot insert multiple commands into a
            prepared statement`` when the text holds several).
    """
    cur = OneStatementCursor(conn)
    cur.execute(statement.encode())
    return cur
