"""Syntax sqlglot lacks, read through mvgraph.sql.recovery: the right inputs, and never a crash."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mvgraph.errors import SqlParseError
from mvgraph.sql.dialect import Define, parse_script, split_statements
from tests.integration.test_syntax_corpus import CORPUS


def reads(query: str) -> set[str]:
    result = parse_script(f"CREATE VIEW v AS {query};")
    event = result.events[-1]
    assert isinstance(event, Define)
    return {str(name) for name in event.definition.reads}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # operators sqlglot's tokenizer splits: geometric, network, user-defined, OPERATOR()
        ("SELECT c.b ?# a.b FROM c, a", {"public.c", "public.a"}),
        ("SELECT p ## q, @-@ p, # p, p |>> q FROM g", {"public.g"}),
        ("SELECT i <<= j, i >>= j FROM n", {"public.n"}),
        ("SELECT w <<< 5 FROM t WHERE w OPERATOR(s.+) 1 > OPERATOR(s.-) w", {"public.t"}),
        ("SELECT a FROM t ORDER BY a USING <", {"public.t"}),
        ("SELECT a FROM t ORDER BY a USING OPERATOR(pg_catalog.<)", {"public.t"}),
        # FROM items
        ("SELECT x.a FROM t1 JOIN t2 USING (a) AS x", {"public.t1", "public.t2"}),
        ("SELECT * FROM CURRENT_DATE d(d), LOCALTIMESTAMP(3) l(l), COLLATION FOR ('x') c(c), t",
         {"public.t"}),
        ("SELECT * FROM current_user u, \"current_user\"", {'public."current_user"'}),
        # predicates and special forms
        ("SELECT a IS NOT NFKD NORMALIZED AS n, b AT LOCAL FROM t", {"public.t"}),
        ("SELECT c::bit varying(3) FROM t", {"public.t"}),
        # SQL/JSON and SQL/XML: the subqueries inside them still count
        ("SELECT JSON_ARRAY(x FORMAT JSON, y RETURNING json) FROM t", {"public.t"}),
        ("SELECT JSON_ARRAY(SELECT a FROM u RETURNING jsonb)", {"public.u"}),
        ("SELECT JSON_QUERY(j, '$' PASSING (SELECT max(a) FROM u) AS m WITH WRAPPER) FROM t",
         {"public.t", "public.u"}),
        ("SELECT * FROM t, JSON_TABLE(t.j, '$[*]' COLUMNS (n FOR ORDINALITY, "
         "NESTED PATH '$.a' COLUMNS (b int PATH '$')) ERROR ON ERROR) jt", {"public.t"}),
        ("SELECT * FROM t, XMLTABLE('/a' PASSING t.x COLUMNS n FOR ORDINALITY) x", {"public.t"}),
        ("SELECT XMLPARSE(DOCUMENT (SELECT max(d) FROM u)) FROM t", {"public.t", "public.u"}),
    ],
)
def test_syntax_sqlglot_lacks_reads_the_right_relations(query: str, expected: set[str]) -> None:
    assert reads(query) == expected


def test_every_corpus_statement_parses_without_a_server() -> None:
    """The corpus parses alone (the XML views too, which the embedded server cannot load)."""
    views = 0
    for path in sorted(CORPUS.glob("*.sql")):
        result = parse_script(path.read_text(), path=path.name, keep_going=True)
        assert not result.errors, [str(e) for e in result.errors]
        views += sum(isinstance(e, Define) and e.definition.kind.value != "table"
                     for e in result.events)
    assert views >= 60


def _corpus_statements() -> list[str]:
    return [text for path in sorted(CORPUS.glob("*.sql"))
            for _, text in split_statements(path.read_text()) if text.upper().startswith("CREATE")]


_WORDS = [
    "SELECT", "FROM", "WHERE", "JOIN", "USING", "AS", "ON", "(", ")", ",", "a", "t", "s.t",
    "OPERATOR", "?#", "<<<", "##", "@-@", "::", "[", "]", "JSON_ARRAY", "JSON_TABLE", "XMLTABLE",
    "COLUMNS", "FOR", "ORDINALITY", "RETURNING", "FORMAT", "JSON", "IS", "NOT", "NORMALIZED",
    "AT", "LOCAL", "TIME", "ZONE", "COLLATION", "LATERAL", "WITH", "RECURSIVE", "UNION",
    "VALUES", "ORDER", "BY", "'x'", "1", "*", ".", ";", "$$", "CASE", "END", "OVER", "NESTED",
    "PATH", "ROWS", "WINDOW", "GROUP", "CURRENT_DATE", "NULL", "EXISTS", "ARRAY", "-", "+",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(_WORDS), max_size=40))
def test_token_soup_never_crashes(words: list[str]) -> None:
    """Random token soups in a view body: events or a SqlParseError, nothing else."""
    try:
        parse_script("CREATE VIEW v AS " + " ".join(words) + ";", keep_going=True)
        parse_script("CREATE MATERIALIZED VIEW v AS SELECT " + " ".join(words) + ";")
    except SqlParseError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_corpus_statements_never_crash(data: st.DataObject) -> None:
    """Corpus statements with a slice deleted, duplicated or replaced by a soup word."""
    text = data.draw(st.sampled_from(_corpus_statements()))
    start = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(start, min(len(text), start + 30)))
    how = data.draw(st.sampled_from(["delete", "repeat", "replace"]))
    if how == "delete":
        text = text[:start] + text[end:]
    elif how == "repeat":
        text = text[:end] + text[start:end] + text[end:]
    else:
        text = text[:start] + " " + data.draw(st.sampled_from(_WORDS)) + " " + text[end:]
    with contextlib.suppress(SqlParseError):
        parse_script(text + ";", keep_going=True)


def test_a_bug_in_extraction_is_a_parse_error_of_its_statement(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An exception anywhere in reading a statement costs that statement, with its file:line."""
    import mvgraph.sql.dialect as dialect

    def broken(*_: object) -> object:
        raise RuntimeError("boom")

    monkeypatch.setattr(dialect, "_references", broken)
    script = "CREATE TABLE t (a int);\nCREATE VIEW v AS SELECT a FROM t;\nCREATE TABLE u (b int);"
    result = parse_script(script, path="x.sql", keep_going=True)
    assert [str(e.definition.name) for e in result.events if isinstance(e, Define)] == [
        "public.t", "public.u"]
    assert [(e.path, e.line) for e in result.errors] == [("x.sql", 2)]
    assert "RuntimeError: boom" in result.errors[0].message
    with pytest.raises(SqlParseError, match=r"^x\.sql:2: "):
        parse_script(script, path="x.sql")
