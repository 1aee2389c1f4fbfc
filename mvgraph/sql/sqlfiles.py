"""Loading definitions from SQL files: walk paths, parse each file (cached), apply the events."""

from __future__ import annotations

import codecs
import dataclasses
import hashlib
import marshal
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any, TypeAlias

from mvgraph.errors import (
    SqlCycleError,
    SqlEncodingError,
    SqlLoadErrors,
    SqlParseError,
    UsageError,
)
from mvgraph.graph import MVGraph, find_cycles
from mvgraph.model.definitions import Definition, Kind, Schedule
from mvgraph.model.names import RelationName
from mvgraph.sql.events import AlterSchedule, Define, Drop, Event, Rename, ScriptResult
from mvgraph.version import __version__

# mvgraph.sql.dialect (sqlglot) is imported only when a file has to be parsed: a warm cache needs
# neither.
_CACHE_FORMAT = 6  # 2: parse errors cached; 3: their place among the events; 4: sequences,
# regclass literals, pg_* names; 5: one file per load (every file's result, keyed by its path
# and the digest of its text) instead of one per SQL file; 6: errors' line and column
CACHE_MAX_AGE_DAYS = 30  # parse-cache entries not written or used for longer are deleted
_TOUCH_AFTER = 86400  # a cache entry used this long after it was written gets a new mtime
_PARALLEL_BYTES = 400_000  # below this, starting worker processes costs more than it saves
_KINDS = {k.value: k for k in Kind}

Resolver: TypeAlias = Callable[
    [Sequence[tuple[str, str]], Sequence[SqlParseError], Sequence[str]],
    list[Define | SqlParseError],
]
"""Resolves statements that did not parse: given the scripts as (text, path) in load order, the
failures and the initial search path, returns for each failure a Define, or the failure (with
more said, or unchanged). ``mvgraph.sql.serverparse`` has the one that asks PostgreSQL."""


@dataclasses.dataclass(frozen=True, slots=True)
class LoadResult:
    """The definitions found, how many statements were ignored, the files read, the failures
    (statements that did not parse, files that are not text, cycles: all left out of
    ``definitions``) and warnings (binary files skipped in folders)."""

    definitions: list[Definition]
    ignored: int
    files: list[str]
    errors: list[SqlParseError] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)


def cache_dir() -> Path:
    """Where parse results are cached (``MVGRAPH_CACHE_DIR`` overrides the user cache dir)."""
    override = os.environ.get("MVGRAPH_CACHE_DIR")
    if override:
        return Path(override)
    import platformdirs

    return platformdirs.user_cache_path("mvgraph") / "parse"


def expand_paths(paths: Iterable[str | Path]) -> list[str]:
    """Files to read, in order: directories give their ``*.sql`` files sorted; ``-`` is stdin."""
    return [path for path, _ in _expand(paths)]


def _expand(paths: Iterable[str | Path]) -> list[tuple[str, bool]]:
    """Like expand_paths, each with True when it was found by walking a folder."""
    out: list[tuple[str, bool]] = []
    for raw in paths:
        if str(raw) == "-":
            out.append(("-", False))
            continue
        path = Path(raw)
        if path.is_dir():
            out += [(p, True) for p in _sql_files(str(path))]
        elif path.is_file():
            out.append((str(path), False))
        else:
            raise UsageError(f"{path}: no such file or directory; pass SQL files, folders or -")
    return out


def _sql_files(root: str) -> list[str]:
    """What ``sorted(Path(root).rglob("*.sql"))`` gives, as strings, made faster: every entry
    named ``*.sql`` in ``root`` and below (symbolic links to folders are not followed, folders
    that cannot be read are skipped), sorted as Paths sort (part by part)."""
    found: list[str] = []
    folders = [root]
    while folders:
        folder = folders.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except PermissionError:
            continue
        for entry in entries:
            path = entry.name if folder == "." else entry.path  # as Path(".") / name prints
            if entry.name.endswith(".sql"):
                found.append(path)
            try:
                descend = entry.is_dir() and not entry.is_symlink()
            except OSError:
                descend = False
            if descend:
                folders.append(path)
    return sorted(found, key=lambda p: p.split(os.sep))


def check_encoding(encoding: str) -> None:
    """Raise UsageError unless Python knows the encoding."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise UsageError(f"unknown encoding {encoding!r}; use a Python codec name such as "
                         "utf-8, latin-1 or cp1252") from None


def decode_sql(data: bytes, path: str, encoding: str = "utf-8") -> str:
    """The text of a SQL file; one that starts with a UTF-8 byte order mark is UTF-8 (the mark
    is dropped), whatever ``encoding`` says.

    >>> decode_sql(b"\\xef\\xbb\\xbfselect 1", "a.sql")
    'select 1'
    >>> decode_sql(b"select 1;\\n-- caf\\xe9", "a.sql")
    Traceback (most recent call last):
    mvgraph.errors.SqlEncodingError: a.sql:2: byte 0xe9 at offset 16 is not utf-8; pass --encoding latin-1 (or the file's real encoding)

    Raises:
        SqlEncodingError: the bytes are not text in ``encoding`` (``binary`` when they hold a
            NUL byte).
    """  # noqa: E501
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    encoding = "utf-8" if skip else encoding
    try:
        text = data[skip:].decode(encoding)
    except UnicodeDecodeError as exc:
        raise _undecodable(data, path, encoding, skip + exc.start) from None
    if "\x00" in text:
        raise _binary(data, path, text.index("\x00"))
    return text.removeprefix("\ufeff")


def _undecodable(data: bytes, path: str, encoding: str, offset: int) -> SqlEncodingError:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return _encoding_error("starts with a UTF-16 byte order mark; pass --encoding utf-16",
                               data, path, 0)
    if b"\x00" in data:
        return _binary(data, path, data.index(b"\x00"))
    return _encoding_error(f"byte 0x{data[offset]:02x} at offset {offset} is not {encoding}; "
                           "pass --encoding latin-1 (or the file's real encoding)",
                           data, path, offset)


def _binary(data: bytes, path: str, offset: int) -> SqlEncodingError:
    error = _encoding_error(f"binary file (NUL byte at offset {offset}), not SQL text; "
                            "name SQL files only", data, path, offset)
    error.binary = True
    return error


def _encoding_error(message: str, data: bytes, path: str, offset: int) -> SqlEncodingError:
    error = SqlEncodingError(message, path, data.count(b"\n", 0, offset) + 1)
    error.offset = offset
    return error


def _read_text(path: str, encoding: str) -> str:
    if path == "-":
        buffer = getattr(sys.stdin, "buffer", None)
        return decode_sql(buffer.read(), "<stdin>", encoding) if buffer else sys.stdin.read()
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}; check the path") from None
    return decode_sql(data, path, encoding)


def read_files(listed: Sequence[tuple[str, bool]], encoding: str
               ) -> tuple[list[tuple[str, str]], list[SqlParseError], list[str]]:
    """(text, path) of each file that is text, the failures, and warnings for the binary files
    found in folders (skipped)."""
    items: list[tuple[str, str]] = []
    errors: list[SqlParseError] = []
    warnings: list[str] = []
    for path, walked in listed:
        try:
            items.append((_read_text(path, encoding), "<stdin>" if path == "-" else path))
        except SqlEncodingError as exc:
            if walked and exc.binary:
                warnings.append(f"skipped {path}: {exc.message}")
            else:
                errors.append(exc)
    return items, errors, warnings


def sqlglot_version() -> str:
    """sqlglot's version, for the cache key, read from its ``_version.py`` without importing it
    (``importlib.metadata`` alone costs more than a warm load); the metadata when that fails."""
    global _sqlglot_version
    if _sqlglot_version is None:
        from importlib.util import find_spec

        found = None
        with suppress(Exception):
            spec = find_spec("sqlglot")
            if spec is not None and spec.origin:
                source = Path(spec.origin).with_name("_version.py").read_text(encoding="utf-8")
                found = re.search(r"""^__version__\s*=\s*(?:version\s*=\s*)?['"]([^'"]+)""",
                                  source, re.MULTILINE)
        if found is not None:
            _sqlglot_version = found.group(1)
        else:  # pragma: no cover - a sqlglot laid out otherwise
            from importlib.metadata import version

            _sqlglot_version = version("sqlglot")
    return _sqlglot_version


_sqlglot_version: str | None = None


def _pack_path(paths: Sequence[str], search_path: Sequence[str]) -> Path:
    """The cache file of one load: the files named, in order, and the search path."""
    key = hashlib.sha256("\x00".join(
        [str(_CACHE_FORMAT), __version__, sqlglot_version(), ",".join(search_path), *paths]
    ).encode("utf-8", "surrogatepass")).hexdigest()  # file names need not be UTF-8
    return cache_dir() / key[:2] / f"{key}.marshal"


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def _read_pack(target: Path) -> dict[str, tuple[bytes, tuple[Any, ...]]]:
    """``{path: (digest of the text, encoded result)}``; empty when missing or unreadable."""
    try:
        with open(target, "rb") as f:
            data = marshal.load(f)
            age = time.time() - os.fstat(f.fileno()).st_mtime
    except (OSError, ValueError, EOFError, TypeError):
        return {}
    if not (isinstance(data, tuple) and len(data) == 2 and data[0] == _CACHE_FORMAT
            and isinstance(data[1], dict)):
        return {}
    if age > _TOUCH_AFTER:  # in use: keep it from being pruned
        with suppress(OSError):
            os.utime(target)
    return data[1]


def _write_pack(target: Path, entries: dict[str, tuple[bytes, tuple[Any, ...]]]) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(marshal.dumps((_CACHE_FORMAT, entries)))
        tmp.replace(target)
    except (OSError, ValueError):
        pass  # a read-only cache dir only costs speed


def _prune(max_age_days: float = CACHE_MAX_AGE_DAYS) -> None:
    """Delete cache entries written (or last used) more than ``max_age_days`` ago (run after an
    entry was written, so a cache whose files keep changing does not grow without bound)."""
    cutoff = time.time() - max_age_days * 86400
    try:
        for entry in cache_dir().glob("*/*.marshal"):
            with suppress(OSError):
                if entry.stat().st_mtime < cutoff:
                    entry.unlink()
    except OSError:
        pass


def _parse_job(job: tuple[str, str, tuple[str, ...]]) -> ScriptResult:
    from mvgraph.sql.dialect import parse_script

    text, path, search_path = job
    return parse_script(text, path=path, search_path=search_path, keep_going=True)


def _parse_chunk(jobs: list[tuple[str, str, tuple[str, ...]]]) -> list[ScriptResult]:
    """Parse several scripts. (``parse_script`` pauses the garbage collector for one script;
    pausing it for all of them was measured slower: one late collection of every parse tree
    costs more than a collection after each script, while its objects are still in cache.)"""
    return [_parse_job(job) for job in jobs]


def _parse_chunk_encoded(jobs: list[tuple[str, str, tuple[str, ...]]]) -> list[tuple[Any, ...]]:
    """:func:`_parse_chunk` in a worker process: the results as the cache's plain tuples, which
    cross the process boundary faster than objects (the parent needs them for the cache too)."""
    return [_encode(result) for result in _parse_chunk(jobs)]


def _chunks(jobs: list[Any], workers: int) -> list[list[Any]]:
    """``jobs`` split into about four chunks per worker of similar size in bytes, in order."""
    total = sum(len(j[0]) for j in jobs) or 1
    target = total / (workers * 4)
    out: list[list[Any]] = [[]]
    size = 0
    for job in jobs:
        if out[-1] and size >= target:
            out.append([])
            size = 0
        out[-1].append(job)
        size += len(job[0])
    return out


def parse_texts(items: Sequence[tuple[str, str]], search_path: Sequence[str],
                use_cache: bool = True) -> list[ScriptResult]:
    """Parse (text, path) pairs: cached results are reused; the rest are parsed, on several
    processes when there is enough work to pay for them.

    The cache holds one file per load (the paths in order and the search path), with each
    file's result under its path and the digest of its text: a warm load reads one cache file;
    a changed file is parsed again and the cache file rewritten once."""
    target = _pack_path([p for _, p in items], search_path) if use_cache else None
    pack = _read_pack(target) if target is not None else {}
    digests = [_digest(t) for t, _ in items] if target is not None else []
    results: list[ScriptResult | None] = [None] * len(items)
    for i, (_, path) in enumerate(items):
        entry = pack.get(path)
        if entry is not None and entry[0] == digests[i]:
            with suppress(ValueError, TypeError, KeyError, IndexError):
                results[i] = _decode(entry[1])
    missing = [i for i, r in enumerate(results) if r is None]
    jobs = [(items[i][0], items[i][1], tuple(search_path)) for i in missing]
    workers = min(len(jobs), os.cpu_count() or 1)
    encoded: list[tuple[Any, ...]] = []
    # Measured on 2 busy cores: 1,600 one-view files (320 kB) parse faster in this process
    # than on two workers; bytes of SQL are what pays for them.
    if workers > 1 and sum(len(j[0]) for j in jobs) > _PARALLEL_BYTES:
        from concurrent.futures import ProcessPoolExecutor  # imported only when used

        import mvgraph.sql.dialect  # noqa: F401  (once, here: forked workers inherit it)

        with ProcessPoolExecutor(workers) as pool:
            encoded = [r for chunk in pool.map(_parse_chunk_encoded, _chunks(jobs, workers))
                       for r in chunk]
        parsed = [_decode(e) for e in encoded]
    else:
        parsed = _parse_chunk(jobs)
    for i, result in zip(missing, parsed, strict=True):
        results[i] = result
    if target is not None and missing:
        known = dict(zip(missing, encoded, strict=True)) if encoded else {}
        _write_pack(target, {path: (digests[i], known[i] if i in known else _encode(r))
                             for i, ((_, path), r) in enumerate(zip(items, results, strict=True))
                             if r is not None})
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
    errors = tuple((e.message, e.path, e.line, e.statement, e.at) for e in result.errors)
    return (_CACHE_FORMAT, tuple(events), result.ignored, errors, result.error_at)


def _decode(data: tuple[Any, ...]) -> ScriptResult:
    if data[0] != _CACHE_FORMAT:
        raise ValueError("old cache format")
    _, raw, ignored, errors, error_at = data
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
    return ScriptResult(tuple(events), ignored, tuple(SqlParseError(*e) for e in errors),
                        tuple(error_at))


def _schedule_tuple(s: Schedule | None) -> tuple[Any, ...] | None:
    return None if s is None else (s.behavior, s.start, s.every, s.query_rewrite)


def load_sql(paths: Iterable[str | Path], search_path: Sequence[str] = ("public",),
             use_cache: bool = True, encoding: str = "utf-8",
             resolver: Resolver | None = None) -> LoadResult:
    """Read SQL files in order and return the definitions in force at the end, and every
    failure (each file is read to its end; failing statements and cycles are left out).

    With ``resolver``, statements that did not parse are handed to it (after the parse cache:
    what it resolves is never cached), and the definitions it returns take their place.

    Raises:
        UsageError: no files, a path that does not exist or cannot be read, an unknown encoding.
    """
    check_encoding(encoding)
    listed = _expand(paths)
    if not listed:
        raise UsageError("no SQL files found; pass files, folders holding *.sql, or -")
    items, errors, warnings = read_files(listed, encoding)
    files = [path for path, _ in listed]
    results = parse_texts(items, search_path, use_cache=use_cache and "-" not in files)
    if resolver is not None:
        results = _resolved(results, items, search_path, resolver)
    defs: dict[RelationName, Definition] = {}
    bare: dict[RelationName, tuple[frozenset[str], tuple[str, ...]]] = {}
    for (_, path), result in zip(items, results, strict=True):
        errors += result.errors
        if not result.events and not result.errors and result.ignored:
            warnings.append(_no_definition_warning(path, result.ignored))
        for event in result.events:
            _apply(event, defs, bare)
    ignored = sum(r.ignored for r in results)
    known = set(defs)
    final = [_reresolve(d, *bare[d.name], known) if d.name in bare else d for d in defs.values()]
    order = {path: i for i, path in enumerate(["<stdin>" if p == "-" else p for p in files])}
    errors.sort(key=lambda e: (order.get(e.path, len(order)), e.line))
    # A view reading itself (CREATE OR REPLACE VIEW v AS TABLE v, which PostgreSQL accepts) is
    # kept: the graph leaves it out with a warning, as it does for the catalog's cycles.
    cycles = [cycle for cycle in find_cycles(final) if len(cycle) > 1]
    errors += [_cycle_error(cycle, defs) for cycle in cycles]
    left_out = {name for cycle in cycles for name in cycle}
    final = [d for d in final if d.name not in left_out]
    read = {src for d in final for src in d.reads}  # sequences appear where a view reads them
    final = [d for d in final if d.kind is not Kind.SEQUENCE or d.name in read]
    return LoadResult(sorted(final, key=lambda d: d.name), ignored, files, errors, warnings)


def _no_definition_warning(path: str, statements: int) -> str:
    """A file whose statements create nothing mvgraph reads (a scenic ``db/views/x_v01.sql``
    holds the bare query, for one)."""
    what = "its statement is" if statements == 1 else f"its {statements} statements are"
    return (f"{path} defines no view or table: {what} not CREATE [MATERIALIZED] VIEW or CREATE "
            "TABLE (a file holding only a view's query needs CREATE VIEW name AS before it)")


def _resolved(results: list[ScriptResult], items: Sequence[tuple[str, str]],
              search_path: Sequence[str], resolver: Resolver) -> list[ScriptResult]:
    """The results with the failures ``resolver`` resolved put in place as definitions."""
    failed = [e for r in results for e in r.errors]
    if not failed:
        return results
    answers = {id(e): a for e, a in zip(failed, resolver(items, failed, search_path),
                                         strict=True)}
    out: list[ScriptResult] = []
    for result in results:
        events = list(result.events)
        errors: list[SqlParseError] = []
        places = result.error_at or (len(events),) * len(result.errors)
        inserts: list[tuple[int, Define]] = []
        for error, at in zip(result.errors, places, strict=True):
            answer = answers[id(error)]
            if isinstance(answer, Define):
                inserts.append((at, answer))
            else:
                errors.append(answer)
        for at, define in reversed(inserts):
            events.insert(at, define)
        out.append(ScriptResult(tuple(events), result.ignored, tuple(errors)))
    return out


def _cycle_error(cycle: list[RelationName], defs: dict[RelationName, Definition]
                 ) -> SqlCycleError:
    """The cycle, named at its first definition's file and line, each name with its source."""
    path, _, line = (defs[cycle[0]].source or "<sql>:0").rpartition(":")
    steps = " -> ".join(f"{name} ({defs[name].source})" for name in cycle)
    error = SqlCycleError(f"dependency cycle: {steps} -> {cycle[0]}; break it by changing one "
                          "of these definitions", path, int(line) if line.isdigit() else 0)
    error.cycle = [str(name) for name in cycle]
    return error


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
        # a pg_* name not defined on the path means pg_catalog's (searched first by PostgreSQL)
        system = [RelationName("pg_catalog", name)] if name.startswith("pg_") else []
        first = next((RelationName(s, name) for s in path if RelationName(s, name) in reads),
                     None) or next((n for n in system if n in reads), None)
        target = next((RelationName(s, name) for s in path if RelationName(s, name) in known),
                      None) or next(iter(system), None)
        if first is not None and target is not None and first != target:
            reads.discard(first)
            reads.add(target)
    return dataclasses.replace(d, reads=frozenset(reads)) if reads != d.reads else d


def graph_from_sql(paths: Iterable[str | Path], *, search_path: Sequence[str] = ("public",),
                   schemas: Sequence[str] | None = None, strict: bool = False,
                   use_cache: bool = True, encoding: str = "utf-8", keep_going: bool = False,
                   resolver: Resolver | None = None) -> MVGraph:
    """The graph of SQL files: :func:`mvgraph.load_graph` with ``sql=`` (see it for the
    arguments), here so that modules below the library API (schedule sync) can build it.

    Raises:
        SqlLoadErrors: files failed, unless ``keep_going`` (then ``graph.load_errors``).
    """
    loaded = load_sql(paths, search_path=search_path, use_cache=use_cache, encoding=encoding,
                      resolver=resolver)
    if loaded.errors and not keep_going:
        raise SqlLoadErrors(loaded.errors, len(loaded.files), loaded.warnings)
    defs = loaded.definitions
    if schemas:
        defs = [d for d in defs if d.name.schema in set(schemas)]
    # the only cycles left are views reading themselves: warned about and left out
    graph = MVGraph.from_definitions(defs, strict=strict, on_cycle="warn")
    graph.ignored_statements = loaded.ignored
    graph.warnings[:0] = loaded.warnings
    graph.load_errors = loaded.errors
    return graph
