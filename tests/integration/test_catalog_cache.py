"""The planning graph kept on disk between processes, under the catalog's fingerprint."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

import mvgraph
from mvgraph import catalog
from mvgraph.catalog import cached_planning_graph, catalog_graph
from mvgraph.db.queries import query

Conn = psycopg.Connection[tuple[object, ...]]


def test_a_second_plan_reads_the_cached_graph_until_ddl_changes_it(
        conn: Conn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MVGRAPH_CACHE_DIR", str(tmp_path))
    conn.execute("CREATE TABLE t (x int)")
    conn.execute("CREATE MATERIALIZED VIEW a AS SELECT x FROM t")
    reads: list[int] = []
    real = catalog.catalog_graph

    def counted(*args: object, **kwargs: object) -> mvgraph.MVGraph:
        reads.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(catalog, "catalog_graph", counted)
    first = cached_planning_graph(conn)
    again = cached_planning_graph(conn)
    assert len(reads) == 1 and len(list((tmp_path / "catalog").glob("*.json"))) == 1
    direct = catalog_graph(conn, with_sql=False)
    assert set(again.g.edges) == set(first.g.edges) == set(direct.g.edges)
    assert all(again.attrs(n) == direct.attrs(n) for n in direct)
    assert list(again.g) == list(direct.g) and list(again.g.edges) == list(direct.g.edges)

    conn.execute("CREATE MATERIALIZED VIEW b AS SELECT x FROM a")
    changed = cached_planning_graph(conn)
    assert len(reads) == 2
    assert (mvgraph.RelationName("public", "a"), mvgraph.RelationName("public", "b")) in (
        changed.g.edges)
    assert [str(s.name) for s in mvgraph.plan(conn, "+b").steps] == ["public.a", "public.b"]

    conn.execute("CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'")
    conn.execute("CREATE MATERIALIZED VIEW c AS SELECT f() AS y")
    conn.execute("ALTER FUNCTION f() VOLATILE")  # volatility is part of the fingerprint
    assert cached_planning_graph(conn).attrs(mvgraph.RelationName("public", "c"))[
        "volatile_functions"] == ("f",)


def test_an_unreadable_cache_is_ignored(conn: Conn, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MVGRAPH_CACHE_DIR", str(tmp_path))
    conn.execute("CREATE TABLE t (x int)")
    conn.execute("CREATE MATERIALIZED VIEW a AS SELECT x FROM t")
    cached_planning_graph(conn)
    for entry in (tmp_path / "catalog").glob("*.json"):
        entry.write_text("{not json", encoding="utf-8")
    catalog._graphs.clear()  # as a new process: the file, not this process's copy
    assert sorted(str(n) for n in cached_planning_graph(conn)) == ["public.a", "public.t"]
    (tmp_path / "catalog").chmod(0o500)  # cannot be written: planning goes on
    try:
        conn.execute("CREATE MATERIALIZED VIEW b AS SELECT x FROM a")
        assert len(cached_planning_graph(conn)) == 3
    finally:
        (tmp_path / "catalog").chmod(0o700)


def test_the_server_side_fingerprint_is_the_query_s(conn: Conn) -> None:
    """A worker compares the fingerprint its claim returns (mvgraph.catalog_fingerprint()) with
    the one its cached graph was read under (the catalog_fingerprint query): the same digest, or
    every job would read the graph again (or a changed catalog would go unseen)."""
    def both() -> tuple[object, object]:
        server = conn.execute("SELECT mvgraph.catalog_fingerprint()").fetchone()
        client = conn.execute(query("catalog_fingerprint")).fetchone()
        assert server and client
        return server[0], client[0]

    first = both()
    assert first[0] == first[1]
    conn.execute("CREATE TEMPORARY TABLE fp_tmp (x int)")
    conn.execute("CREATE TABLE fp_parent (x int); CREATE TABLE fp_child () INHERITS (fp_parent)")
    second = both()
    assert second[0] == second[1] and second != first


def test_the_server_side_fingerprint_reads_the_catalog_when_called(conn: Conn,
                                                                     db_dsn: str) -> None:
    """A claim's fingerprint is read after the claim, not as of the start of the claim's
    statement: DDL committed meanwhile (then the job's submit) must change it, or the worker
    plans the job with the graph from before the DDL."""
    import threading

    before = conn.execute(query("catalog_fingerprint")).fetchone()

    def ddl_meanwhile() -> None:
        with psycopg.connect(db_dsn, autocommit=True) as other:
            other.execute("SELECT pg_sleep(0.5)")
            other.execute("CREATE TABLE fp_meanwhile (x int)")

    other = threading.Thread(target=ddl_meanwhile)
    other.start()
    try:  # the statement starts, sleeps 1.5 s (the DDL commits), then reads the fingerprint
        row = conn.execute("WITH s AS MATERIALIZED (SELECT pg_sleep(1.5)) "
                           "SELECT mvgraph.catalog_fingerprint() FROM s").fetchone()
    finally:
        other.join()
    after = conn.execute(query("catalog_fingerprint")).fetchone()
    assert before != after
    assert row == after, "the fingerprint missed DDL committed while its statement ran"
    conn.execute("DROP TABLE fp_meanwhile")
