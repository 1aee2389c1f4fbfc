"""Loading SQL files: order, renames, schedules, cross-file resolution, and the parse cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from mvgraph import RelationName, load_graph
from mvgraph.sql.sqlfiles import cache_dir, load_sql

R = RelationName


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MVGRAPH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_alter_refresh_default_keeps_the_schedule(tmp_path: Path) -> None:
    f = write(tmp_path, "a.sql", """
        CREATE TABLE t (a int);
        CREATE MATERIALIZED VIEW mv REFRESH CASCADE ALL START WITH ('2020-01-01'::timestamptz)
            EVERY (interval '1 s') AS SELECT a FROM t;
        ALTER MATERIALIZED VIEW mv REFRESH default;
    """)
    d = {x.name: x for x in load_sql([f]).definitions}[R("public", "mv")]
    assert d.schedule is not None
    assert d.schedule.behavior == "DEFAULT"
    assert d.schedule.start is not None and "2020-01-01" in d.schedule.start
    assert d.schedule.every is not None


def test_bare_names_resolve_against_every_file(tmp_path: Path) -> None:
    a = write(tmp_path, "1.sql", "SET search_path TO staging, raw;\n"
                                 "CREATE MATERIALIZED VIEW staging.m AS SELECT * FROM t;\n")
    b = write(tmp_path, "2.sql", "CREATE TABLE raw.t (id int);\n")
    g = load_graph(sql=[a, b])
    assert g.inputs(R("staging", "m")) == [R("raw", "t")]
    assert not g.warnings


def test_rename_is_followed_by_readers(tmp_path: Path) -> None:
    f = write(tmp_path, "r.sql", """
        CREATE TABLE t (id int);
        CREATE MATERIALIZED VIEW m AS SELECT id FROM t;
        ALTER TABLE t RENAME TO t2;
        DROP MATERIALIZED VIEW IF EXISTS gone;
    """)
    g = load_graph(sql=[f])
    assert g.inputs(R("public", "m")) == [R("public", "t2")]


def test_warm_load_equals_cold_and_uses_the_cache(tmp_path: Path, private_cache: Path) -> None:
    f = write(tmp_path, "c.sql", "CREATE TABLE t (id int);\n"
                                 "CREATE MATERIALIZED VIEW m AS SELECT id, now() FROM t;\n")
    cold = load_sql([f])
    assert any(cache_dir().rglob("*.marshal"))
    warm = load_sql([f])
    assert warm == cold
    uncached = load_sql([f], use_cache=False)
    assert uncached == cold


def test_changed_file_is_parsed_again(tmp_path: Path) -> None:
    f = write(tmp_path, "d.sql", "CREATE TABLE t (id int);\n")
    load_sql([f])
    f.write_text("CREATE TABLE t (id int);\nCREATE VIEW v AS SELECT id FROM t;\n")
    assert [str(d.name) for d in load_sql([f]).definitions] == ["public.t", "public.v"]


def test_many_files_parse_in_parallel_with_the_same_result(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import concurrent.futures
    from concurrent.futures.process import ProcessPoolExecutor

    from mvgraph.sql import sqlfiles

    big = "".join(f"CREATE MATERIALIZED VIEW m{i} AS SELECT id, v + {i} AS v "
                  f"FROM t JOIN u USING (id) WHERE v > {i};\n" for i in range(3000))
    files = [write(tmp_path, "0.sql", "CREATE TABLE t (id int, v int); CREATE TABLE u (id int);"),
             write(tmp_path, "1.sql", big), write(tmp_path, "2.sql", big.replace(" m", " n"))]
    pools: list[int] = []

    def counting_pool(workers: int) -> object:
        pools.append(workers)
        return ProcessPoolExecutor(workers)

    monkeypatch.setattr(sqlfiles.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", counting_pool)
    parallel = load_sql(files, use_cache=False)
    assert pools == [2], "the files were not parsed on worker processes"
    monkeypatch.setattr(sqlfiles, "_PARALLEL_BYTES", 10**12)  # the same files, one process
    serial = load_sql(files, use_cache=False)
    assert pools == [2]
    assert len(parallel.definitions) == 2 + 6000
    assert parallel == serial


def test_old_cache_entries_are_pruned_when_new_ones_are_written(
        tmp_path: Path, private_cache: Path) -> None:
    import os
    import time

    from mvgraph.sql.sqlfiles import CACHE_MAX_AGE_DAYS

    first = tmp_path / "a.sql"
    first.write_text("CREATE TABLE t (id int);", encoding="utf-8")
    load_sql([first])
    (old,) = list(cache_dir().rglob("*.marshal"))
    stale = time.time() - (CACHE_MAX_AGE_DAYS + 1) * 86400
    os.utime(old, (stale, stale))
    load_sql([first])  # a cache hit writes nothing, prunes nothing, and keeps its entry alive
    assert old.exists() and old.stat().st_mtime > stale + 86400
    os.utime(old, (stale, stale))
    second = tmp_path / "b.sql"
    second.write_text("CREATE TABLE u (id int);", encoding="utf-8")
    load_sql([second])  # another load: a new entry is written and the stale one pruned
    entries = list(cache_dir().rglob("*.marshal"))
    assert old not in entries and len(entries) == 1


def test_a_changed_file_is_the_only_one_parsed_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache holds one entry per load; a warm load parses nothing, an edit parses the
    edited file only and rewrites that entry (no second one)."""
    from mvgraph.sql import dialect

    files = [write(tmp_path, f"{i}.sql", f"CREATE TABLE t{i} (id int);") for i in range(5)]
    cold = load_sql(files)
    parsed: list[str] = []
    real = dialect.parse_script

    def counting(text: str, **kwargs: object) -> object:
        parsed.append(str(kwargs["path"]))
        return real(text, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(dialect, "parse_script", counting)
    assert load_sql(files) == cold and parsed == []
    files[3].write_text("CREATE TABLE t3 (id int);\nCREATE VIEW v AS SELECT id FROM t3;")
    again = load_sql(files)
    assert parsed == [str(files[3])]
    assert [str(d.name) for d in again.definitions] == [
        "public.t0", "public.t1", "public.t2", "public.t3", "public.t4", "public.v"]
    assert len(list(cache_dir().rglob("*.marshal"))) == 1
    parsed.clear()
    assert load_sql(files) == again and parsed == []


def test_a_damaged_cache_entry_is_parsed_again(tmp_path: Path) -> None:
    f = write(tmp_path, "e.sql", "CREATE TABLE t (id int);\nCREATE VIEW v AS SELECT id FROM t;")
    cold = load_sql([f])
    (entry,) = list(cache_dir().rglob("*.marshal"))
    entry.write_bytes(b"\x00garbage")
    assert load_sql([f]) == cold
    assert load_sql([f]) == cold  # rewritten


@pytest.mark.parametrize("spelling", ["tree", "tree/", "./tree", ".", "absolute"])
def test_folders_are_walked_as_sorted_rglob_walks_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spelling: str) -> None:
    """Every ``*.sql`` entry below a folder (hidden ones too, not through symbolic links to
    folders), in the order of sorted Paths (``a-b.sql`` after ``a/z.sql``)."""
    import os

    from mvgraph.sql.sqlfiles import expand_paths

    tree = tmp_path / "tree"
    for rel in ["b.sql", "a/z.sql", "a-b.sql", "a/c/d.sql", ".hidden.sql", "notes.txt",
                "a/c/e.SQL", "x.sql/inner.sql", "deep/er/est/f.sql"]:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text("select 1;")
    (tree / "link").symlink_to(tree / "a", target_is_directory=True)
    (tree / "link.sql").symlink_to(tree / "b.sql")
    monkeypatch.chdir(tmp_path if spelling != "." else tree)
    root = str(tree) if spelling == "absolute" else spelling
    expected = [str(p) for p in sorted(Path(root).rglob("*.sql"))]
    assert expand_paths([root]) == expected
    assert len(expected) == 9 and os.path.join("link", "z.sql") not in " ".join(expected)


def test_a_file_name_that_is_not_utf8_loads_and_is_cached(tmp_path: Path) -> None:
    import os

    folder = tmp_path / "odd"
    folder.mkdir()
    with open(os.fsencode(folder) + b"/caf\xe9.sql", "wb") as f:
        f.write(b"CREATE TABLE t (id int);\nCREATE VIEW v AS SELECT id FROM t;\n")
    cold = load_sql([folder])
    assert [str(d.name) for d in cold.definitions] == ["public.t", "public.v"]
    assert load_sql([folder]) == cold
    assert len(list(cache_dir().rglob("*.marshal"))) == 1
