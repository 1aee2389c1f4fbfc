"""mvgraph.sql.lexer splits scripts where PostgreSQL and psql do (scan.l, psqlscan.l)."""

from __future__ import annotations

import itertools
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mvgraph.sql.dialect import split_statements, without_psql
from mvgraph.sql.lexer import lex, split


def texts(script: str, standard_strings: bool = True) -> list[str]:
    return [script[p.start : p.end] for p in split(script, standard_strings)]


SMUGGLE = "SET search_path = E'\\';COMMIT; ALTER ROLE bob SUPERUSER; --';"


@pytest.mark.parametrize(("script", "expected"), [
    # the smuggle: one SET whose E-string holds the rest
    (SMUGGLE + "\nselect 1", [SMUGGLE[:-1], "select 1"]),
    # E-string with a backslash-escaped quote, across lines
    ("select E'a\\'\n;b'; select 2", ["select E'a\\'\n;b'", "select 2"]),
    # standard string: the backslash is a character, '' a quote
    ("select 'a\\'; select 'b'';c'", ["select 'a\\'", "select 'b'';c'"]),
    # a string continued after a newline keeps the E mode (scan.l's quotecontinue)
    ("select E'a'\n  -- c\n '\\';x'; select 3", ["select E'a'\n  -- c\n '\\';x'", "select 3"]),
    # ... and a standard one keeps backslashes literal
    ("select 'a'\n'\\'; select 4", ["select 'a'\n'\\'", "select 4"]),
    # no continuation without a newline, nor across a /* */ comment
    ("select 'a' '\\'; select 5", ["select 'a' '\\'", "select 5"]),
    # an identifier ending in e is no E prefix
    ("select some'\\'; select 6", ["select some'\\'", "select 6"]),
    # U&, B and X strings know no backslash escapes
    ("select U&'\\'; select B'1'; select X'\\'", ["select U&'\\'", "select B'1'", "select X'\\'"]),
    # dollar quotes: tags, nesting of other tags, case, and a$b$ is an identifier
    ("select $a$ ; $b$ ; $A$ ; $a$; select a$b$; select 7",
     ["select $a$ ; $b$ ; $A$ ; $a$", "select a$b$", "select 7"]),
    ("select $1; select $$;$$", ["select $1", "select $$;$$"]),
    # nested block comments and -- comments
    ("/* a /* b; */ c; */ select 1; -- x;\nselect 2 /* ; */", ["select 1", "select 2"]),
    # quoted identifiers double their quotes
    ('select 1 as "a;""b"; select 2', ['select 1 as "a;""b"', "select 2"]),
    # BEGIN ATOMIC bodies (psql's rule), CASE ... END inside
    ("CREATE OR REPLACE FUNCTION f() RETURNS int BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true "
     "THEN 1 END; END; select 8",
     ["CREATE OR REPLACE FUNCTION f() RETURNS int BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true "
      "THEN 1 END; END", "select 8"]),
    # BEGIN of a transaction is no block
    ("BEGIN; select 1; END;", ["BEGIN", "select 1", "END"]),
    # psql meta-commands are lines of their own
    ("\\set x 1\nselect 1;", ["\\set x 1", "select 1"]),
])
def test_known_splits(script: str, expected: list[str]) -> None:
    assert texts(script) == expected


def test_standard_conforming_strings_off_makes_backslashes_escape() -> None:
    script = ("SET standard_conforming_strings = off; select 'a\\';b'; RESET ALL; "
              "select 'c\\'; select 9")
    assert texts(script) == ["SET standard_conforming_strings = off", "select 'a\\';b'",
                             "RESET ALL", "select 'c\\'", "select 9"]
    assert texts("select 'a\\';b'", standard_strings=False) == ["select 'a\\';b'"]
    assert texts("SET standard_conforming_strings TO 'of'; select 'a\\';b'")[1:] == [
        "select 'a\\';b'"]


def test_unterminated_quotes_run_to_the_end() -> None:
    for script in ("select 'a; select 2", "select E'\\'; x", "select $q$ ; ",
                   'select "a; b', "select /* a /* b */ ; select 2"):
        assert len(split(script)) == 1
        assert not lex(script)[-1].closed


def test_split_statements_gives_lines() -> None:
    assert split_statements("select 1;\n\n/* c\n */ select E'\\'\n;';\n-- end\n") == [
        (1, "select 1"), (4, "select E'\\'\n;'")]


def test_linear_time_on_long_runs() -> None:
    """Long runs of spaces, dashes, quotes or dollars (a pattern that backtracks hangs here)."""
    n = 200_000
    for script in (" " * n + "x", "'" + " " * n, "--" + " " * n, "/*" + " " * n,
                   "$a$" + "$" * n, "E'" + "\\\\" * n, "select 1" + " ;" * n,
                   "\\x\n" + " " * n + "COPY t FROM stdin;", "'a'" + "\n" * n + "x"):
        start = time.perf_counter()
        split(script)
        without_psql(script)
        assert time.perf_counter() - start < 5, script[:10]


# -- generated scripts: statements of literals whose content may hold ; ' \ $ -- /* ------------

_CHARS = st.sampled_from([";", "'", "\\", "$", "a", "\n", " ", "-", "/", "*", '"', "e"])
_CONTENT = st.text(_CHARS, max_size=12)


def _standard(content: str) -> str:
    return "'" + content.replace("'", "''") + "'"


def _escaped(content: str) -> str:
    return "E'" + content.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _dollar(content: str, tag: str) -> str:
    body = content.replace("$", "")
    return f"${tag}${body}${tag}$"


def _continued(content: str) -> str:
    half = len(content) // 2
    return _escaped(content[:half]) + "\n -- c;'\n" + _escaped(content[half:])[1:]


@st.composite
def literal(draw: st.DrawFn) -> str:
    content = draw(_CONTENT)
    form = draw(st.sampled_from(["standard", "escaped", "dollar", "continued", "ident"]))
    if form == "standard":
        return _standard(content)
    if form == "escaped":
        return _escaped(content)
    if form == "dollar":
        return _dollar(content, draw(st.sampled_from(["", "q", "Tag_1"])))
    if form == "continued":
        return _continued(content)
    return "1 AS " + '"x' + content.replace('"', '""') + '"'


@st.composite
def script(draw: st.DrawFn) -> tuple[str, int]:
    """A script of SELECTs of literals, with comments between, and its statement count."""
    statements = draw(st.lists(literal(), min_size=1, max_size=5))
    comment = draw(st.sampled_from(["", " /* ; /* ' */ $$ */ ", " -- ; '\n", "\n"]))
    return comment.join(f"SELECT {x};" for x in statements), len(statements)


@given(script())
@settings(max_examples=300, deadline=None)
def test_generated_scripts_split_into_their_statements(case: tuple[str, int]) -> None:
    text, count = case
    pieces = split(text)
    assert len(pieces) == count
    assert all(text[p.start : p.end].startswith("SELECT ") for p in pieces)
    assert all(x.closed for x in lex(text))


@given(st.text(max_size=60))
@settings(max_examples=500, deadline=None)
def test_any_text_lexes_into_ordered_lexemes(text: str) -> None:
    lexemes = lex(text)
    assert all(a.end <= b.start for a, b in itertools.pairwise(lexemes))
    assert all(x.start < x.end for x in lexemes)
    gaps = [text[a.end : b.start] for a, b in itertools.pairwise(lexemes)]
    gaps += [text[: lexemes[0].start], text[lexemes[-1].end :]] if lexemes else [text]
    assert all(c in " \t\n\r\f\v" for gap in gaps for c in gap)  # only whitespace is left out
