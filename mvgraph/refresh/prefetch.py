"""A plan's facts in one statement: the read-only queries the last plan ran, sent together.

Planning a refresh reads about ten small catalog and change-log queries (the schema version,
the change log's health, the catalog fingerprint, the views' relations, their inputs' tracking,
the event triggers, each view's state and the changes its last refresh did not see), each a
round trip. The first plan of a request (per process, server, database, role and request)
runs them one by one through a :class:`Recorder`, which notes each query and its parameters.
The next plan sends all of them as ONE statement (each query a subquery aggregated to JSON
text, read back with psycopg's own loaders, so the values are those the query itself returns)
and plans again on a :class:`Replay` of the answers. A query the replay does not hold (DDL
changed the graph, a tracking mode changed the parameters, WAL tracking must catch up, an
explicit timeout to validate) raises :class:`Miss`: the caller plans the ordinary way, which
records again. Every answer comes from one snapshot, so a replayed plan is the plan the
ordinary path would make at that instant. Only the read-only queries in ``REPLAYABLE`` are
ever sent this way.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import psycopg
from psycopg import pq
from psycopg.adapt import Transformer

from mvgraph.db.queries import query

Conn = psycopg.Connection[tuple[object, ...]]

#: Queries a replay may answer: reads of the catalog and of mvgraph's tables, no side effect
#: but ``change_log_intact()``'s repair after a lost change log (the ordinary path runs it too).
REPLAYABLE = ("schema_version_exists", "schema_version", "change_log_intact",
              "catalog_fingerprint", "all_settings", "relation_info", "input_tracking",
              "event_triggers", "mv_states", "change_counts", "tracking_problems",
              "stat_counters", "stat_inputs")
_BOOL = 16
MAX_REMEMBERED = 64  # requests remembered per process (the oldest is forgotten first)


class Miss(Exception):
    """The replay does not hold the answer to a query: plan the ordinary way."""


@dataclass(frozen=True, slots=True)
class Recorded:
    """One query a plan ran: its text, parameters and result column types."""

    sql: str
    params: Mapping[str, Any] | None
    types: tuple[int, ...]

    @property
    def key(self) -> tuple[str, str]:
        return _key(self.sql, self.params)


def _key(sql: str, params: Mapping[str, Any] | Sequence[Any] | None) -> tuple[str, str]:
    return sql, json.dumps(params, sort_keys=True, default=str)


def _replayable() -> frozenset[str]:
    return frozenset(query(n) for n in REPLAYABLE)


@dataclass
class Recorder:
    """A connection that runs queries and remembers the replayable ones."""

    conn: Conn
    recorded: list[Recorded] = field(default_factory=list)

    def execute(self, sql: Any, params: Any = None, **kwargs: Any) -> psycopg.Cursor[Any]:
        cur = self.conn.execute(sql, params, **kwargs)
        if isinstance(sql, str) and sql in _replayable() and cur.description is not None \
                and (params is None or isinstance(params, Mapping)):
            self.recorded.append(Recorded(sql, params, tuple(
                d.type_code for d in cur.description)))
        return cur

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


def statement(recorded: Sequence[Recorded]) -> tuple[str, dict[str, Any]]:
    """The one statement answering every recorded query: a column per query, its rows as a
    JSON array of arrays of their text forms."""
    columns, params = [], {}
    for i, r in enumerate(recorded):
        text = r.sql
        if r.params is None:
            text = text.replace("%", "%%")
        else:
            for name, value in r.params.items():
                text = text.replace(f"%({name})s", f"%(q{i}_{name})s")
                params[f"q{i}_{name}"] = value
        names = ", ".join(f"c{j}" for j in range(len(r.types)))
        values = ", ".join(f"q.c{j}::text" for j in range(len(r.types)))
        columns.append(f"(SELECT coalesce(json_agg(ARRAY[{values}]), '[]')::text "
                       f"FROM ({text}) AS q({names}))")
    return "SELECT " + ",\n       ".join(columns), params


def fetch(conn: Conn, recorded: Sequence[Recorded]) -> dict[tuple[str, str], list[tuple[Any, ...]]]:
    """Run the recorded queries as one statement; their rows, typed as the queries return
    them, by (query, parameters)."""
    return load(conn, recorded, fetch_raw(conn, recorded))


def fetch_raw(conn: Conn, recorded: Sequence[Recorded]) -> tuple[str, ...]:
    """The one statement's answer as it came: a JSON text per recorded query."""
    sql, params = statement(recorded)
    row = conn.execute(sql.encode(), params).fetchone()
    assert row is not None
    return tuple(str(cell) for cell in row)


def load(conn: Conn, recorded: Sequence[Recorded], row: Sequence[str]
         ) -> dict[tuple[str, str], list[tuple[Any, ...]]]:
    """The rows of each recorded query from the statement's answer."""
    out: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    tx = Transformer(conn)
    for r, cell in zip(recorded, row, strict=True):
        tx.set_loader_types(r.types, pq.Format.TEXT)
        rows = []
        for values in json.loads(str(cell)):
            loaded = list(tx.load_sequence([None if v is None else str(v).encode()
                                            for v in values]))
            for j, t in enumerate(r.types):
                if t == _BOOL and values[j] is not None:
                    loaded[j] = values[j] == "true"  # bool::text is true / false
            rows.append(tuple(loaded))
        out[r.key] = rows
    return out


@dataclass
class _Result:
    rows: list[tuple[Any, ...]]

    def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return list(self.rows)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.rows)


@dataclass
class Replay:
    """A connection that answers the prefetched queries and refuses anything else (Miss);
    ``raw`` is the statement's answer as it came (the same answer makes the same plan)."""

    conn: Conn
    recorded: Sequence[Recorded]
    raw: tuple[str, ...] = ()
    _answers: dict[tuple[str, str], list[tuple[Any, ...]]] | None = None

    @property
    def answers(self) -> dict[tuple[str, str], list[tuple[Any, ...]]]:
        """Each query's rows (read from ``raw`` when first needed)."""
        if self._answers is None:
            self._answers = load(self.conn, self.recorded, self.raw)
        return self._answers

    def execute(self, sql: Any, params: Any = None, **_: Any) -> _Result:
        try:
            return _Result(self.answers[_key(sql, params)])
        except (KeyError, TypeError, ValueError):
            raise Miss(str(sql)[:60]) from None

    @property
    def info(self) -> psycopg.ConnectionInfo:
        return self.conn.info

    @property
    def adapters(self) -> Any:
        return self.conn.adapters

    def __getattr__(self, name: str) -> Any:
        raise Miss(name)


_remembered: dict[tuple[object, ...], tuple[Recorded, ...]] = {}
_lock = threading.Lock()


def remember(key: tuple[object, ...], recorded: Sequence[Recorded]) -> None:
    """Keep the queries a request's plan ran, for its next plan."""
    with _lock:
        _remembered.pop(key, None)
        _remembered[key] = tuple(recorded)
        while len(_remembered) > MAX_REMEMBERED:
            del _remembered[next(iter(_remembered))]


_made: dict[tuple[object, ...], tuple[tuple[str, ...], Any]] = {}


def keep(key: tuple[object, ...], raw: tuple[str, ...], made: Any) -> None:
    """Keep what a request's replay made from this answer (its plan)."""
    with _lock:
        _made.pop(key, None)
        _made[key] = (raw, made)
        while len(_made) > MAX_REMEMBERED:
            del _made[next(iter(_made))]


def made_from(key: tuple[object, ...], raw: tuple[str, ...]) -> Any:
    """What the request's last replay made, when it was made from this very answer; else
    None. Planning reads nothing but the answer (and the graph its fingerprint names), so the
    same answer gives the same plan."""
    found = _made.get(key)
    return found[1] if found is not None and found[0] == raw else None


def replay_for(conn: Conn, key: tuple[object, ...]) -> Replay | None:
    """A replay of the request's remembered queries, answered now in one statement; None when
    nothing is remembered or the statement failed (the ordinary path then says why)."""
    recorded = _remembered.get(key)
    if not recorded:
        return None
    try:
        return Replay(conn, recorded, fetch_raw(conn, recorded))
    except psycopg.Error:
        return None


def recorder(conn: Conn) -> tuple[Conn, Recorder]:
    """A recording wrapper of ``conn`` (as a connection) and the recorder itself."""
    rec = Recorder(conn)
    return cast(Conn, rec), rec


def conn_key(conn: Conn, *request: object) -> tuple[object, ...]:
    """Whose plans share remembered queries: server, database, role and the request."""
    info = conn.info
    return (info.host, info.port, info.dbname, info.user, *request)
