"""The configuration file (``mvgraph.toml``, or ``[tool.mvgraph]`` in ``pyproject.toml``) and
the ``MVGRAPH_*`` environment variables: values for the global options and for the options of
the commands that run as services (:data:`SECTIONS`).

Nothing here names an option. The settings are the commands' own click options, read from the
typer app when the CLI starts: a setting's key is the option's long name with ``_`` for ``-``
(``--misfire-grace``: ``misfire_grace``), in a table named after its command (``[daemon]``),
the global options at the top level; its environment variable is the option's own ``envvar``,
else ``MVGRAPH_<COMMAND>_<KEY>`` (global options: ``MVGRAPH_<KEY>``); its allowed values are
the option's type and range. The file's values become click's ``default_map`` and the variables
the options' ``envvar``, so click itself applies the order: command line, environment, file,
the option's default. An option added to those commands later is a setting, with no code here.

:func:`load` is the ``--config`` option's callback (eager: it runs before the other options are
read), :func:`settle` runs in the main callback, :func:`effective` answers ``mvgraph config
show``. Errors are one :class:`~mvgraph.errors.UsageError` line naming the file (or variable),
the key and what is allowed.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import typer

from mvgraph.errors import UsageError

#: The commands whose options the file and the environment set: the long-running processes.
#: A command named here that the app does not have (yet) is skipped.
SECTIONS = ("daemon", "worker", "web")
FILE_NAME = "mvgraph.toml"
PYPROJECT = "pyproject.toml"
#: The variable naming the file (the ``--config`` option's ``envvar``).
CONFIG_ENV = "MVGRAPH_CONFIG"
PREFIX = "MVGRAPH"
_META = "mvgraph.config"

#: click's parameter sources (by name: typer may bring its own copy of click), strongest first.
_RANK = {"COMMANDLINE": 0, "PROMPT": 0, "ENVIRONMENT": 1, "DEFAULT_MAP": 2, "DEFAULT": 3}


def key(param: Any) -> str | None:
    """A click option's setting key: its first long name, ``-`` as ``_`` (None: no long name)."""
    for opt in param.opts:
        if opt.startswith("--"):
            return str(opt[2:].replace("-", "_"))
    return None


def options(command: Any) -> dict[str, Any]:
    """A click command's settings by key: its options, except the eager ones (``--help``,
    ``--version``, ``--config``), hidden ones and those without a long name."""
    found: dict[str, Any] = {}
    for param in command.params:
        name = key(param) if param.param_type_name == "option" else None
        if name and not param.is_eager and not getattr(param, "hidden", False) \
                and param.expose_value:
            found[name] = param
    return found


@dataclass(frozen=True)
class Scope:
    """One table of settings: the global options (``section`` None) or a command's."""

    section: str | None
    options: dict[str, Any]


def scopes(root: Any) -> list[Scope]:
    """The global scope, then one per command of :data:`SECTIONS` that the app has."""
    commands = getattr(root, "commands", {})
    return [Scope(None, options(root))] + [Scope(name, options(commands[name]))
                                          for name in SECTIONS if name in commands]


def env_names(scope: Scope, name: str, param: Any, global_keys: set[str] | dict[str, Any]
              ) -> list[str]:
    """The environment variables of a setting: the option's own ``envvar``, else
    ``MVGRAPH_[SECTION_]KEY``; none for a command's option that is also a global option
    (``[daemon] dsn``): the global variable (``MVGRAPH_DSN``) stands for it."""
    if param.envvar:
        return [param.envvar] if isinstance(param.envvar, str) else list(param.envvar)
    if scope.section is not None and name in global_keys:
        return []
    words = [PREFIX, *([scope.section] if scope.section else []), name]
    return ["_".join(words).upper().replace("-", "_")]


def attach(root: Any) -> list[Scope]:
    """Give every setting's option its environment variable (click reads it, ``--help`` shows
    it); returns the scopes. Idempotent."""
    found = scopes(root)
    for scope in found:
        for name, param in scope.options.items():
            names = env_names(scope, name, param, found[0].options)
            if names and not param.envvar:
                param.envvar = names[0]
                param.show_envvar = True
    return found


@dataclass(frozen=True)
class ConfigFile:
    """The configuration file read: where, how it was chosen, and its settings' table."""

    path: Path
    how: str  # "--config", "MVGRAPH_CONFIG" or "found in the current directory"
    tool: bool  # the [tool.mvgraph] table of a pyproject.toml
    values: dict[str, Any]

    def table(self, section: str | None) -> str:
        """How the file names a table: ``[daemon]``, ``[tool.mvgraph.daemon]``, ``the top
        level``, ``[tool.mvgraph]``."""
        words = [*(["tool", "mvgraph"] if self.tool else []), *([section] if section else [])]
        return f"[{'.'.join(words)}]" if words else "the top level"


@dataclass(frozen=True)
class Loaded:
    """What :func:`load` found, kept in the click context's ``meta`` for ``config show``."""

    file: ConfigFile | None
    scopes: list[Scope]


def _read(path: Path, how: str, explicit: bool) -> ConfigFile | None:
    """The settings of ``path`` (None: a pyproject.toml found, not given, without
    ``[tool.mvgraph]``)."""
    tool = path.name == PYPROJECT
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise UsageError(f"{path.absolute()} ({how}): cannot read the configuration file: "
                         f"{reason}") from None
    if tool and not explicit and "mvgraph" not in text:
        return None  # another tool's pyproject.toml: not ours to judge
    try:
        data: dict[str, Any] | None = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path.absolute()}: not valid TOML: {exc}") from None
    if tool:
        tools = data.get("tool") if data else None
        data = tools.get("mvgraph") if isinstance(tools, dict) else None
        if data is None:
            if explicit:
                raise UsageError(f"{path.absolute()} ({how}): no [tool.mvgraph] table in it")
            return None
        if not isinstance(data, dict):
            raise UsageError(f"{path.absolute()}: tool.mvgraph must be a table "
                             "([tool.mvgraph])")
    return ConfigFile(path.absolute(), how, tool, data or {})


def locate(given: Path | None, how: str) -> ConfigFile | None:
    """The file named by ``--config`` / ``MVGRAPH_CONFIG`` (``how``), else ``./mvgraph.toml``,
    else ``./pyproject.toml`` when it has a ``[tool.mvgraph]`` table, else None."""
    if given is not None:
        if not given.exists() or given.is_dir():  # /dev/null: no settings
            raise UsageError(f"{given.absolute()} ({how}): no such configuration file")
        return _read(given, how, explicit=True)
    for name in (FILE_NAME, PYPROJECT):
        path = Path(name)
        if path.is_file():
            found = _read(path, "found in the current directory", explicit=False)
            if found is not None:
                return found
    return None


def toml_text(value: Any) -> str:
    """A value as TOML writes it (``"text"``, ``true``, ``4``, ``[1, 2]``).

    >>> toml_text(["a", 2, 0.5, False])
    '["a", 2, 0.5, false]'
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_text(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value), ensure_ascii=False)


def value_type(param_type: Any) -> type | tuple[type, ...]:
    """The TOML value type an option takes (by click type class: typer may vendor click)."""
    names = {c.__name__ for c in type(param_type).__mro__}
    if "BoolParamType" in names:
        return bool
    if "IntParamType" in names:
        return int
    if "FloatParamType" in names:
        return (int, float)
    return str


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def allowed(param: Any) -> str:
    """What an option takes, in words: ``an integer >= 0``, ``one of: a, b``.

    >>> import typer
    >>> from typer.main import get_command
    >>> app = typer.Typer()
    >>> @app.command()
    ... def cmd(port: int = typer.Option(8, min=0, max=65535), json: bool = False) -> None: ...
    >>> [allowed(p) for p in get_command(app).params[:2]]
    ['an integer from 0 to 65535', 'true or false']
    """
    t = param.type
    kind = value_type(t)
    choices = getattr(t, "choices", None)
    if kind is bool or getattr(param, "is_flag", False):
        text = "true or false"
    elif choices:
        text = "one of: " + ", ".join(str(getattr(c, "value", c)) for c in choices)
    elif kind is str:
        text = "a string"
    else:
        text = "an integer" if kind is int else "a number"
        low, high = getattr(t, "min", None), getattr(t, "max", None)
        low_open, high_open = getattr(t, "min_open", False), getattr(t, "max_open", False)
        bounds = [f"{'>' if low_open else '>='} {_number(low)}"] if low is not None else []
        bounds += [f"{'<' if high_open else '<='} {_number(high)}"] if high is not None else []
        if len(bounds) == 2 and not low_open and not high_open:
            text += f" from {_number(low)} to {_number(high)}"
        elif bounds:
            text += " " + " and ".join(bounds)
    if param.multiple or param.nargs == -1:
        return f"a list, each {text}"
    if param.nargs > 1:
        return f"a list of {param.nargs}, each {text}"
    return text


def _valid(ctx: Any, param: Any, value: Any) -> bool:
    """Whether click takes ``value`` for ``param`` (its type, range, choices; for a value from
    the file, also the TOML type: ``workers = "4"`` is not an integer)."""
    try:
        param.type_cast_value(ctx, value)
    except Exception:  # click's BadParameter (of whichever copy of click), a conversion error
        return False
    return True


def _toml_typed(param: Any, value: Any) -> bool:
    """Whether a value from the file has the TOML type of the option (a list of them for an
    option taking several values); ``true`` is no number."""
    if param.multiple or param.nargs != 1:
        if not isinstance(value, list):
            return False
        items = value
    else:
        items = [value]
    kind = value_type(param.type)
    return all(isinstance(v, kind) and (kind is bool or not isinstance(v, bool)) for v in items)


def _close(name: str, choices: list[str], shown: Callable[[str], str] = str) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f" (did you mean {shown(close[0])}?)" if close else ""


def _table_of_defaults(ctx: Any, file: ConfigFile, found: list[Scope]) -> dict[str, Any]:
    """The file's settings checked, as click's ``default_map`` (keyed by parameter names)."""
    top = found[0]
    sections = {s.section: s for s in found[1:] if s.section}
    listed = (f"sections: {', '.join(file.table(s) for s in sections)}; "
              f"top-level keys: {', '.join(top.options)}")
    defaults: dict[str, Any] = {}
    for name, value in file.values.items():
        if name in sections:
            if not isinstance(value, dict):
                raise UsageError(f"{file.path}: {name} must be a table ({file.table(name)}); "
                                 f"its keys: {', '.join(sections[name].options)}")
            defaults[name] = _checked(ctx, file, sections[name], value)
        elif name in top.options:
            defaults.update(_checked(ctx, file, top, {name: value}))
        elif isinstance(value, dict):
            raise UsageError(f"{file.path}: unknown section {file.table(name)}"
                             f"{_close(name, list(sections), file.table)}; {listed}")
        else:
            where = "in [tool.mvgraph]" if file.tool else "at the top level"
            raise UsageError(f"{file.path}: unknown key {name}{_close(name, list(top.options))} "
                             f"{where}; {listed}")
    return defaults


def _checked(ctx: Any, file: ConfigFile, scope: Scope, values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in values.items():
        param = scope.options.get(name)
        if param is None:
            raise UsageError(f"{file.path}: unknown key {name} in {file.table(scope.section)}"
                             f"{_close(name, list(scope.options))}; its keys: "
                             f"{', '.join(scope.options)}")
        if not _toml_typed(param, value) or not _valid(ctx, param, value):
            table = "" if scope.section is None and not file.tool else \
                f"{file.table(scope.section)} "
            shown = "***" if secret(name) else toml_text(value)
            raise UsageError(f"{file.path}: {table}{name} = {shown}: expected {allowed(param)}")
        out[param.name] = value
    return out


def _check_environment(ctx: Any, found: list[Scope]) -> None:
    """Each setting's environment variable, when set, holds a value its option takes (read as
    click reads it)."""
    for scope in found:
        for name, param in scope.options.items():
            raw = param.value_from_envvar(ctx)
            if raw is not None and not _valid(ctx, param, raw):
                names = [n for n in env_names(scope, name, param, found[0].options)
                         if os.environ.get(n)]
                where = names[0] if names else name
                shown = "***" if secret(name) else os.environ.get(where, raw)
                raise UsageError(f"environment variable {where}={shown}: expected "
                                 f"{allowed(param)} (for {_option(scope, param)})")


def _option(scope: Scope, param: Any) -> str:
    long = next(o for o in param.opts if o.startswith("--"))
    return f"mvgraph {scope.section} {long}" if scope.section else f"mvgraph {long}"


def _items(table: dict[str, Any]) -> list[tuple[str, Any]]:
    """Every (key, value) of a table and of the tables in it."""
    return [kv for k, v in table.items()
            for kv in (_items(v) if isinstance(v, dict) else [(k, v)])]


def _warn_if_exposed(file: ConfigFile) -> None:
    """A password or token in a file every user may read: say so (libpq ignores such a
    ~/.pgpass)."""
    from mvgraph.redaction import dsn_passwords

    try:
        exposed = file.path.stat().st_mode & 0o004
    except OSError:
        return
    if exposed and any((secret(k) and v) or (isinstance(v, str) and dsn_passwords(v))
                       for k, v in _items(file.values)):
        logging.getLogger("mvgraph").warning(
            "%s holds a password or token and every user may read it: chmod o-r it (e.g. "
            "owner root, group mvgraph, mode 0640), or keep passwords in ~/.pgpass or "
            "PGPASSFILE", file.path)


def load(ctx: typer.Context, param: typer.CallbackParam, value: Path | None) -> Path | None:
    """The ``--config`` option's callback: find and check the file and the environment
    variables, make the file click's ``default_map`` and the variables the options'
    ``envvar``. Eager, so it runs before any other option of the command line is read."""
    if ctx.resilient_parsing:
        return value
    found = attach(ctx.command)
    source = ctx.get_parameter_source(param.name or "")
    how = "--config" if source is not None and source.name == "COMMANDLINE" else CONFIG_ENV
    file = locate(value, how)
    _check_environment(ctx, found)
    ctx.default_map = _table_of_defaults(ctx, file, found) if file else {}
    ctx.meta[_META] = Loaded(file, found)
    if file is not None:
        _warn_if_exposed(file)
    return value


def rank(ctx: Any, name: str) -> int:
    """How strong the source of parameter ``name``'s value is: 0 the command line, 1 the
    environment, 2 the file, 3 the default."""
    source = ctx.get_parameter_source(name)
    return _RANK.get(source.name, 3) if source is not None else 3


def settle(ctx: Any) -> None:
    """A command's table may set a global option for that command alone (``[web] dsn``); it
    yields to the global option given on the command line or in the environment, as the file
    as a whole does. Runs in the main callback, before the command's options are read."""
    loaded: Loaded | None = ctx.meta.get(_META)
    if loaded is None or not ctx.default_map:
        return
    top = loaded.scopes[0].options
    strong = {name for name, param in top.items() if rank(ctx, param.name) < 2}
    for scope in loaded.scopes[1:]:
        table = ctx.default_map.get(scope.section)
        for name in strong & scope.options.keys():
            if isinstance(table, dict):
                table.pop(scope.options[name].name, None)


@dataclass(frozen=True)
class Setting:
    """One setting's effective value and where it came from."""

    key: str  # "dsn", "daemon.workers"
    value: Any
    kind: str  # "command line", "env", "file", "default"
    source: str  # "command line", the variable's name, the file's path, "default"
    env: str | None  # the variable that sets it

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, without secrets: a secret's value (:func:`secret`) as ``***``,
        passwords in any text masked, paths and enums as strings."""
        value = _plain(self.value)
        if value is not None and secret(self.key.rsplit(".", 1)[-1]):
            value = "***"
        return {"key": self.key, "value": value, "kind": self.kind, "source": self.source,
                "env": self.env}


#: Words of a setting's key that make its whole value a secret (``[web] token``, a webhook's
#: URL carrying its token); passwords inside DSNs are masked wherever they appear.
SECRET_WORDS = ("token", "secret", "password", "webhook")


def secret(name: str) -> bool:
    """Whether a setting's value is a secret as a whole, by its key.

    >>> secret("token"), secret("webhook_url"), secret("dsn")
    (True, True, False)
    """
    return any(word in name.lower() for word in SECRET_WORDS)


def _plain(value: Any) -> Any:
    from mvgraph.redaction import scrub

    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        value = str(value)
    return scrub(value) if isinstance(value, str) else value


def _setting(ctx: Any, loaded: Loaded, scope: Scope, name: str, param: Any) -> Setting:
    label = f"{scope.section}.{name}" if scope.section else name
    names = env_names(scope, name, param, loaded.scopes[0].options)
    source = ctx.get_parameter_source(param.name or "")
    kind = {"COMMANDLINE": "command line", "PROMPT": "command line", "ENVIRONMENT": "env",
            "DEFAULT_MAP": "file"}.get(source.name if source else "", "default")
    where = {"command line": "command line", "default": "default",
             "file": str(loaded.file.path) if loaded.file else "file",
             "env": next((n for n in names if os.environ.get(n)), "env")}[kind]
    return Setting(label, ctx.params.get(param.name), kind, where, names[0] if names else None)


def effective(ctx: Any) -> tuple[ConfigFile | None, list[Setting]]:
    """Every setting's value as its command would see it with no option of its own given
    (each command's options are read by click, as when it runs), and where it came from.

    A command's option that is also a global one (``daemon.dsn``), not set for the command,
    shows the global value and its source."""
    root = ctx.find_root()
    loaded: Loaded = root.meta[_META]
    top, *sections = loaded.scopes
    found = {n: _setting(root, loaded, top, n, p) for n, p in top.options.items()}
    out = list(found.values())
    commands = getattr(root.command, "commands", {})
    for scope in sections:
        assert scope.section is not None
        sub = commands[scope.section].make_context(scope.section, [], parent=root,
                                                   resilient_parsing=True)
        for name, param in scope.options.items():
            setting = _setting(sub, loaded, scope, name, param)
            if setting.kind == "default" and name in found:
                inherited = found[name]
                setting = Setting(setting.key, inherited.value, inherited.kind,
                                  inherited.source, inherited.env)
            out.append(setting)
    return loaded.file, out
