"""The daemon's freshness tick, cheap when nothing changed.

Each tick first sends one probe (``lag_probe`` behind the catalog fingerprint): digests of
everything the targets' facts (:func:`mvgraph.scheduler.lag.read_facts`) are made of, and the
server's clock. When the digests are those of the last full reading, the targets are planned
again from the facts kept (a lag grows with the clock alone) and nothing else is sent; when
something changed, when a target falls due, when a stats-mode input is involved (its counters
are no digest), and at least every :data:`FULL_READ_S` seconds anyway, the facts are read
again, with the catalog's graph from the :class:`~mvgraph.refresh.graphcache.GraphCache` the
daemon's workers share (read again only after DDL).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import LiteralString

import psycopg

from mvgraph.db.queries import query
from mvgraph.errors import translated
from mvgraph.refresh.graphcache import GraphCache
from mvgraph.scheduler.lag import TargetFacts, TickResult, Verdict, plan, read_facts, submit_due

Conn = psycopg.Connection[tuple[object, ...]]
FULL_READ_S = 60.0  # the facts are read again at least this often, changed or not

_PROBE: LiteralString = ("SELECT (" + query("catalog_fingerprint") + "), probe.* FROM ("
                         + query("lag_probe") + ") AS probe")


@dataclass(frozen=True, slots=True)
class _Kept:
    token: tuple[object, ...] | None  # the probe's digests read before the facts (None: redo)
    facts: TargetFacts
    read_at: float  # time.monotonic() of the reading
    params: dict[str, str]  # the probe's parameters for these facts


def _params(facts: TargetFacts) -> dict[str, str]:
    """The probe's oid arrays as array literals (dumped once, not at every tick)."""
    def array(oids: list[int]) -> str:
        return "{" + ",".join(map(str, oids)) + "}"

    return {"mvs": array(list(facts.mv_oids)), "pair_mvs": array([p[0] for p in facts.pairs]),
            "pair_inputs": array([p[1] for p in facts.pairs])}


class TargetWatch:
    """The freshness tick of one daemon (:meth:`tick`, from one thread at a time)."""

    def __init__(self, graphs: GraphCache | None = None, full_read_s: float = FULL_READ_S
                 ) -> None:
        self.graphs = graphs or GraphCache()
        self.full_read_s = full_read_s
        self._kept: _Kept | None = None
        self.full_reads = 0  # how many ticks read the facts (for tests and benchmarks)

    def tick(self, conn: Conn, *, claimed_by: str | None = None) -> TickResult:
        """Submit the due freshness targets (:func:`mvgraph.scheduler.lag.submit_due`),
        reading their facts only when the probe says they may have changed."""
        kept = self._kept
        facts = kept.facts if kept is not None else TargetFacts([], {})
        with translated():
            row = conn.execute(_PROBE, kept.params if kept is not None else _params(facts)
                               ).fetchone()
        assert row is not None
        token, now = tuple(row[:-1]), row[-1]
        assert isinstance(now, datetime)
        if (kept is not None and kept.token == token and facts.dated
                and time.monotonic() - kept.read_at < self.full_read_s):
            decisions = plan(facts.targets, facts.views, now)
            if not any(d.verdict is Verdict.SUBMIT for d in decisions):
                return TickResult(tuple(decisions), ())
        read_at = time.monotonic()
        fresh = read_facts(conn, lambda: self.graphs.graph(conn, str(row[0])))
        self.full_reads += 1
        same = (fresh.mv_oids, fresh.pairs) == (facts.mv_oids, facts.pairs)
        self._kept = _Kept(token if same else None, fresh, read_at, _params(fresh))
        return submit_due(conn, now if now.tzinfo else now.replace(tzinfo=UTC),
                          claimed_by=claimed_by, facts=fresh)
