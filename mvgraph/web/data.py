"""What the status page shows, read from the database (``mvgraph web``, ``mvgraph daemon
--http-port``).

Every read runs in one ``REPEATABLE READ, READ ONLY`` transaction of the page's own session,
logged in as the DSN's role (``default_transaction_read_only`` on as well, short statement and
lock timeouts), through the library's readers: the catalog graph and its layers
(:mod:`mvgraph.graph`), freshness and lag (:func:`mvgraph.scheduler.status.status`), jobs and
steps (:mod:`mvgraph.jobs.store`), schedules (:mod:`mvgraph.scheduler.store`), daemons
(:func:`mvgraph.scheduler.daemon.live_daemons`) and the page's queries
(``mvgraph/web/queries.sql``). Jobs, steps and schedules come from the views that filter them
by role (``mvgraph.job``, ``mvgraph.jobs``, ``mvgraph.job_step``, ``mvgraph.schedule``): the
page shows what its role may see, and writes nothing.

A wal-mode table's writes reach the change log when the replication slot is read (by the
daemon, every second); the page's read-only transaction does not read the slot.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg

from mvgraph.catalog import catalog_fingerprint, catalog_graph
from mvgraph.db.connect import connect
from mvgraph.db.queries import query
from mvgraph.errors import LockTimeout, MvgraphError, NotFound, translate, translated
from mvgraph.graph import MVGraph
from mvgraph.jobs import store as jobs_store
from mvgraph.jobs.store import JobInfo
from mvgraph.model.definitions import Kind
from mvgraph.model.names import RelationName
from mvgraph.redaction import scrub
from mvgraph.scheduler import store as schedule_store
from mvgraph.scheduler.daemon import live_daemons
from mvgraph.scheduler.status import StatusReport, ViewStatus, status

Conn = psycopg.Connection[tuple[object, ...]]
log = logging.getLogger("mvgraph")

WEB = "mvgraph.web"  # the package whose queries.sql holds the page's queries
DAEMON_WINDOW_S = 3600.0  # daemons shown: heartbeat within the hour (older rows are dead ones)
DAEMON_SILENT_S = 10.0  # a daemon whose heartbeat is older is shown silent
WORKER_SILENT_PERIODS = 3.0  # a worker silent for this many heartbeat periods is shown silent
HISTORY = 20  # finished jobs shown (of the last hour)
STEPS_OF = 10  # active jobs whose steps come with the state
RUNS = 10  # last runs shown for a view

#: The states a materialized view is drawn in.
FRESH, STALE, REFRESHING, FAILED = "fresh", "stale", "refreshing", "failed"


def error_line(exc: BaseException) -> str:
    """The one line the page shows for an error: mvgraph's message (a database error
    translated), never a traceback, never a password."""
    if isinstance(exc, psycopg.Error):
        exc = translate(exc)
    text = str(exc) if isinstance(exc, MvgraphError) else (
        f"internal error: {type(exc).__name__}: {exc}")
    return scrub(" ".join(text.split()) or type(exc).__name__)


def arrange(layers: Sequence[Sequence[str]], edges: Sequence[tuple[str, str]],
            sweeps: int = 4) -> list[list[str]]:
    """The nodes of each layer in drawing order: each layer sorted by the mean position of its
    neighbours in the layer before (then after), a few sweeps each way, to uncross edges.

    >>> arrange([["b", "a"], ["y", "x"]], [("a", "x"), ("b", "y")])
    [['a', 'b'], ['x', 'y']]
    >>> arrange([["a", "b"], ["x", "y"]], [("a", "y"), ("b", "x")])
    [['a', 'b'], ['y', 'x']]
    """
    order = [sorted(layer) for layer in layers]
    ins: dict[str, list[str]] = {}
    outs: dict[str, list[str]] = {}
    for src, dst in edges:
        outs.setdefault(src, []).append(dst)
        ins.setdefault(dst, []).append(src)

    def sort(layer: list[str], neighbours: dict[str, list[str]], pos: dict[str, int]) -> None:
        here = {n: i for i, n in enumerate(layer)}  # a node without neighbours stays put

        def key(node: str) -> tuple[float, str]:
            seen = [pos[n] for n in neighbours.get(node, ()) if n in pos]
            return (sum(seen) / len(seen) if seen else float(here[node]), node)
        layer.sort(key=key)

    for _ in range(sweeps):
        for i in range(1, len(order)):
            sort(order[i], ins, {n: j for j, n in enumerate(order[i - 1])})
        for i in range(len(order) - 2, -1, -1):
            sort(order[i], outs, {n: j for j, n in enumerate(order[i + 1])})
    return order


def drawn(graph: MVGraph) -> dict[str, Any]:
    """The graph as the page draws it: every view and materialized view with what it reads,
    in mvgraph's layers (longest path from the inputs), each layer arranged to uncross edges."""
    keep = {n for n in graph.nodes() if graph.kind(n) in (Kind.VIEW, Kind.MATVIEW)}
    keep |= {i for n in list(keep) for i in graph.inputs(n)}
    edges = sorted((str(i), str(n)) for n in keep for i in graph.inputs(n) if i in keep)
    layers = arrange([[str(n) for n in layer] for layer in graph.layers(keep)], edges)
    nodes = []
    for x, layer in enumerate(layers):
        for y, text in enumerate(layer):
            name = RelationName.parse(text)
            nodes.append({"name": text, "schema": name.schema, "label": name.name,
                          "kind": graph.kind(name).value, "layer": x, "row": y})
    return {"nodes": nodes, "edges": [list(e) for e in edges], "layers": len(layers),
            "rows": max((len(layer) for layer in layers), default=0)}


def view_entry(v: ViewStatus, step: tuple[object, ...] | None) -> dict[str, Any]:
    """One materialized view's state: refreshing (a step runs now), failed (its last step
    failed and it is still stale), stale or fresh; with the reason, its lag against a
    freshness target, and its last step."""
    state = FRESH if v.fresh else STALE
    step_status = str(step[1]) if step is not None else None
    if step_status == "running":
        state = REFRESHING
    elif step_status == "failed" and not v.fresh:
        state = FAILED
    late = v.lag_s is not None and v.target_lag_s is not None and v.lag_s > v.target_lag_s
    return {"state": state, "fresh": v.fresh, "reason": v.reason,
            "refreshed_at": _iso(v.refreshed_at), "duration_s": v.duration_s,
            "lag_s": v.lag_s, "target_lag_s": v.target_lag_s, "late": late,
            "step": None if step is None else {
                "status": step_status, "job": int(str(step[2])), "error": _opt(step[3]),
                "reason": _opt(step[4]), "at": _iso(step[5])}}


def job_entry(job: JobInfo) -> dict[str, Any]:
    """A job as ``mvgraph jobs --json`` shows it."""
    return job.to_dict()


class Reader:
    """The page's database side: one session (reopened after a failure), used by one request
    at a time; the state is read at most once per ``cache_s`` whoever asks for it."""

    def __init__(self, dsn: str, *, cache_s: float = 0.5) -> None:
        self.dsn = dsn
        self.cache_s = cache_s
        self._conn: Conn | None = None
        self._lock = threading.Lock()  # one request at a time on the session
        self._state_lock = threading.Lock()  # one reader of the state at a time
        self._state: dict[str, Any] | None = None
        self._state_at = 0.0
        self._graph: tuple[str, MVGraph, dict[str, Any]] | None = None

    # ---- the session --------------------------------------------------------------------------
    @contextmanager
    def _read(self) -> Iterator[Conn]:
        """The session inside a new READ ONLY, REPEATABLE READ transaction (rolled back)."""
        with self._lock:
            if self._conn is None or self._conn.closed:
                conn = connect(self.dsn, application_name="mvgraph web")
                try:
                    with translated():
                        conn.execute(query("session_read_only", WEB))
                except BaseException:
                    conn.close()
                    raise
                conn.read_only = True
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                self._conn = conn
            conn = self._conn
            try:
                with conn.transaction(force_rollback=True):
                    yield conn
            except (psycopg.OperationalError, psycopg.InterfaceError):
                self.close_session()
                raise
            except MvgraphError:
                if conn.broken or conn.closed:
                    self.close_session()
                raise

    def close_session(self) -> None:
        """Close the session (the next read opens a new one)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error as exc:
                log.debug("closing the web session: %s", exc)

    close = close_session

    # ---- what the page asks for ---------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything the page shows (at most ``cache_s`` old); a failure is ``error`` (one
        line), the rest left out."""
        with self._state_lock:
            cached = self._state
            if cached is not None and time.monotonic() - self._state_at < self.cache_s:
                return cached
            try:
                with self._read() as conn:
                    fresh = self._build(conn)
            except Exception as exc:  # shown as a banner, never raised to the page
                if not isinstance(exc, MvgraphError | psycopg.Error):
                    log.warning("status page: %s", error_line(exc), exc_info=True)
                fresh = {"error": error_line(exc), "time": _iso(datetime.now().astimezone())}
            self._state, self._state_at = fresh, time.monotonic()
            return fresh

    def view(self, name: str) -> dict[str, Any]:
        """One relation of the graph: its definition, inputs, dependents, and for a
        materialized view its freshness, schedule and last runs.

        Raises:
            NotFound: no such relation in the graph the page draws.
        """
        with self._read() as conn:
            graph = self._graph_of(conn)[0]
            node = self._node(graph, name)
            out: dict[str, Any] = {
                "name": str(node), "kind": graph.kind(node).value,
                "inputs": [{"name": str(n), "kind": graph.kind(n).value}
                           for n in sorted(graph.inputs(node))],
                "dependents": [{"name": str(n), "kind": graph.kind(n).value}
                               for n in sorted(graph.dependents(node))],
                "owner": graph.attrs(node).get("owner"),
            }
            if graph.kind(node) is Kind.MATVIEW:
                report = status(conn)
                entry = next((v for v in report.views if v.name == node), None)
                steps = self._steps(conn)
                if entry is not None:
                    out["status"] = view_entry(entry, steps.get(str(node)))
                out["schedules"] = [s.to_dict() for s in schedule_store.schedules(conn)
                                    if _same(s.view_name, node)]
                with translated():
                    rows = conn.execute(query("view_runs", WEB),
                                        {"name": str(node), "limit": RUNS}).fetchall()
                out["runs"] = [{"job": int(str(r[0])), "status": str(r[1]),
                                "planned": str(r[2]), "reason": _opt(r[3]), "error": _opt(r[4]),
                                "started_at": _iso(r[5]), "finished_at": _iso(r[6]),
                                "duration_s": _float(r[7]), "owner": str(r[8]),
                                "kind": str(r[9]), "job_status": str(r[10])} for r in rows]
            out["definition"], out["definition_note"] = self._definition(conn, node)
            return out

    def job(self, job_id: int) -> dict[str, Any]:
        """One job (of those the role may see) with its steps.

        Raises:
            NotFound: no such job, or another role's.
        """
        with self._read() as conn:
            info = jobs_store.job_info(conn, job_id)
            return {**job_entry(info),
                    "steps": [s.to_dict() for s in jobs_store.steps(conn, job_id)]}

    # ---- reading ------------------------------------------------------------------------------
    def _build(self, conn: Conn) -> dict[str, Any]:
        with translated():
            who = conn.execute(query("who", WEB)).fetchone()
        assert who is not None and isinstance(who[2], datetime)
        db_now: datetime = who[2]
        graph, picture = self._graph_of(conn)
        report = status(conn)
        steps = self._steps(conn)
        jobs = jobs_store.jobs(conn)
        active = [j for j in jobs if not j.status.finished]
        finished = sorted((j for j in jobs if j.status.finished),
                          key=lambda j: (j.finished_at or j.submitted_at, j.id), reverse=True)
        job_steps = {j.id: [s.to_dict() for s in jobs_store.steps(conn, j.id)]
                     for j in active[:STEPS_OF] if j.total_steps}
        schedules = schedule_store.schedules(conn)
        daemons = live_daemons(conn, DAEMON_WINDOW_S)
        return {
            "error": None,
            "time": _iso(db_now),
            "database": str(who[0]), "role": str(who[1]),
            "graph_key": self._graph[0] if self._graph else "",
            "graph": picture,
            "views": {str(v.name): view_entry(v, steps.get(str(v.name))) for v in report.views},
            "warnings": list(report.warnings) + _wal_note(report),
            "jobs": [{**job_entry(j), "steps": job_steps.get(j.id)} for j in active],
            "history": [job_entry(j) for j in finished[:HISTORY]],
            "schedules": [self._schedule(s, db_now) for s in schedules],
            "daemons": [{**d.to_dict(),
                         "heartbeat_age_s": round((db_now - d.heartbeat_at).total_seconds(), 1),
                         "silent": (db_now - d.heartbeat_at).total_seconds() > DAEMON_SILENT_S}
                        for d in daemons],
            "workers": self._workers(conn),
            "counts": {"relations": len(graph), "drawn": len(picture["nodes"]),
                       "matviews": len(report.views)},
        }

    def _graph_of(self, conn: Conn) -> tuple[MVGraph, dict[str, Any]]:
        """The catalog graph (no view definitions) and its picture, read again only when the
        catalog's fingerprint changed."""
        key = catalog_fingerprint(conn)
        if self._graph is None or self._graph[0] != key:
            graph = catalog_graph(conn, with_sql=False)
            self._graph = (key, graph, drawn(graph))
        return self._graph[1], self._graph[2]

    @staticmethod
    def _node(graph: MVGraph, name: str) -> RelationName:
        try:
            node = RelationName.parse(name)
        except (MvgraphError, ValueError):
            node = None
        if node is None or node not in graph:
            raise NotFound(f"no relation {name} in the graph; reload the page")
        return node

    @staticmethod
    def _steps(conn: Conn) -> dict[str, tuple[object, ...]]:
        with translated():
            return {str(r[0]): r for r in conn.execute(query("view_steps", WEB))}

    @staticmethod
    def _definition(conn: Conn, node: RelationName) -> tuple[str | None, str | None]:
        """The view's query, or why it cannot be shown now (a REFRESH holds the view)."""
        try:
            with conn.transaction(), translated():  # a savepoint: a lock timeout undoes only it
                conn.execute(query("short_lock_timeout", WEB))
                row = conn.execute(query("view_definition", WEB),
                                   {"schema": node.schema, "name": node.name}).fetchone()
        except LockTimeout:
            return None, "not readable now: a REFRESH holds the view; click it again later"
        if row is None or row[1] is None:
            return None, None
        return str(row[1]).strip(), None

    @staticmethod
    def _schedule(s: schedule_store.Schedule, now: datetime) -> dict[str, Any]:
        out = s.to_dict(now)
        nxt = s.next_slot(now)
        out["next_in_s"] = None if nxt is None else round((nxt - now).total_seconds(), 1)
        return out

    @staticmethod
    def _workers(conn: Conn) -> list[dict[str, Any]]:
        """Worker processes: their heartbeat rows (``mvgraph.worker``) and the leases of the
        jobs they run (renewed by the same heartbeat)."""
        with translated():
            beats = conn.execute(query("workers", WEB)).fetchall()
            leases = conn.execute(query("worker_leases", WEB)).fetchall()
        out: dict[str, dict[str, Any]] = {}
        for name, host, pid, concurrency, since, age, period in beats:
            age_s = _float(age)
            out[str(name)] = {"name": str(name), "host": str(host), "pid": int(str(pid)),
                              "concurrency": int(str(concurrency)), "since": _iso(since),
                              "heartbeat_age_s": age_s,
                              "silent": age_s is not None and age_s > WORKER_SILENT_PERIODS
                              * float(str(period)),
                              "jobs": [], "lease_until": None, "lease_left_s": None}
        for name, ids, until, left in leases:
            entry = out.setdefault(str(name), {"name": str(name), "since": None,
                                               "heartbeat_age_s": None, "silent": True})
            entry.update(jobs=[int(i) for i in ids] if isinstance(ids, list) else [],
                         lease_until=_iso(until), lease_left_s=_float(left))
        return sorted(out.values(), key=lambda w: str(w["name"]))


def _same(view_name: str, node: RelationName) -> bool:
    try:
        return RelationName.parse(view_name) == node
    except (MvgraphError, ValueError):
        return view_name == str(node)


def _wal_note(report: StatusReport) -> list[str]:
    if any(t.mode == "wal" for t in report.tables):
        return ["wal-mode tables: their writes show here once the replication slot is read "
                "(a running `mvgraph daemon` reads it every second)"]
    return []


def _iso(v: object) -> str | None:
    return v.isoformat() if isinstance(v, datetime) else None


def _opt(v: object) -> str | None:
    return None if v is None else str(v)


def _float(v: object) -> float | None:
    return None if v is None else round(float(str(v)), 3)
