"""What every command's set-up needs (dbt-core's ``cli/requires.py``): the global options'
state, the consoles, the DSN and search_path each command resolves, the refresh behaviour.

``mvgraph.cli`` sets :data:`state` in its callback; the commands read it through these helpers
and never import ``mvgraph.cli``. Imports only the standard library and mvgraph's light
modules; rich is imported when a console is first used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from rich.console import Console

    from mvgraph.errors import SqlParseError


@dataclass
class State:
    """Global options, set by the callback and read by each command."""

    dsn: str | None = None
    #: --dsn or --embedded was given on the command line (not by MVGRAPH_DSN or the file)
    dsn_given: bool = False
    debug: bool = False
    search_path: list[str] = field(default_factory=lambda: ["public"])


state = State()


class _LazyConsole:
    """Stands in for a rich Console until first used, then puts the real one in its place."""

    def __init__(self, name: str, stderr: bool) -> None:
        self._name, self._stderr = name, stderr

    def __getattr__(self, attr: str) -> Any:
        from rich.console import Console

        console = Console(stderr=self._stderr, highlight=False, soft_wrap=True)
        globals()[self._name] = console
        return getattr(console, attr)


#: The consoles for stdout and stderr. Commands read them as ``common.out`` / ``common.err``
#: (not imported by name), so that the first use's real Console, or a test's, is the one used.
out = cast("Console", _LazyConsole("out", stderr=False))
err = cast("Console", _LazyConsole("err", stderr=True))


def real_console(name: str) -> Console:
    """The Console itself, not its stand-in (rich's Live keeps the object it is given)."""
    _ = globals()[name].width  # the first use puts the real Console in place
    return cast("Console", globals()[name])


def search_path(value: str | None) -> list[str]:
    """The command's --search-path, else the global one."""
    if value:
        return [p.strip() for p in value.split(",") if p.strip()]
    return state.search_path


def dsn(local: str | None) -> str | None:
    """The command's --dsn, else the global --dsn / --embedded (None: the environment's)."""
    return local or state.dsn


def given_dsn(local: str | None) -> str | None:
    """The DSN given on the command line (the command's --dsn, else the global --dsn /
    --embedded), not one from the environment or the configuration file: what turns on the
    server as the parser of last resort in ``graph`` and ``deps``."""
    return local or (state.dsn if state.dsn_given else None)


def target(local: str | None) -> str:
    """The DSN to connect to: :func:`dsn` resolved (``embedded`` started, $MVGRAPH_DSN read)."""
    from mvgraph.db.connect import resolve_dsn

    return resolve_dsn(dsn(local))


def behavior(cascade: str | None, restrict: bool) -> str:
    """--cascade / --restrict as a refresh behaviour's value (``default``: neither given)."""
    from mvgraph.errors import UsageError

    if cascade and restrict:
        raise UsageError("--cascade and --restrict exclude each other; pick one")
    if restrict:
        return "restrict"
    if cascade:
        from mvgraph.refresh.behavior import RefreshBehavior

        word = cascade if cascade.lower().startswith("cascade") else f"cascade {cascade}"
        return RefreshBehavior.parse(word).value
    return "default"


def failed_files(errors: list[SqlParseError]) -> int:
    """How many files the SQL load failures are in."""
    return len({e.path for e in errors})
