"""Loading definitions from SQL files: walk paths, parse each file (cached), apply the events."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import sys
from collections.abc import Iterable, Sequence
from importlib.metadata import version
from pathlib import Path

import platformdirs

from mvgraph.definitions import Definition
from mvgraph.dialect import AlterSchedule, Define, Drop, Rename, ScriptResult, parse_script
from mvgraph.errors import UsageError
from mvgraph.names import RelationName
from mvgraph.version import __version__

_SQLGLOT_VERSION = version("sqlglot")


@dataclasses.dataclass(frozen=True, slots=True)
class LoadResult:
    """The definitions found, how many statements were ignored, and the files read."""

    definitions: list[Definition]
    ignored: int
    files: list[str]


def cache_dir() -> Path:
    """Where parse results are cached (``MVGRAPH_CACHE_DIR`` overrides the user cache dir)."""
    override = os.environ.get("MVGRAPH_CACHE_DIR")
    return Path(override) if override else platformdirs.user_cache_path("mvgraph") / "parse"


def expand_paths(paths: Iterable[str | Path]) -> list[str]:
    """Files to read, in order: directories give their ``*.sql`` files sorted; ``-`` is stdin."""
    out: list[str] = []
    for raw in paths:
        if str(raw) == "-":
            out.append("-")
            continue
        path = Path(raw)
        if path.is_dir():
            out += [str(p) for p in sorted(path.rglob("*.sql"))]
        elif path.is_file():
            out.append(str(path))
        else:
            raise UsageError(f"{path}: no such file or directory; pass SQL files, folders or -")
    return out


def parse_file_text(text: str, path: str, search_path: Sequence[str],
                    use_cache: bool = True) -> ScriptResult:
    """Parse one file's text, reusing a cached result for identical text and search path."""
    if not use_cache:
        return parse_script(text, path=path, search_path=search_path)
    key = hashlib.sha256("\x00".join(
        [__version__, _SQLGLOT_VERSION, path, ",".join(search_path), text]).encode()).hexdigest()
    target = cache_dir() / key[:2] / f"{key}.pickle"
    try:
        with target.open("rb") as fh:
            cached = pickle.load(fh)
        if isinstance(cached, ScriptResult):
            return cached
    except (OSError, pickle.PickleError, EOFError, AttributeError, ImportError):
        pass
    result = parse_script(text, path=path, search_path=search_path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        with tmp.open("wb") as fh:
            pickle.dump(result, fh, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(target)
    except OSError:
        pass  # a read-only cache dir only costs speed
    return result


def load_sql(paths: Iterable[str | Path], search_path: Sequence[str] = ("public",),
             use_cache: bool = True) -> LoadResult:
    """Read SQL files in order and return the definitions in force at the end."""
    files = expand_paths(paths)
    if not files:
        raise UsageError("no SQL files found; pass files, folders holding *.sql, or -")
    defs: dict[RelationName, Definition] = {}
    bare: dict[RelationName, tuple[frozenset[str], tuple[str, ...]]] = {}
    ignored = 0
    for path in files:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        result = parse_file_text(text, "<stdin>" if path == "-" else path, search_path,
                                 use_cache=use_cache and path != "-")
        ignored += result.ignored
        for event in result.events:
            _apply(event, defs, bare)
    known = set(defs)
    final = [_reresolve(d, *bare[d.name], known) if d.name in bare else d for d in defs.values()]
    return LoadResult(sorted(final, key=lambda d: d.name), ignored, files)


def _apply(event: object, defs: dict[RelationName, Definition],
           bare: dict[RelationName, tuple[frozenset[str], tuple[str, ...]]]) -> None:
    if isinstance(event, Define):
        d = event.definition
        defs[d.name] = d
        if event.unqualified:
            bare[d.name] = (event.unqualified, tuple(event.search_path))
        else:
            bare.pop(d.name, None)
    elif isinstance(event, Rename):
        if event.old in defs:
            d = defs.pop(event.old)
            defs[event.new] = dataclasses.replace(d, name=event.new)
            if event.old in bare:
                bare[event.new] = bare.pop(event.old)
        for key, d in list(defs.items()):  # PostgreSQL follows renames by OID
            if event.old in d.reads:
                defs[key] = dataclasses.replace(d, reads=(d.reads - {event.old}) | {event.new})
    elif isinstance(event, Drop):
        defs.pop(event.name, None)
        bare.pop(event.name, None)
    elif isinstance(event, AlterSchedule) and event.name in defs:
        defs[event.name] = dataclasses.replace(defs[event.name], schedule=event.schedule)


def _reresolve(d: Definition, unqualified: frozenset[str], path: tuple[str, ...],
               known: set[RelationName]) -> Definition:
    """Resolve bare names again, now that every file's definitions are known."""
    reads = set(d.reads)
    for name in unqualified:
        first = next((RelationName(s, name) for s in path if RelationName(s, name) in reads), None)
        target = next((RelationName(s, name) for s in path if RelationName(s, name) in known), None)
        if first is not None and target is not None and first != target:
            reads.discard(first)
            reads.add(target)
    return dataclasses.replace(d, reads=frozenset(reads)) if reads != d.reads else d
