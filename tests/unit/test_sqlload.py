"""Loading real-world SQL folders: encodings, binary files, every failure reported, keep_going,
and the statements that are not views (functions, DO, psql meta-commands, COPY data)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from mvgraph import (
    MVGraph,
    RelationName,
    SqlCycleError,
    SqlEncodingError,
    SqlLoadErrors,
    SqlParseError,
    UsageError,
    load_graph,
)

R = RelationName
VIEW = "CREATE VIEW after_it AS SELECT id FROM t;\n"


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MVGRAPH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def put(folder: Path, name: str, data: str | bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def names(graph: MVGraph) -> list[str]:
    return sorted(str(n) for n in graph.g)


def failures(info: pytest.ExceptionInfo[SqlLoadErrors]) -> list[str]:
    return str(info.value).splitlines()


def test_latin1_file_names_file_line_and_offset_then_loads_with_its_encoding(
        tmp_path: Path) -> None:
    f = put(tmp_path, "l.sql", "CREATE TABLE t (id int);\nCREATE VIEW caf AS SELECT id AS "
                               "caf\xe9 FROM t;\n".encode("latin-1"))
    with pytest.raises(SqlLoadErrors) as info:
        load_graph(sql=[f])
    assert failures(info) == [f"{f}:2: byte 0xe9 at offset 60 is not utf-8; pass --encoding "
                              "latin-1 (or the file's real encoding)"]
    error = info.value.errors[0]
    assert isinstance(error, SqlEncodingError) and error.offset == 60 and not error.binary
    graph = load_graph(sql=[f], encoding="latin-1")
    assert graph.attrs(R("public", "caf"))["definition"].count("café") == 1


def test_utf8_bom_is_dropped_whatever_the_encoding(tmp_path: Path) -> None:
    f = put(tmp_path, "b.sql", b"\xef\xbb\xbfCREATE TABLE t (id int);\n" + VIEW.encode())
    for encoding in ("utf-8", "latin-1"):
        assert names(load_graph(sql=[f], encoding=encoding)) == ["public.after_it", "public.t"]


def test_binary_files_in_folders_are_skipped_but_named_ones_fail(tmp_path: Path) -> None:
    put(tmp_path, "a.sql", "CREATE TABLE t (id int);\n")
    blob = put(tmp_path, "sub/blob.sql", b"PK\x03\x04\x00\x00\xff\xfe")
    graph = load_graph(sql=[tmp_path])
    assert names(graph) == ["public.t"]
    assert graph.warnings == [f"skipped {blob}: binary file (NUL byte at offset 4), not SQL "
                              "text; name SQL files only"]
    with pytest.raises(SqlLoadErrors) as info:
        load_graph(sql=[blob])
    assert info.value.errors[0].binary  # type: ignore[attr-defined]
    assert failures(info)[0].startswith(f"{blob}:1: binary file")


def test_utf16_and_unknown_encodings_say_what_to_pass(tmp_path: Path) -> None:
    f = put(tmp_path, "w.sql", "CREATE TABLE t (id int);".encode("utf-16"))
    with pytest.raises(SqlLoadErrors, match="pass --encoding utf-16"):
        load_graph(sql=[f])
    assert names(load_graph(sql=[f], encoding="utf-16")) == ["public.t"]
    with pytest.raises(UsageError, match="unknown encoding 'klingon'"):
        load_graph(sql=[f], encoding="klingon")


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    """Five files: two with a bad statement each, a cycle across two files, and good views."""
    put(tmp_path, "1_base.sql", "CREATE TABLE t (id int);\nCREATE VIEW good AS SELECT id FROM t;\n")
    put(tmp_path, "2_bad.sql", "CREATE VIEW ok2 AS SELECT id FROM t;\n\n"
                               "CREATE VIEW bad AS SELECT FROM WHERE (;\n"
                               "CREATE VIEW ok3 AS SELECT id FROM ok2;\n")
    put(tmp_path, "3_worse.sql", "CREATE MATERIALIZED VIEW m AS SELECT 'unterminated FROM t;\n")
    put(tmp_path, "4_v1.sql", "\n\nCREATE VIEW v1 AS SELECT * FROM v2;\n"
                              "CREATE VIEW reads_v1 AS SELECT * FROM v1;\n")
    put(tmp_path, "5_v2.sql", "\n\n\n\n\n\nCREATE VIEW v2 AS SELECT * FROM v1;\n")
    return tmp_path


def test_every_failure_is_reported_each_as_file_line_message(broken: Path) -> None:
    with pytest.raises(SqlLoadErrors) as info:
        load_graph(sql=[broken])
    lines = failures(info)
    assert [line.split(": ", 1)[0] for line in lines] == [
        f"{broken}/2_bad.sql:3:32", f"{broken}/3_worse.sql:1", f"{broken}/4_v1.sql:3"]
    assert lines[2] == (f"{broken}/4_v1.sql:3: dependency cycle: public.v1 ({broken}/4_v1.sql:3)"
                        f" -> public.v2 ({broken}/5_v2.sql:7) -> public.v1; break it by "
                        "changing one of these definitions")
    assert isinstance(info.value.errors[2], SqlCycleError)
    assert info.value.errors[2].cycle == ["public.v1", "public.v2"]
    assert info.value.files == 5


def test_keep_going_builds_the_graph_from_everything_that_loads(broken: Path) -> None:
    graph = load_graph(sql=[broken], keep_going=True)
    assert names(graph) == ["public.good", "public.ok2", "public.ok3", "public.reads_v1",
                            "public.t", "public.v1"]
    assert graph.kind(R("public", "v1")).value == "external"  # left out: read, defined nowhere
    assert [(e.path, e.line) for e in graph.load_errors] == [
        (f"{broken}/2_bad.sql", 3), (f"{broken}/3_worse.sql", 1), (f"{broken}/4_v1.sql", 3)]


def test_failures_survive_the_parse_cache(broken: Path, private_cache: Path) -> None:
    cold = load_graph(sql=[broken], keep_going=True)
    assert any(private_cache.rglob("*.marshal"))
    warm = load_graph(sql=[broken], keep_going=True)
    assert [str(e) for e in warm.load_errors] == [str(e) for e in cold.load_errors]
    assert names(warm) == names(cold)


def test_parse_errors_pickle_for_worker_processes() -> None:
    error = SqlParseError("bad", "a.sql", 3, "CREATE VIEW")
    again = pickle.loads(pickle.dumps(error))
    assert (str(again), again.path, again.line, again.message) == (
        str(error), "a.sql", 3, "bad")


@pytest.mark.parametrize("statements", [
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1; CREATE VIEW x AS $$;",
    "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $body$ BEGIN RETURN 1; END $body$;",
    "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS 'begin return 1; end';",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true "
    "THEN 1 END; END;",
    "CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql IMMUTABLE RETURN a + 1;",
    "CREATE OR REPLACE PROCEDURE p() LANGUAGE plpgsql AS $$ BEGIN COMMIT; END $$;",
    "DO $$ BEGIN EXECUTE 'CREATE VIEW y AS SELECT 1'; END $$;",
    "DO LANGUAGE plpgsql 'begin null; end';",
    "GRANT SELECT ON ALL TABLES IN SCHEMA public TO PUBLIC;\nREVOKE ALL ON t FROM PUBLIC;",
    "COMMENT ON TABLE t IS 'it''s; a -- table /* really */';",
    "\\i other.sql\n\\ir 'dir/it''s.sql'\n\\set x 1\n\\connect db\n\\echo it's 'done",
    "\\set ON_ERROR_STOP on\nSELECT 1 \\gset\n\\restrict a1B2c3",
    "COPY t (id) FROM stdin;\n1\n2\tit's \"quoted\n$$ CREATE VIEW bad AS SELECT FROM;\n\\.",
    "\\copy t FROM stdin\n1\n'oops\n\\.",
    "COPY t FROM STDIN WITH (FORMAT csv);\n\"a;b\",'c\n\\.\n",
])
def test_statements_that_are_not_views_never_stop_a_load(tmp_path: Path,
                                                         statements: str) -> None:
    f = put(tmp_path, "dump.sql", f"CREATE TABLE t (id int);\n{statements}\n{VIEW}")
    graph = load_graph(sql=[f])
    assert names(graph) == ["public.after_it", "public.t"]
    assert graph.attrs(R("public", "after_it"))["source"] == f"{f}:{statements.count(chr(10)) + 3}"
