"""Every view of the syntax corpus (tests/corpus/views) has the same inputs three ways.

For each view the corpus defines: (a) the inputs parsed from the statement as written, alone,
(b) the inputs parsed from ``pg_get_viewdef`` (printed once with the corpus search path, once
with an empty one, which qualifies every name and prints ``OPERATOR(schema.op)``), and (c) the
inputs pg_depend records (the catalog graph). All three must be equal.

A statement preceded by a ``-- requires: N`` line needs PostgreSQL N or later; on an older
server it is neither loaded nor compared (CI also runs PostgreSQL 15); ``-- requires: xml``
marks a statement that needs a server built with libxml (the embedded one is not; the unit tests
still parse those statements).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from mvgraph import RelationName, load_graph
from mvgraph.sql.dialect import Define, parse_script, split_statements

Conn = psycopg.Connection[tuple[object, ...]]
CORPUS = Path(__file__).resolve().parent.parent / "corpus" / "views"
_REQUIRES_RE = re.compile(r"^--\s*requires:\s*(\d+)?\s*(xml)?\s*$", re.MULTILINE)
_PATH_RE = re.compile(r"^SET search_path TO (.+)$", re.IGNORECASE)
_VIEW_RE = re.compile(r"^CREATE\s+(?:OR\s+REPLACE\s+)?(?:RECURSIVE\s+|MATERIALIZED\s+)?VIEW",
                      re.IGNORECASE)


@dataclass(frozen=True)
class Statement:
    file: str
    line: int
    text: str
    requires: int
    xml: bool
    search_path: tuple[str, ...]


def corpus_statements() -> list[Statement]:
    """The corpus statements in load order, each with its version need and search path."""
    out: list[Statement] = []
    for path in sorted(CORPUS.glob("*.sql")):
        text = path.read_text()
        lines = text.split("\n")
        search_path: tuple[str, ...] = ("public",)
        for line, statement in split_statements(text):
            if statement.startswith("--"):  # split_statements keeps a leading comment block
                continue
            above = "\n".join(lines[max(0, line - 2) : line - 1])
            match = _REQUIRES_RE.search(above)
            requires = int(match.group(1)) if match and match.group(1) else 0
            xml = bool(match and match.group(2))
            set_path = _PATH_RE.match(statement)
            if set_path:
                search_path = tuple(s.strip() for s in set_path.group(1).split(","))
            out.append(Statement(path.name, line, statement, requires, xml, search_path))
    return out


def test_corpus_markers_are_read() -> None:
    statements = corpus_statements()
    views = [s for s in statements if _VIEW_RE.match(s.text)]
    assert len(views) >= 60
    assert {s.requires for s in views} >= {0, 16, 17}
    assert any(s.xml for s in views)


def _server_major(conn: Conn) -> int:
    row = conn.execute("SELECT current_setting('server_version_num')::int / 10000").fetchone()
    assert row is not None
    return int(str(row[0]))


def _has_xml(conn: Conn) -> bool:
    try:
        with conn.transaction():
            conn.execute("SELECT '<a/>'::xml")
    except psycopg.errors.FeatureNotSupported:
        return False
    return True


def _parsed(text: str, search_path: tuple[str, ...]) -> frozenset[RelationName]:
    result = parse_script(text + ";", search_path=search_path)
    defines = [e for e in result.events if isinstance(e, Define)]
    assert len(defines) == 1, text
    return defines[0].definition.reads


def _viewdef(conn: Conn, name: RelationName, search_path: str) -> str:
    conn.execute(sql.SQL("SET search_path TO {}").format(sql.SQL(search_path)))
    row = conn.execute(
        "SELECT pg_get_viewdef(to_regclass(%s))", (str(name),)
    ).fetchone()
    assert row is not None and row[0] is not None, name
    return str(row[0]).strip().rstrip(";")


def test_every_view_has_the_same_inputs_three_ways(conn: Conn) -> None:
    major = _server_major(conn)
    xml = _has_xml(conn)
    loaded: list[tuple[Statement, RelationName]] = []
    for stmt in corpus_statements():
        if stmt.requires > major or (stmt.xml and not xml):
            continue
        conn.execute(stmt.text)  # type: ignore[call-overload]  # corpus text, not user input
        if _VIEW_RE.match(stmt.text):
            written = parse_script(stmt.text + ";", search_path=stmt.search_path)
            define = written.events[0]
            assert isinstance(define, Define), stmt
            loaded.append((stmt, define.definition.name))
    catalog = load_graph(conn=conn)
    failures: list[str] = []
    for stmt, name in loaded:
        where = f"{stmt.file}:{stmt.line} {name}"
        assert name in catalog, where
        expected = frozenset(catalog.inputs(name))
        kind = "MATERIALIZED VIEW" if "MATERIALIZED" in stmt.text.split("AS", 1)[0].upper() \
            else "VIEW"
        texts = {"as written": stmt.text}
        for label, path in (("viewdef", ", ".join(stmt.search_path)), ("viewdef, no path", "''")):
            body = _viewdef(conn, name, path)
            texts[label] = f"CREATE {kind} {name} AS {body}"
        for label, text in texts.items():
            path = stmt.search_path if label != "viewdef, no path" else ("public",)
            try:
                got = _parsed(text, path)
            except Exception as exc:  # collect every failure, then report them together
                failures.append(f"{where} ({label}): {exc}")
                continue
            if got != expected:
                failures.append(
                    f"{where} ({label}): parsed {sorted(map(str, got))}, "
                    f"pg_depend {sorted(map(str, expected))}\n    {text}"
                )
    conn.execute("RESET search_path")
    assert not failures, "\n".join(failures)
    assert len(loaded) >= (59 if major >= 17 else 50)
