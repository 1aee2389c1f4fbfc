"""The five refresh behaviours, and planning: a pure function of graph, behaviour and facts."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from mvgraph.errors import UnknownRelation, UsageError
from mvgraph.graph import MVGraph
from mvgraph.model.definitions import Kind
from mvgraph.model.names import RelationName
from mvgraph.model.status import Action

__all__ = ["Action", "Plan", "RefreshBehavior", "Step", "decide", "plan"]

CASCADE_HINT = "use CASCADE FORWARD, CASCADE BACKWARD or CASCADE ALL"


class RefreshBehavior(StrEnum):
    """GaussDB's refresh behaviours."""

    DEFAULT = "DEFAULT"
    RESTRICT = "RESTRICT"
    CASCADE_FORWARD = "CASCADE FORWARD"
    CASCADE_BACKWARD = "CASCADE BACKWARD"
    CASCADE_ALL = "CASCADE ALL"

    @classmethod
    def parse(cls, text: str | RefreshBehavior | None) -> RefreshBehavior:
        """Accept the spellings people type.

        >>> RefreshBehavior.parse("cascade_all"), RefreshBehavior.parse("all")
        (<RefreshBehavior.CASCADE_ALL: 'CASCADE ALL'>, <RefreshBehavior.CASCADE_ALL: 'CASCADE ALL'>)
        >>> RefreshBehavior.parse("Forward").value
        'CASCADE FORWARD'
        """
        if isinstance(text, RefreshBehavior):
            return text
        if text is None:
            return cls.DEFAULT
        words = re.sub(r"[\s_\-]+", " ", text.strip().upper())
        if words == "CASCADE":  # GaussDB's grammar has no bare CASCADE
            raise UsageError(f"refresh behaviour {text!r} needs a direction: {CASCADE_HINT}")
        words = words.removeprefix("CASCADE ")
        aliases = {
            "DEFAULT": cls.DEFAULT, "": cls.DEFAULT, "RESTRICT": cls.RESTRICT,
            "FORWARD": cls.CASCADE_FORWARD, "BACKWARD": cls.CASCADE_BACKWARD,
            "ALL": cls.CASCADE_ALL,
            "DOWNSTREAM": cls.CASCADE_FORWARD, "UPSTREAM": cls.CASCADE_BACKWARD,
        }
        if words in aliases:
            return aliases[words]
        raise UsageError(f"unknown refresh behaviour {text!r}; use default, restrict, "
                         "cascade forward, cascade backward or cascade all")

    @property
    def is_cascade(self) -> bool:
        """True for the three cascades."""
        return self.value.startswith("CASCADE")


@dataclass(frozen=True, slots=True)
class InputChange:
    """One reason an input counts as changed since a view's last refresh."""

    input: RelationName
    kind: str  # write | refresh | outside | ddl | tracking | stats | always | untracked
    #            | not_tracked
    transactions: int = 0
    last_at: datetime | None = None
    detail: str = ""  # untracked: what is wrong, and the fix; not_tracked: the table to track


@dataclass(frozen=True, slots=True)
class MVFacts:
    """What the database says about one materialized view's freshness."""

    name: RelationName
    populated: bool = True
    refreshed_at: datetime | None = None  # None: mvgraph never refreshed it
    changes: tuple[InputChange, ...] = ()
    volatile: tuple[str, ...] = ()  # volatile functions that make it always stale
    volatile_inputs: tuple[str, ...] = ()  # e.g. "sequence public.s": always stale too
    outside_refreshes_seen: bool = True  # False when the event trigger could not be installed
    approximate: tuple[RelationName, ...] = ()  # inputs in 'stats' mode: a skip is a guess


@dataclass(frozen=True, slots=True)
class Step:
    """One view in a plan, with its verdict and the reason for it."""

    name: RelationName
    action: Action
    reason: str
    after: tuple[RelationName, ...] = ()  # earlier steps of the plan this one depends on
    forced: bool = False
    seen: datetime | None = None  # the view's last mvgraph refresh when the plan was made
    propagated: bool = False  # stale only because an upstream step refreshes in this run


@dataclass(frozen=True, slots=True)
class Plan:
    """An ordered list of steps for one behaviour on one or more targets."""

    behavior: RefreshBehavior
    targets: tuple[RelationName, ...]
    steps: tuple[Step, ...] = field(default=())
    selector: str | None = None  # the dbt-style selector that chose the targets, if any

    @property
    def to_refresh(self) -> list[Step]:
        """Steps that will refresh."""
        return [s for s in self.steps if s.action is Action.REFRESH]

    def statement(self) -> str:
        """The GaussDB statement this plan stands for; for a selector, the command (short
        whatever the number of views it matched).

        >>> Plan(RefreshBehavior.DEFAULT, (RelationName("public", "a"),), selector="+a").statement()
        "mvgraph refresh '+a'"
        """
        if self.selector is not None:
            return f"mvgraph refresh {_single_quoted(self.selector)}"
        names = ", ".join(str(t) for t in self.targets)
        return f"REFRESH MATERIALIZED VIEW {names} {self.behavior.value}"

    def header(self) -> str:
        """One line: what was asked and how many views refresh or skip.

        >>> Plan(RefreshBehavior.DEFAULT, (), selector="*").header()
        "plan for '*': 0 materialized views, 0 to refresh, 0 to skip"
        """
        asked = f"plan for {_single_quoted(self.selector)}" if self.selector is not None \
            else self.statement()
        n, refresh = len(self.steps), len(self.to_refresh)
        return (f"{asked}: {n} materialized view{'' if n == 1 else 's'}, {refresh} to refresh, "
                f"{n - refresh} to skip")

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "behavior": self.behavior.value,
            "selector": self.selector,
            "targets": [str(t) for t in self.targets],
            "steps": [{"name": str(s.name), "action": s.action.value, "reason": s.reason,
                       "after": [str(a) for a in s.after]} for s in self.steps],
        }


def _single_quoted(text: str) -> str:
    """Quoted for a shell, always (``*`` and ``+`` read better quoted)."""
    return "'" + text.replace("'", "'\\''") + "'"


def materialized_scope(graph: MVGraph, target: RelationName,
                       behavior: RefreshBehavior) -> set[RelationName]:
    """The materialized views a behaviour touches for one target (the target included)."""
    chosen: set[RelationName] = {target}
    if behavior in (RefreshBehavior.CASCADE_BACKWARD, RefreshBehavior.CASCADE_ALL):
        chosen |= graph.upstream(target)
    if behavior in (RefreshBehavior.CASCADE_FORWARD, RefreshBehavior.CASCADE_ALL):
        chosen |= graph.downstream(target)
    return {n for n in chosen if graph.kind(n) is Kind.MATVIEW}


def step_dependencies(graph: MVGraph, steps: Iterable[RelationName]) -> dict[RelationName,
                                                                             set[RelationName]]:
    """For each step, the nearest steps upstream of it: reached through any path of the graph
    (plain views, tables, views outside the plan) without passing another step."""
    chosen = set(steps)
    out: dict[RelationName, set[RelationName]] = {}
    for s in chosen:
        found: set[RelationName] = set()
        seen: set[RelationName] = set()
        stack = list(graph.g.predecessors(s))
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            if node in chosen:
                found.add(node)
            else:
                stack.extend(graph.g.predecessors(node))
        out[s] = found
    return out


def decide(facts: MVFacts, forced: str | None = None) -> tuple[Action, str]:
    """The verdict for one view from its facts alone.

    >>> decide(MVFacts(RelationName("public", "mv1")))[1]
    'never refreshed by mvgraph'
    """
    if forced:
        return Action.REFRESH, f"forced ({forced})"
    if not facts.populated:
        return Action.REFRESH, "not populated"
    if facts.refreshed_at is None:
        return Action.REFRESH, "never refreshed by mvgraph"
    if facts.volatile or facts.volatile_inputs:
        why = [f"calls {', '.join(facts.volatile)}"] if facts.volatile else []
        why += [f"reads {', '.join(facts.volatile_inputs)}"] if facts.volatile_inputs else []
        return Action.REFRESH, f"{'; '.join(why)} (always stale)"
    if facts.changes:
        return Action.REFRESH, "; ".join(describe_change(c) for c in facts.changes)
    reason = f"unchanged since {facts.refreshed_at:%Y-%m-%d %H:%M:%S}"
    if facts.approximate:
        names = ", ".join(str(n) for n in facts.approximate)
        reason += (f" (approximate: {names} in stats mode, whose pg_stat counters can lag "
                   "recent writes)")
    if not facts.outside_refreshes_seen:
        reason += " (refreshes outside mvgraph are not seen: no event trigger)"
    return Action.SKIP, reason


def transitive_freshness(graph: MVGraph, verdicts: Mapping[RelationName, tuple[Action, str]]
                         ) -> dict[RelationName, tuple[bool, str]]:
    """Freshness of each view given its own verdict: a view over a stale view (through any path,
    plain views included) is stale too, naming the nearest stale view upstream.

    >>> transitive_freshness(MVGraph(), {})
    {}
    """
    deps = step_dependencies(graph, verdicts)
    out: dict[RelationName, tuple[bool, str]] = {}
    for name in (n for n in graph.order() if n in verdicts):
        action, reason = verdicts[name]
        stale_above = sorted(a for a in deps[name] if not out[a][0])
        if action is Action.SKIP and stale_above:
            reason = f"stale (upstream {stale_above[0]} is stale)"
        out[name] = (action is Action.SKIP and not stale_above, reason)
    return out


_CHANGE_TEXT = {
    "write": "input {input} changed ({n} transaction{s} since last refresh)",
    "refresh": "input {input} was refreshed{when}",
    "outside": "input {input} was refreshed outside mvgraph{when}",
    "ddl": "definition of input {input} changed{when}",
    "tracking": "change tracking of input {input} started{when}",
    "stats": "input {input} changed (approximate: pg_stat counters)",
    "always": "input {input} is in 'always' mode",
    "untracked": "input {input} is not fully tracked: {detail}",
    "not_tracked": "input {input} is untracked{through}, so it counts as changed; run "
                   "`mvgraph track {detail}` for exact skips",
}


def describe_change(c: InputChange) -> str:
    """A person-readable sentence for one input change.

    >>> describe_change(InputChange(RelationName("raw", "orders"), "write", 3))
    'input raw.orders changed (3 transactions since last refresh)'
    >>> describe_change(InputChange(RelationName("raw", "o"), "not_tracked", detail="raw.o"))
    'input raw.o is untracked, so it counts as changed; run `mvgraph track raw.o` for exact skips'
    """
    text = _CHANGE_TEXT.get(c.kind, "input {input} changed (" + c.kind + ")")
    when = f" at {c.last_at:%Y-%m-%d %H:%M:%S}" if c.last_at else ""
    through = f" (writes through {c.detail} are not logged)" \
        if c.kind == "not_tracked" and c.detail and c.detail != str(c.input) else ""
    return text.format(input=c.input, n=c.transactions, s="" if c.transactions == 1 else "s",
                       when=when, through=through,
                       detail=c.detail or ("some writes are not logged" if c.kind == "untracked"
                                           else str(c.input)))


def plan(graph: MVGraph, targets: Sequence[RelationName], behavior: RefreshBehavior | str,
         facts: Mapping[RelationName, MVFacts], *, force: bool = False,
         scope: Iterable[RelationName] | None = None) -> Plan:
    """Order the views a behaviour touches and give each a verdict and reason.

    ``facts`` must hold an entry for every materialized view in scope (a missing entry counts as
    never refreshed). With ``scope`` the set of views is given directly (dbt selectors); every
    view in it is refreshed with DEFAULT semantics. Staleness propagates: a step after an upstream
    step that refreshes is stale too.

    Raises:
        UnknownRelation: a target is not in the graph or not a materialized view.
    """
    behavior = RefreshBehavior.parse(behavior)
    for t in targets:
        if t not in graph:
            raise UnknownRelation(f"{t} is not in the graph; check the name with `mvgraph graph`")
        if scope is None and graph.kind(t) is not Kind.MATVIEW:
            raise UnknownRelation(f"{t} is a {graph.kind(t).value}, not a materialized view; "
                                  "name a materialized view")
    if scope is not None:
        chosen = {n for n in scope if graph.kind(n) is Kind.MATVIEW}
    else:
        chosen = set()
        for t in targets:
            chosen |= materialized_scope(graph, t, behavior)
    deps = step_dependencies(graph, chosen)
    forced_by = "RESTRICT" if behavior is RefreshBehavior.RESTRICT else (
        "--force" if force else None)
    verdicts: dict[RelationName, Action] = {}
    steps: list[Step] = []
    for name in (n for n in graph.order() if n in chosen):  # the whole graph's order: paths
        # between steps may run through views that are not steps
        after = tuple(sorted(deps[name]))
        own = facts.get(name, MVFacts(name))
        action, reason = decide(own, forced_by)
        propagated = False
        if action is Action.SKIP:
            refreshed = [a for a in after if verdicts[a] is Action.REFRESH]
            if refreshed:
                action, propagated = Action.REFRESH, True
                reason = f"input {refreshed[0]} is refreshed earlier in this run"
        verdicts[name] = action
        steps.append(Step(name, action, reason, after, forced=forced_by is not None,
                          seen=own.refreshed_at, propagated=propagated))
    return Plan(behavior, tuple(targets), tuple(steps))
