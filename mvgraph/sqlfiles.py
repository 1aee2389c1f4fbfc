"""Loading definitions from SQL files: walk paths, parse each file (cached), apply the events."""

from __future__ import annotations

import dataclasses
import hashlib
import marshal
import os
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import suppress
from importlib.metadata import version
from pathlib import Path
from typing import Any

import platformdirs

from mvgraph.definitions import Definition, Kind, Schedule
from mvgraph.dialect import (
    AlterSchedule,
    Define,
    Drop,
    Event,
    Rename,
    ScriptResult,
    parse_script,
)
from mvgraph.errors import UsageError
from mvgraph.names import RelationName
from mvgraph.version import __version__

_SQLGLOT_VERSION = version("sqlglot")
_CACHE_FORMAT = 1
CACHE_MAX_AGE_DAYS = 30  # parse-cache entries written longer ago are deleted
_PARALLEL_BYTES = 400_000  # below this, starting worker processes costs more than it saves
_KINDS = {k.value: k for k in Kind}


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


def _cache_path(text: str, path: str, search_path: Sequence[str]) -> Path:
    key = hashlib.sha256("\x00".join(
        [__version__, _SQLGLOT_VERSION, path, ",".join(search_path), text]).encode()).hexdigest()
    return cache_dir() / key[:2] / f"{key}.marshal"


def _cached(target: Path) -> ScriptResult | None:
    try:
        return _decode(marshal.loads(target.read_bytes()))
    except (OSError, ValueError, EOFError, TypeError, KeyError):
        return None


def _store(target: Path, result: ScriptResult) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(marshal.dumps(_encode(result)))
        tmp.replace(target)
    except OSError:
        pass  # a read-only cache dir only costs speed


def _prune(max_age_days: float = CACHE_MAX_AGE_DAYS) -> None:
    """Delete cache entries written more than ``max_age_days`` ago (run after new entries were
    written, so a cache whose files keep changing does not grow without bound)."""
    cutoff = time.time() - max_age_days * 86400
    try:
        for entry in cache_dir().glob("*/*.marshal"):
            with suppress(OSError):
                if entry.stat().st_mtime < cutoff:
                    entry.unlink()
    except OSError:
        pass


def _parse_job(job: tuple[str, str, tuple[str, ...]]) -> ScriptResult:
    text, path, search_path = job
    return parse_script(text, path=path, search_path=search_path)


def parse_texts(items: Sequence[tuple[str, str]], search_path: Sequence[str],
                use_cache: bool = True) -> list[ScriptResult]:
    """Parse (text, path) pairs: cached results are reused; the rest are parsed, on several
    processes when there is enough work to pay for them."""
    targets = [_cache_path(t, p, search_path) if use_cache else None for t, p in items]
    results: list[ScriptResult | None] = [
        _cached(target) if target is not None else None for target in targets]
    missing = [i for i, r in enumerate(results) if r is None]
    jobs = [(items[i][0], items[i][1], tuple(search_path)) for i in missing]
    workers = min(len(jobs), os.cpu_count() or 1)
    if workers > 1 and sum(len(j[0]) for j in jobs) > _PARALLEL_BYTES:
        with ProcessPoolExecutor(workers) as pool:
            parsed = list(pool.map(_parse_job, jobs, chunksize=1))
    else:
        parsed = [_parse_job(j) for j in jobs]
    stored = False
    for i, result in zip(missing, parsed, strict=True):
        results[i] = result
        target = targets[i]
        if target is not None:
            _store(target, result)
            stored = True
    if stored:
        _prune()
    return [r for r in results if r is not None]


# The cache holds plain tuples (marshal is several times faster to load than pickled objects).
def _encode(result: ScriptResult) -> tuple[Any, ...]:
    events: list[tuple[Any, ...]] = []
    for e in result.events:
        if isinstance(e, Define):
            d = e.definition
            events.append(("D", tuple(d.name), d.kind.value, tuple(tuple(r) for r in d.reads),
                           d.sql, d.owner, d.populated, d.concurrent_index,
                           d.volatile_functions, _schedule_tuple(d.schedule), d.source,
                           d.columns, tuple(e.unqualified), tuple(e.search_path)))
        elif isinstance(e, Rename):
            events.append(("R", tuple(e.old), tuple(e.new)))
        elif isinstance(e, Drop):
            events.append(("X", tuple(e.name)))
        else:
            events.append(("S", tuple(e.name), _schedule_tuple(e.schedule)))
    return (_CACHE_FORMAT, tuple(events), result.ignored)


def _decode(data: tuple[Any, ...]) -> ScriptResult:
    fmt, raw, ignored = data
    if fmt != _CACHE_FORMAT:
        raise ValueError("old cache format")
    events: list[Event] = []
    for e in raw:
        tag = e[0]
        if tag == "D":
            (_, name, kind, reads, sql_text, owner, populated, concurrent, volatile, sched,
             source, columns, unqualified, path) = e
            events.append(Define(Definition(
                RelationName(*name), _KINDS[kind], frozenset(RelationName(*r) for r in reads),
                sql_text, owner, populated, concurrent, volatile,
                None if sched is None else Schedule(*sched), source, columns),
                frozenset(unqualified), path))
        elif tag == "R":
            events.append(Rename(RelationName(*e[1]), RelationName(*e[2])))
        elif tag == "X":
            events.append(Drop(RelationName(*e[1])))
        else:
            events.append(AlterSchedule(RelationName(*e[1]), Schedule(*e[2])))
    return ScriptResult(tuple(events), ignored)


def _schedule_tuple(s: Schedule | None) -> tuple[Any, ...] | None:
    return None if s is None else (s.behavior, s.start, s.every, s.query_rewrite)


def load_sql(paths: Iterable[str | Path], search_path: Sequence[str] = ("public",),
             use_cache: bool = True) -> LoadResult:
    """Read SQL files in order and return the definitions in force at the end."""
    files = expand_paths(paths)
    if not files:
        raise UsageError("no SQL files found; pass files, folders holding *.sql, or -")
    defs: dict[RelationName, Definition] = {}
    bare: dict[RelationName, tuple[frozenset[str], tuple[str, ...]]] = {}
    items = [(sys.stdin.read(), "<stdin>") if path == "-" else
             (Path(path).read_text(encoding="utf-8"), path) for path in files]
    results = parse_texts(items, search_path, use_cache=use_cache and "-" not in files)
    for result in results:
        for event in result.events:
            _apply(event, defs, bare)
    ignored = sum(r.ignored for r in results)
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
        old = defs[event.name].schedule
        new = event.schedule
        if old is not None:  # ALTER ... REFRESH default keeps START WITH and EVERY
            new = Schedule(*(n if n is not None else o for n, o in zip(
                dataclasses.astuple(new), dataclasses.astuple(old), strict=True)))
        defs[event.name] = dataclasses.replace(defs[event.name], schedule=new)


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
