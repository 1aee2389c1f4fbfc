"""Refresh operations for the library and CLI: plan, refresh, track, status, configure."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

import psycopg

from mvgraph import catalog
from mvgraph.catalog import cached_planning_graph, catalog_graph
from mvgraph.db.connect import session as open_session
from mvgraph.db.install import require_schema
from mvgraph.db.queries import query
from mvgraph.errors import (
    MvgraphError,
    UnknownRelation,
    UsageError,
    translated,
)
from mvgraph.graph import MVGraph
from mvgraph.model.definitions import Kind
from mvgraph.model.names import RelationName
from mvgraph.refresh import changes, prefetch
from mvgraph.refresh.behavior import (
    Action,
    Plan,
    RefreshBehavior,
    materialized_scope,
)
from mvgraph.refresh.behavior import plan as make_plan
from mvgraph.refresh.locks import TIMEOUT_SETTINGS, LockMode, parse_lock_mode
from mvgraph.settingkeys import SESSION_DEFAULT, help_list
from mvgraph.settingkeys import SETTINGS as KEYS
from mvgraph.tracking import triggers, wal

if TYPE_CHECKING:  # the executor is imported by refresh() only: a plan does not need it
    from mvgraph.jobs.store import PlannedStep
    from mvgraph.model.events import Listener
    from mvgraph.refresh.executor import Executor, RefreshOptions, RefreshReport

Conn = psycopg.Connection[tuple[object, ...]]
log = logging.getLogger("mvgraph")
Target = str | psycopg.Connection[tuple[object, ...]] | None

_SELECTOR_CHARS = set("+@*?,")


@contextmanager
def session(target: Target) -> Iterator[Conn]:
    """A ready autocommit connection: the given one, or a new one from a DSN (closed after),
    with the schema checked (read-only: only ``mvgraph init`` installs it)."""
    with open_session(target, prepare) as conn:
        yield conn


@contextmanager
def submit_session(target: str | None) -> Iterator[Conn]:
    """A connection that only submits and steers jobs: the schema must be current; the change
    log is left to sessions that refresh, so a role holding only the submit grants can use it."""
    with open_session(target, check_schema) as conn:
        yield conn


def check_schema(conn: Conn) -> None:
    """Read-only: the schema must be the version this mvgraph needs; nothing is created.

    Raises:
        SchemaError: not installed or older (run ``mvgraph init``), or newer (upgrade mvgraph).
        PermissionDenied: the role cannot read ``mvgraph.schema_version``; the message names
            the grant to ask for.
    """
    require_schema(conn)


def prepare(conn: Conn) -> None:
    """Check the schema (read-only) and repair after a lost change log. Missing event triggers
    are not installed here (``mvgraph init`` does; ``status`` warns)."""
    check_schema(conn)
    changes.check_change_log(conn)


def planning_graph(conn: Conn, cached: bool = False) -> MVGraph:
    """The catalog's graph for planning (no view definitions); its warnings (cycles among
    views) are logged once. ``cached``: kept on disk under the catalog's fingerprint (a plan
    reads no attribute that changes without DDL, such as populated)."""
    g = cached_planning_graph(conn) if cached else catalog_graph(conn, with_sql=False)
    for line in g.warnings:
        log.warning("%s", line)
    return g


def is_selector(text: str) -> bool:
    """True when a target is a dbt-style selector rather than a plain name (characters inside
    double quotes belong to a name).

    >>> is_selector("+mv5"), is_selector('"Sales Q1+"'), is_selector("a b")
    (True, False, True)
    """
    unquoted = re.sub(r'"(?:[^"]|"")*"', "x", text.strip())
    return bool(_SELECTOR_CHARS & set(unquoted)) or " " in unquoted


def build_plan(conn: Conn, targets: Sequence[str], behavior: str | RefreshBehavior | None = None,
               *, force: bool = False, search_path: Sequence[str] = ("public",),
               graph: MVGraph | None = None, event_triggers: Iterable[str] | None = None
               ) -> tuple[MVGraph, Plan, changes.CatalogState]:
    """The plan for targets (names, or dbt selectors refreshed with DEFAULT semantics), with the
    graph and the catalog facts it was made from (a run reuses them). ``event_triggers``:
    mvgraph's installed and enabled, when already read (a worker's claim returns them)."""
    if not targets:
        raise UsageError("name at least one materialized view (or a selector such as +mv5+)")
    g = graph or planning_graph(conn, cached=True)
    parsed = RefreshBehavior.parse(behavior)
    if any(is_selector(t) for t in targets):
        if parsed not in (RefreshBehavior.DEFAULT, RefreshBehavior.RESTRICT):
            raise UsageError("a selector already says which views to refresh; drop --cascade")
        scope = g.select(" ".join(targets), search_path)
        names = [n for n in scope if g.kind(n) is Kind.MATVIEW]
        if not names:
            raise UnknownRelation(f"selector {' '.join(targets)!r} matches no materialized view; "
                                  "check it with `mvgraph graph -s`")
        g.require_acyclic(names)
        state = changes.read_state(conn, g, names, event_triggers=event_triggers)
        facts = {} if force else changes.gather_facts(conn, g, names, state)
        chosen = make_plan(g, names, parsed, facts, force=force, scope=names)
        return g, replace(chosen, selector=" ".join(targets)), state
    names = [g.resolve(t, search_path) for t in targets]
    touched: set[RelationName] = set()
    for n in names:
        if g.kind(n) is Kind.MATVIEW:
            touched |= materialized_scope(g, n, parsed)
    g.require_acyclic([*names, *sorted(touched)])
    state = changes.read_state(conn, g, sorted(touched),
                               event_triggers=event_triggers)
    # a forced plan (--force, RESTRICT) refreshes every view whatever its facts: none are read
    facts = {} if force or parsed is RefreshBehavior.RESTRICT else changes.gather_facts(
        conn, g, sorted(touched), state)
    return g, make_plan(g, names, parsed, facts, force=force), state


def plan(target: Target, targets: str | Sequence[str], behavior: str | None = None, *,
         force: bool = False, search_path: Sequence[str] = ("public",)) -> Plan:
    """Plan a refresh without running it.

    Example::

        p = mvgraph.plan("postgresql:///app", "mv5", "cascade all")
        [(str(s.name), s.action.value) for s in p.steps]
        # [('public.mv1', 'skip'), ('public.mv5', 'refresh'), ('public.mv6', 'refresh')]
    """
    names = [targets] if isinstance(targets, str) else list(targets)
    with session(target) as conn:
        return build_plan(conn, names, behavior, force=force, search_path=search_path)[1]


@dataclass(frozen=True, slots=True)
class RefreshSpec:
    """What a refresh job was asked to do: kept in the job's options, so that a worker (or a
    resumed job) plans it again from fresh facts."""

    targets: tuple[str, ...]
    behavior: str | None = None
    force: bool = False
    search_path: tuple[str, ...] = ("public",)
    parallel: int = 1
    atomic: bool = False
    concurrently: str = "auto"
    lock_timeout: str | None = None
    statement_timeout: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def check(self) -> None:
        """Refuse bad option values before anything runs."""
        if self.parallel < 1:
            raise UsageError("--parallel must be at least 1")
        if self.concurrently not in ("auto", "always", "never"):
            raise UsageError("--concurrently must be auto, always or never")

    def to_options(self, p: Plan) -> dict[str, Any]:
        """The job's ``options`` column."""
        return {"behavior": p.behavior.value, "targets": [str(t) for t in p.targets],
                "asked": list(self.targets), "force": self.force,
                "search_path": list(self.search_path), "parallel": self.parallel,
                "atomic": self.atomic, "concurrently": self.concurrently,
                "lock_timeout": self.lock_timeout, "statement_timeout": self.statement_timeout}

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> RefreshSpec:
        """Back from a job's ``options`` (written by ``to_options``)."""
        return cls(tuple(options.get("asked") or options.get("targets") or ()),
                   options.get("behavior"), bool(options.get("force")),
                   tuple(options.get("search_path") or ("public",)),
                   int(options.get("parallel") or 1), bool(options.get("atomic")),
                   str(options.get("concurrently") or "auto"), options.get("lock_timeout"),
                   options.get("statement_timeout"))


def run_options(conn: Conn, spec: RefreshSpec,
                stored: Mapping[str, str] | None = None) -> RefreshOptions:
    """How to run: the spec's values, else the stored settings (``stored``: already read, as
    a worker's claim returns them)."""
    from mvgraph.refresh.executor import RefreshOptions

    for key, value in (("lock_timeout", spec.lock_timeout),
                       ("statement_timeout", spec.statement_timeout)):
        if value is not None:
            _validate_setting(conn, key, value)
    if stored is None:
        with translated():
            stored = {str(r[0]): str(r[1]) for r in conn.execute(query("all_settings"))}
    mode = parse_lock_mode(stored.get("lock_mode"))
    held = mode is LockMode.GLOBAL  # the global_lock_* settings apply while it is held
    return RefreshOptions(
        parallel=1 if spec.atomic else spec.parallel, atomic=spec.atomic,
        concurrently=spec.concurrently,
        lock_timeout=spec.lock_timeout or stored.get("lock_timeout", "10s"),
        statement_timeout=spec.statement_timeout
        or (stored.get("global_lock_statement_timeout") if held else None)
        or stored.get("statement_timeout", "0"),
        synchronous_commit=stored.get("synchronous_commit", "off"),
        lock_mode=mode,
        global_lock_timeout=stored.get("global_lock_timeout") if held else None,
        global_lock_idle_timeout=stored.get("global_lock_idle_timeout") if held else None)


def planned_steps(p: Plan, state: changes.CatalogState) -> list[PlannedStep]:
    """The step rows of a plan (its views must exist)."""
    from mvgraph.jobs.store import PlannedStep

    missing = [s.name for s in p.steps if s.name not in state.rels]
    if missing:
        raise UnknownRelation(f"{missing[0]} does not exist in the database; reload the graph")
    return [PlannedStep(str(s.name), state.rels[s.name].oid, s.action.value, s.reason)
            for s in p.steps]


def _spec(targets: str | Sequence[str], behavior: str | None, **kwargs: Any) -> RefreshSpec:
    names = (targets,) if isinstance(targets, str) else tuple(targets)
    kwargs["search_path"] = tuple(kwargs.get("search_path", ("public",)))
    spec = RefreshSpec(names, behavior, **kwargs)
    spec.check()
    return spec


def refresh(target: Target, targets: str | Sequence[str], behavior: str | None = None, *,
            parallel: int = 1, atomic: bool = False, concurrently: str = "auto",
            lock_timeout: str | None = None, statement_timeout: str | None = None,
            force: bool = False,
            search_path: Sequence[str] = ("public",), listener: Listener | None = None,
            executor_hook: Callable[[Executor], None] | None = None) -> RefreshReport:
    """Refresh views with one of the five behaviours; returns what happened to each view.

    The run is a job (``mvgraph.job``) owned by this session until it ends. ``listener``
    receives typed events (``mvgraph.model.events``): JobStarted, StepStarted, StepFinished,
    JobFinished. Without a listener, a run with nothing to refresh (every view unchanged) makes
    no job and writes nothing: its report's ``job_id`` is None. A request this process planned
    before reads its facts in one statement (:mod:`mvgraph.refresh.prefetch`), so on a
    connection passed in, checking that nothing is stale is one query.

    Example::

        report = mvgraph.refresh("postgresql:///app", "mv5", behavior="cascade all",
                                 parallel=4)
        report.status, [str(n) for n in report.refreshed]
        # ('ok', ['public.mv1', 'public.mv5', 'public.mv6'])
    """
    spec = _spec(targets, behavior, parallel=parallel, atomic=atomic,
                 concurrently=concurrently, lock_timeout=lock_timeout,
                 statement_timeout=statement_timeout, force=force, search_path=search_path)
    start = time.monotonic()
    with open_session(target, _unchecked) as conn:
        if spec.lock_timeout is not None or spec.statement_timeout is not None:
            prepare(conn)
            run_options(conn, spec)  # the timeouts are checked first, on the server
        planned = quick_plan(conn, spec)
        p = planned[1][1]
        if listener is None and executor_hook is None and all(
                s.action is Action.SKIP and not s.forced for s in p.steps):
            missing = [s.name for s in p.steps if s.name not in planned[1][2].rels]
            if missing:
                planned_steps(p, planned[1][2])  # raises UnknownRelation
            return _nothing_to_do(p, time.monotonic() - start)
        return run_refresh(conn, spec, listener=listener, executor_hook=executor_hook,
                           planned=planned)


def _unchecked(conn: Conn) -> None:
    """No setup: :func:`quick_plan` checks the schema and the change log itself."""


Planned = tuple["RefreshOptions", tuple[MVGraph, Plan, changes.CatalogState]]


def quick_plan(conn: Conn, spec: RefreshSpec) -> Planned:
    """The checks, options and plan of a refresh: in one statement when this process planned
    the same request before (:mod:`mvgraph.refresh.prefetch`), else query by query (recorded
    for the next time)."""
    key = prefetch.conn_key(conn, spec.targets, spec.behavior, spec.force, spec.search_path)
    replay = prefetch.replay_for(conn, key)
    if replay is not None:
        last: Planned | None = prefetch.made_from(key, replay.raw)
        if last is not None:  # the same facts as the last plan: the same plan
            for line in last[1][0].warnings:
                log.warning("%s", line)
            return last
        try:
            planned = _checked_plan(cast(Conn, replay), spec, replay_only=True)
        except prefetch.Miss:
            pass
        else:
            prefetch.keep(key, replay.raw, planned)
            return planned
    recording, recorder = prefetch.recorder(conn)
    planned = _checked_plan(recording, spec)
    prefetch.remember(key, recorder.recorded)
    return planned


def _checked_plan(conn: Conn, spec: RefreshSpec, replay_only: bool = False) -> Planned:
    check_schema(conn)
    if not changes.check_change_log(conn) and replay_only:
        raise prefetch.Miss("change log repaired")  # plan from the repaired state
    options = run_options(conn, spec)
    return options, build_plan(conn, spec.targets, spec.behavior, force=spec.force,
                                     search_path=spec.search_path)


def _nothing_to_do(p: Plan, elapsed: float) -> RefreshReport:
    """The report of a run whose every view is skipped: no job, nothing written."""
    from mvgraph.model.results import StepResult
    from mvgraph.model.status import RunStatus, StepStatus
    from mvgraph.refresh.executor import RefreshReport

    return RefreshReport(RunStatus.OK, tuple(StepResult(s.name, StepStatus.SKIPPED, s.reason)
                                             for s in p.steps), None, elapsed, p)


def run_refresh(conn: Conn, spec: RefreshSpec, *, listener: Listener | None = None,
                executor_hook: Callable[[Executor], None] | None = None,
                planned: Planned | None = None) -> RefreshReport:
    """Plan (unless ``planned`` by :func:`quick_plan`) and run a refresh in the foreground on
    ``conn``, as a job owned by it."""
    from mvgraph import maintenance
    from mvgraph.jobs import store
    from mvgraph.model.status import JobKind, JobStatus
    from mvgraph.refresh.executor import Executor

    if planned is None:
        options = run_options(conn, spec)
        g, p, state = build_plan(conn, spec.targets, spec.behavior, force=spec.force,
                                 search_path=spec.search_path)
    else:
        options, (g, p, state) = planned
    steps = planned_steps(p, state)
    job = store.create_running(conn, JobKind.REFRESH, p.statement(), spec.to_options(p))
    executor = Executor(conn, g, p, options, listener, catalog=state, job_id=job)
    try:
        store.write_steps(conn, job, steps)
    except BaseException:
        store.finish(conn, job, JobStatus.FAILED, "its steps could not be recorded",
                     foreground=True)
        raise
    if executor_hook is not None:  # lets callers reach the executor, e.g. to cancel it
        executor_hook(executor)
    report = executor.run()
    maintenance.housekeeping(conn, job)
    return report


def submit_refresh(target: Target, targets: str | Sequence[str], behavior: str | None = None,
                   *, parallel: int = 1, atomic: bool = False, concurrently: str = "auto",
                   lock_timeout: str | None = None, statement_timeout: str | None = None,
                   force: bool = False, search_path: Sequence[str] = ("public",),
                   for_schedules: Sequence[int] = ()) -> int:
    """Queue a refresh as a background job (planned now, its steps recorded) and return its
    id at once; ``mvgraph worker`` runs it, planning again from the facts of that moment.
    ``for_schedules``: a daemon's job for these schedules, owned by their owner."""
    from mvgraph.jobs import store
    from mvgraph.model.status import JobKind

    spec = _spec(targets, behavior, parallel=parallel, atomic=atomic,
                 concurrently=concurrently, lock_timeout=lock_timeout,
                 statement_timeout=statement_timeout, force=force, search_path=search_path)
    with session(target) as conn:
        run_options(conn, spec)  # validates the timeouts
        _g, p, state = build_plan(conn, spec.targets, spec.behavior, force=spec.force,
                                  search_path=spec.search_path)
        return store.queue(conn, JobKind.REFRESH, p.statement(), spec.to_options(p),
                           planned_steps(p, state), for_schedules=for_schedules)


#: Every setting's meaning and default (the list itself: mvgraph.settingkeys).
SETTINGS = {k: f"{s.meaning} (default: {s.default_text()})" for k, s in KEYS.items()}


def _validate_setting(conn: Conn, key: str, value: str) -> None:
    """Refuse a value every later refresh would trip over."""
    if key == "retention_days":
        if not value.isdigit() or not 0 <= int(value) <= 36500:
            raise UsageError("retention_days must be a whole number of days (0 to 36500)")
        return
    if key == "max_concurrent_jobs":
        if not value.isdigit() or not 1 <= int(value) <= 10000:
            raise UsageError("max_concurrent_jobs must be a whole number from 1 to 10000")
        return
    if key == "schedule_max_failures":
        if not value.isdigit() or not 1 <= int(value) <= 1_000_000:
            raise UsageError("schedule_max_failures must be a whole number from 1 to 1000000")
        return
    if key == "lock_mode":
        parse_lock_mode(value)
        return
    if key == "wal_slot_max_lag":
        try:
            with conn.transaction(force_rollback=True):
                size = wal.max_lag_bytes(conn, value)
        except MvgraphError:
            size = 0
        if size <= 0:
            raise UsageError(f"{value!r} is not a valid wal_slot_max_lag; use a size such as "
                             "1GB or 500MB")
        return
    try:  # let PostgreSQL judge the value, in a transaction that is rolled back
        with conn.transaction(force_rollback=True):
            conn.execute(query("try_setting"), {"key": TIMEOUT_SETTINGS.get(key, key),
                                                "value": value})
    except psycopg.Error:
        example = "on or off" if key == "synchronous_commit" else "10s, 500ms or 0"
        raise UsageError(f"{value!r} is not a valid {key}; use e.g. {example}") from None


def get_setting(conn: Conn, key: str, default: str) -> str:
    """One setting from ``mvgraph.setting``."""
    with translated():
        row = conn.execute(query("get_setting"), {"key": key}).fetchone()
    return str(row[0]) if row else default


def settings(target: Target, key: str | None = None, value: str | None = None
             ) -> dict[str, str]:
    """Read all settings, read one (``key``), or set one (``key`` and ``value``); returns the
    settings read (all, or the one named)."""
    with session(target) as conn:
        if key is not None and key not in SETTINGS:
            raise UsageError(f"unknown setting {key!r}; known: {help_list()}")
        if key is not None and value is not None:
            _validate_setting(conn, key, value)
            if key == "lock_mode":  # BDR's words are stored as ours
                value = parse_lock_mode(value).value
            with translated():
                conn.execute(query("put_setting"), {"key": key, "value": value})
        with translated():
            current = {str(r[0]): str(r[1]) for r in conn.execute(query("all_settings"))}
            current = with_defaults(conn, current)
        return current if key is None else {key: current[key]}


def with_defaults(conn: Conn, stored: dict[str, str]) -> dict[str, str]:
    """Every setting, in the documented order: its stored value, else its default (a derived
    default is the value it follows); keys stored but unknown to this version come last."""
    values: dict[str, str] = {}
    for k, s in KEYS.items():
        if k in stored:
            values[k] = stored[k]
        elif s.default_from == SESSION_DEFAULT:
            row = conn.execute(query("session_idle_timeout")).fetchone()
            values[k] = str(row[0]) if row else "0"
        elif s.default_from is not None:
            values[k] = values[s.default_from]
        else:
            values[k] = str(s.default)
    return values | {k: v for k, v in stored.items() if k not in values}


def stored_settings(target: Target) -> set[str]:
    """The keys set in the database (the others have their default)."""
    with session(target) as conn, translated():
        return {str(r[0]) for r in conn.execute(query("all_settings"))}


def track(target: Target, tables: Sequence[str] = (), *, every: bool = False,
          mode: str = "triggers", search_path: Sequence[str] = ("public",)
          ) -> list[RelationName]:
    """Set the tracking mode of tables (``every``: all base tables upstream of any view, and
    the topmost table above each partition or inheritance child among them: writes routed
    through a parent are seen only by the parent's tracking)."""
    with session(target) as conn:
        g = planning_graph(conn)
        names = _tables(g, tables, every, search_path)
        for name in names:
            triggers.set_mode(conn, name, mode)
        if every and names:
            rels = catalog.relations(conn, names)
            how = triggers.input_tracking(conn, [r.oid for r in rels.values()])
            above = sorted({RelationName.parse(t.via) for t in how.values()
                            if t.mode == triggers.UNTRACKED and t.via} - set(names))
            for name in above:
                triggers.set_mode(conn, name, mode)
            names = [*names, *above]
        return names


def untrack(target: Target, tables: Sequence[str] = (), *, every: bool = False,
            search_path: Sequence[str] = ("public",)) -> list[RelationName]:
    """Remove tracking (any mode); the tables are untracked again: their readers are
    refreshed on every run, never skipped."""
    with session(target) as conn:
        g = planning_graph(conn)
        names = _tables(g, tables, every, search_path)
        for name in names:
            triggers.untrack(conn, name)
        return names


def _tables(g: MVGraph, tables: Sequence[str], every: bool,
            search_path: Sequence[str]) -> list[RelationName]:
    if every:
        return changes.base_tables_upstream_of_views(g)
    if not tables:
        raise UsageError("name tables to track, or pass --all")
    names = [g.resolve(t, search_path) for t in tables]
    for name in names:
        if not g.kind(name).is_base:
            what = "system relation" if g.kind(name) is Kind.SYSTEM else g.kind(name).value
            raise UnknownRelation(f"{name} is a {what}, not a table; track base tables only")
    return names


def configure(target: Target, view: str, *, early_cutoff: bool | None = None,
              volatile: str | None = None, search_path: Sequence[str] = ("public",)) -> None:
    """Per-view options: early cutoff, and how volatile functions count (auto/always/never)."""
    if volatile not in (None, "auto", "always", "never"):
        raise UsageError("--volatile must be auto, always or never")
    with session(target) as conn:
        g = planning_graph(conn)
        name = g.resolve(view, search_path)
        if g.kind(name) is not Kind.MATVIEW:
            raise UnknownRelation(f"{name} is a {g.kind(name).value}, not a materialized view; "
                                  "name a materialized view")
        rel = catalog.relations(conn, [name])[name]
        with translated():
            conn.execute(query("ensure_mv_state"), {"oids": [rel.oid], "names": [str(name)]})
            conn.execute(query("configure_mv"), {"oid": rel.oid, "early_cutoff": early_cutoff,
                                                 "volatile_mode": volatile})
