"""Freshness targets (``schedule add V --target-lag '10 minutes'``): no clock, a maximum lag.

A target view's *lag* is how old the oldest change its data does not include is: ``now`` minus
the earliest change, anywhere in its upstream cascade, that the refreshes on the way did not
see (0 when fresh). The cascade is what a CASCADE BACKWARD refresh of it touches: the view and
every materialized view upstream. Each of them lacks the changes of its direct inputs (tables,
through plain views, and input materialized views' refreshes) logged after its last refresh's
snapshot; so a write to a table under an intermediate view that nobody refreshed counts for the
target too (freshness is transitive).

The planner is pure (:func:`plan`, :func:`batches`): a target is submitted when

    oldest missing change + target lag - expected duration - margin <= now

where the expected duration is the sum of the past durations of its cascade (sequential: a
conservative estimate) and the margin covers the tick, the queue and estimate errors. Nothing
upstream changed: no run (no data, no run). A view never refreshed (or not populated) has no
data to age: it is due at once. Every due target of one owner goes into **one** job,
``REFRESH MATERIALIZED VIEW a, b CASCADE BACKWARD``, so views upstream of several due targets
are planned (and refreshed) once; a due target inside another due target's cascade is left out
of the statement (the other one's cascade refreshes it) but its schedule still records the job.

Each run is recorded as a ``schedule_slot`` row keyed by its *episode*: the oldest missing
change, or the end of the schedule's latest finished job if later (a change its last run could
not see, e.g. from a transaction still open then, starts a new episode). The unique
``(schedule, slot)`` key makes several daemons submit one job per episode.

I/O: :func:`read_targets` reads the facts, :func:`due_targets` plans, :func:`submit_due`
claims and submits (what the daemon calls from a tick every second or so).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import psycopg

from mvgraph.db.queries import query
from mvgraph.errors import translated
from mvgraph.graph import MVGraph
from mvgraph.model.definitions import Kind
from mvgraph.model.names import RelationName
from mvgraph.model.status import JobStatus, SlotStatus
from mvgraph.refresh.behavior import RefreshBehavior, materialized_scope

Conn = psycopg.Connection[tuple[object, ...]]
log = logging.getLogger("mvgraph")

BEHAVIOR = RefreshBehavior.CASCADE_BACKWARD  # what a freshness target's job always runs
QUIET_TICK_S = 2.0  # the freshness tick's period while every target's margin allows it
_UNDATED = frozenset({"stats", "always", "untracked", "not_tracked"})  # changed, unknown when


# ---- facts -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ViewState:
    """One materialized view of some target's cascade, as freshness targets see it."""

    name: RelationName
    refreshed_at: datetime | None  # None: never refreshed, or not populated: no data to age
    first_change: datetime | None = None  # earliest input change its last refresh did not see
    undated_change: bool = False  # changed at an unknown time (stats, always, volatile)
    duration_s: float | None = None  # average of its past refresh durations

    def missing_since(self) -> datetime | None:
        """The oldest change this view's data lacks (an undated change counts from its last
        refresh), or None when it lacks none."""
        found = [t for t in (self.first_change,
                             self.refreshed_at if self.undated_change else None) if t]
        return min(found) if found else None


@dataclass(frozen=True, slots=True)
class LagTarget:
    """One freshness target: a schedule of kind ``lag`` and what its cascade refreshes."""

    schedule_id: int
    view: RelationName
    target_lag: timedelta
    cascade: frozenset[RelationName]  # materialized views of its CASCADE BACKWARD, itself too
    owner: str = ""
    created_at: datetime | None = None  # the schedule's: the episode of a never-refreshed view
    busy: bool = False  # the latest job it submitted is still queued or running
    last_end: datetime | None = None  # end of the latest finished job it submitted
    last_failed: bool = False  # that job failed or was cancelled


class Verdict(StrEnum):
    """What the planner decided for one target at one tick."""

    SUBMIT = "submit"  # due now: submit (claiming the episode's slot)
    WAIT = "wait"  # stale, but not due yet
    FRESH = "fresh"  # nothing upstream changed: no run
    BUSY = "busy"  # due, but its previous job is still queued or running: skipped
    RETRY_WAIT = "retry-wait"  # due, but its last job failed moments ago: retried later


@dataclass(frozen=True, slots=True)
class Decision:
    """The planner's verdict for one target, with the numbers behind it."""

    target: LagTarget
    verdict: Verdict
    reason: str
    lag: timedelta | None  # now - oldest missing change; 0 when fresh; None: never refreshed
    since: datetime | None = None  # the oldest missing change
    due_at: datetime | None = None  # when it had to be submitted (lateness counts from here)
    slot: datetime | None = None  # the episode's key in schedule_slot

    @property
    def lag_s(self) -> float | None:
        """The current lag in seconds (None: never refreshed)."""
        return self.lag.total_seconds() if self.lag is not None else None


@dataclass(frozen=True, slots=True)
class Batch:
    """One job to submit: due targets of one owner; ``statement_targets`` are those not inside
    another one's cascade (the job's REFRESH names them)."""

    owner: str
    decisions: tuple[Decision, ...]
    statement_targets: tuple[RelationName, ...] = field(default=())


# ---- the planner (pure) ----------------------------------------------------------------------

def default_margin(target_lag: timedelta) -> timedelta:
    """Slack before the deadline: a tenth of the lag, at least 1 s (the tick and a worker's
    claim), at most a minute.

    >>> default_margin(timedelta(minutes=10)).total_seconds(), default_margin(timedelta(seconds=3))
    (60.0, datetime.timedelta(seconds=1))
    """
    return min(max(target_lag / 10, timedelta(seconds=1)), timedelta(minutes=1))


def tick_period(targets: Iterable[LagTarget]) -> float | None:
    """Seconds until the freshness tick is due again: :data:`QUIET_TICK_S` while every
    target's margin is at least that long (a write seen one tick later is still in time),
    else None (the daemon's every second).

    >>> tick_period([]), tick_period([LagTarget(1, RelationName("p", "v"), timedelta(seconds=5),
    ...                                         frozenset(), "o")])
    (2.0, None)
    """
    quiet = timedelta(seconds=QUIET_TICK_S)
    return QUIET_TICK_S if all(default_margin(t.target_lag) >= quiet for t in targets) else None


def default_retry(target_lag: timedelta) -> timedelta:
    """How long after a failed run the next one may start: a tenth of the lag, 1 s to 60 s."""
    return default_margin(target_lag)


def staleness(target: LagTarget, views: Mapping[RelationName, ViewState]
              ) -> tuple[bool, datetime | None]:
    """(never, since): whether some view of the cascade has no data yet, and the oldest
    change, anywhere in the cascade, that the target's data lacks (None: none)."""
    never = False
    found: list[datetime] = []
    for name in target.cascade:
        v = views.get(name)
        if v is None or v.refreshed_at is None:
            never = True
            continue
        t = v.missing_since()
        if t is not None:
            found.append(t)
    return never, min(found) if found else None


def expected_duration(target: LagTarget, views: Mapping[RelationName, ViewState]) -> timedelta:
    """The sum of the past durations of its cascade (unknown ones count 0)."""
    return timedelta(seconds=sum(views[n].duration_s or 0.0 for n in target.cascade
                                 if n in views))


def current_lag(target: LagTarget, views: Mapping[RelationName, ViewState],
                now: datetime) -> timedelta | None:
    """now - the oldest change its data lacks; 0 when fresh; None when never refreshed."""
    never, since = staleness(target, views)
    if never:
        return None
    return max(now - since, timedelta(0)) if since is not None else timedelta(0)


def decide(target: LagTarget, views: Mapping[RelationName, ViewState], now: datetime, *,
           margin: timedelta | None = None, retry_after: timedelta | None = None) -> Decision:
    """Submit, wait, or nothing to do, for one target at ``now``."""
    never, since = staleness(target, views)
    lag = None if never else (max(now - since, timedelta(0)) if since else timedelta(0))
    if not never and since is None:
        return Decision(target, Verdict.FRESH, "nothing upstream changed since its last refresh",
                        lag)
    if never:
        due_at = target.created_at or now
        base = target.created_at or now
        why = "never refreshed (no data yet)"
    else:
        assert since is not None
        slack = margin if margin is not None else default_margin(target.target_lag)
        due_at = since + target.target_lag - expected_duration(target, views) - slack
        base = since
        seconds = lag.total_seconds() if lag else 0.0
        why = (f"oldest missing change at {since:%Y-%m-%d %H:%M:%S}, lag {seconds:.1f} s of "
               f"{target.target_lag.total_seconds():g} s")
    slot = max(base, target.last_end) if target.last_end else base
    if due_at > now:
        return Decision(target, Verdict.WAIT, f"{why}; due at {due_at:%H:%M:%S}", lag, since,
                        due_at, slot)
    if target.busy:
        return Decision(target, Verdict.BUSY, f"{why}; its previous job is still queued or "
                        "running", lag, since, due_at, slot)
    if target.last_failed and target.last_end is not None:
        wait = retry_after if retry_after is not None else default_retry(target.target_lag)
        if target.last_end + wait > now:
            return Decision(target, Verdict.RETRY_WAIT, f"{why}; its last job failed, retried "
                            f"at {target.last_end + wait:%H:%M:%S}", lag, since, due_at, slot)
        due_at = max(due_at, target.last_end + wait)
    return Decision(target, Verdict.SUBMIT, why, lag, since, due_at, slot)


def plan(targets: Iterable[LagTarget], views: Mapping[RelationName, ViewState], now: datetime,
         *, margin: timedelta | None = None, retry_after: timedelta | None = None
         ) -> list[Decision]:
    """A decision for every target, in schedule id order."""
    return [decide(t, views, now, margin=margin, retry_after=retry_after)
            for t in sorted(targets, key=lambda t: t.schedule_id)]


def batches(decisions: Iterable[Decision]) -> list[Batch]:
    """The jobs to submit: one per owner (a job runs with its submitter's rights) for all of
    its due targets, naming only targets not inside another due target's cascade, so that
    shared upstream views are planned once.

    >>> batches([])
    []
    """
    by_owner: dict[str, list[Decision]] = defaultdict(list)
    for d in decisions:
        if d.verdict is Verdict.SUBMIT:
            by_owner[d.target.owner].append(d)
    out = []
    for owner in sorted(by_owner):
        due = by_owner[owner]
        named = sorted({d.target.view for d in due
                        if not any(o.target.view != d.target.view
                                   and d.target.view in o.target.cascade for o in due)})
        out.append(Batch(owner, tuple(due), tuple(named)))
    return out


# ---- facts from the database -----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TargetFacts:
    """What :func:`read_targets` read, with what a probe needs to tell that it changed: the
    oids of the cascades' views and the (view, input) pairs whose changes count."""

    targets: list[LagTarget]
    views: dict[RelationName, ViewState]
    mv_oids: tuple[int, ...] = ()
    pairs: tuple[tuple[int, int], ...] = ()
    dated: bool = True  # no stats-mode input: every change the plan sees is in the change log


def read_targets(conn: Conn, graph: MVGraph | None = None
                 ) -> tuple[list[LagTarget], dict[RelationName, ViewState]]:
    """The enabled freshness targets and the state of every view in their cascades."""
    facts = read_facts(conn, graph)
    return facts.targets, facts.views


def read_facts(conn: Conn, graph: MVGraph | Callable[[], MVGraph] | None = None
               ) -> TargetFacts:
    """As :func:`read_targets`, with the oids a probe (:mod:`mvgraph.scheduler.lagwatch`)
    watches. ``graph`` may be a function giving it: called only when there are targets (the
    catalog of 10,000 views costs a second of Python to load)."""
    from mvgraph.refresh import changes

    with translated():
        rows = conn.execute(query("lag_schedules")).fetchall()
    if not rows:
        return TargetFacts([], {})
    if callable(graph):
        graph = graph()
    if graph is None:
        from mvgraph.catalog import catalog_graph

        graph = catalog_graph(conn, with_sql=False)
    targets: list[LagTarget] = []
    for sid, view_name, lag, owner, created, job_status, finished in rows:
        view = RelationName.parse(str(view_name))
        if view not in graph or graph.kind(view) is not Kind.MATVIEW or graph.needs_cycle(view):
            continue
        status = JobStatus(str(job_status)) if job_status is not None else None
        targets.append(LagTarget(
            int(str(sid)), view, lag if isinstance(lag, timedelta) else timedelta(0),
            frozenset(materialized_scope(graph, view, BEHAVIOR)), str(owner),
            created if isinstance(created, datetime) else None,
            busy=status in (JobStatus.QUEUED, JobStatus.RUNNING),
            last_end=finished if isinstance(finished, datetime) else None,
            last_failed=status in (JobStatus.FAILED, JobStatus.CANCELLED)))
    mvs = sorted({n for t in targets for n in t.cascade})
    if not mvs:
        return TargetFacts(targets, {})
    state = changes.read_state(conn, graph, mvs)
    facts = changes.gather_facts(conn, graph, mvs, state)
    rels = state.rels
    pairs = [(rels[m].oid, oid) for m in mvs if m in rels
             for i in changes.freshness_inputs(graph, m) if i in rels
             for oid in rels[i].change_oids]
    with translated():
        first: dict[int, datetime] = {}
        for mv_oid, _input, at in conn.execute(query("first_changes"), {
                "mvs": [p[0] for p in pairs], "inputs": [p[1] for p in pairs]}).fetchall():
            if isinstance(at, datetime):
                key = int(str(mv_oid))
                first[key] = min(first.get(key, at), at)
        durations = {str(r[0]): float(str(r[1])) for r in conn.execute(
            query("past_durations"), {"names": [str(m) for m in mvs]}).fetchall()
            if r[1] is not None}
    views: dict[RelationName, ViewState] = {}
    for m in mvs:
        f = facts.get(m)
        if f is None or m not in rels:
            continue
        refreshed = f.refreshed_at if f.populated else None
        undated = bool(f.volatile or f.volatile_inputs
                       or any(c.kind in _UNDATED for c in f.changes))
        views[m] = ViewState(m, refreshed, first.get(rels[m].oid), undated,
                             durations.get(str(m)))
    dated = all(mode != "stats" for mode, _ in state.modes.values())
    return TargetFacts(targets, views, tuple(rels[m].oid for m in mvs if m in rels),
                       tuple(pairs), dated)


def lag_report(conn: Conn, now: datetime | None = None, graph: MVGraph | None = None
               ) -> list[Decision]:
    """Every freshness target's decision at ``now`` (its lag included)."""
    now = now or _db_now(conn)
    targets, views = read_targets(conn, graph)
    return plan(targets, views, now)


def due_targets(conn: Conn, now: datetime | None = None) -> list[Decision]:
    """The freshness targets that must be submitted at ``now`` (default: the server's clock)."""
    return [d for d in lag_report(conn, now) if d.verdict is Verdict.SUBMIT]


@dataclass(frozen=True, slots=True)
class Firing:
    """One job submitted for due freshness targets."""

    job_id: int
    owner: str
    statement_targets: tuple[RelationName, ...]
    decisions: tuple[Decision, ...]  # the targets whose slot this job claimed
    submitted_at: datetime

    def lateness_s(self, d: Decision) -> float:
        """How late the job was submitted for one target (0 when early enough)."""
        return max((self.submitted_at - (d.due_at or self.submitted_at)).total_seconds(), 0.0)


@dataclass(frozen=True, slots=True)
class TickResult:
    """What one call of :func:`submit_due` saw and did."""

    decisions: tuple[Decision, ...]
    firings: tuple[Firing, ...]
    lost: tuple[Decision, ...] = ()  # due, but another daemon claimed the episode first
    failed: tuple[tuple[Decision, str], ...] = ()  # due, the submission failed (the error)

    @property
    def skipped(self) -> list[Decision]:
        """Due targets skipped because their previous job still runs."""
        return [d for d in self.decisions if d.verdict is Verdict.BUSY]


def submit_due(conn: Conn, now: datetime | None = None, *, claimed_by: str | None = None,
               graph: MVGraph | None = None, facts: TargetFacts | None = None) -> TickResult:
    """Submit the due freshness targets: per owner, one CASCADE BACKWARD job for all of them,
    in one transaction with the claim of each target's episode slot (a target whose slot
    another daemon already claimed is left out; nothing claimed, nothing submitted) and the
    schedule's ``last_job``. Safe to call from several daemons at once, every second.
    ``graph``: the catalog's graph (default: read now); ``facts``: already read.
    """
    from mvgraph.refresh.service import submit_refresh
    from mvgraph.scheduler import store

    if facts is None:
        decisions = lag_report(conn, now, graph)
    else:
        decisions = plan(facts.targets, facts.views, now or _db_now(conn))
    firings: list[Firing] = []
    lost: list[Decision] = []
    failed: list[tuple[Decision, str]] = []
    for batch in batches(decisions):
        try:
            with conn.transaction():
                won = []
                for d in batch.decisions:
                    assert d.slot is not None
                    if store.claim_slot(conn, d.target.schedule_id, d.slot, SlotStatus.FIRED,
                                        reason=d.reason, claimed_by=claimed_by):
                        won.append(d)
                    else:
                        lost.append(d)
                if not won:
                    continue
                views = {d.target.view for d in won}
                named = [str(v) for v in sorted(views) if not any(
                    o.target.view != v and v in o.target.cascade for o in won)]
                job = submit_refresh(conn, named, BEHAVIOR.value,
                                     for_schedules=[d.target.schedule_id for d in won])
                for d in won:
                    assert d.slot is not None
                    store.set_slot_job(conn, d.target.schedule_id, d.slot, job)
                submitted = _db_now(conn)
            firings.append(Firing(job, batch.owner,
                                  tuple(RelationName.parse(n) for n in named), tuple(won),
                                  submitted))
            log.info("freshness targets: job %d submitted for %s (schedules %s)", job,
                     ", ".join(named), ", ".join(str(d.target.schedule_id) for d in won))
        except Exception as exc:  # one owner's failure spares the others
            for d in batch.decisions:
                failed.append((d, str(exc)))
            log.warning("freshness targets: submitting for %s failed: %s",
                        ", ".join(str(d.target.view) for d in batch.decisions), exc)
    return TickResult(tuple(decisions), tuple(firings), tuple(lost), tuple(failed))


def _db_now(conn: Conn) -> datetime:
    """The server's clock (change times are the server's): clock_timestamp()."""
    with translated():
        row = conn.execute(query("clock_now")).fetchone()
    return row[0] if row and isinstance(row[0], datetime) else datetime.now(UTC)


def lag_by_view(decisions: Sequence[Decision]) -> dict[RelationName, Decision]:
    """Decisions keyed by target view (for status)."""
    return {d.target.view: d for d in decisions}
