"""The catalog's planning graph, kept in memory under the catalog's fingerprint.

A daemon's freshness tick and its workers' jobs share one :class:`GraphCache`: the graph is
read again only when the fingerprint (``catalog_fingerprint``: a cheap digest of relations,
rules, schemas and function volatility) changed, i.e. after DDL.
"""

from __future__ import annotations

import threading

import psycopg

from mvgraph.catalog import catalog_fingerprint
from mvgraph.graph import MVGraph

Conn = psycopg.Connection[tuple[object, ...]]


class GraphCache:
    """One planning graph and the fingerprint it was read under; thread-safe (planning and
    running only read a graph)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entry: tuple[str, MVGraph] | None = None

    def graph(self, conn: Conn, fingerprint: str | None = None) -> MVGraph:
        """The graph of the catalog as ``fingerprint`` (read now when not given) says it is.
        The fingerprint must be read *before* the graph: DDL that commits while the graph is
        read then makes the next reading differ, and the graph is read again."""
        from mvgraph.refresh.service import planning_graph

        if fingerprint is None:
            fingerprint = catalog_fingerprint(conn)
        with self._lock:
            cached = self._entry
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        graph = planning_graph(conn)
        with self._lock:
            self._entry = (fingerprint, graph)
        return graph
