"""What a relation has attached, as statements for another relation: options, primary key and
indexes (under temporary names), own foreign keys, triggers, rules, policies, grants,
comments, owner, replica identity and statistics objects. Definitions are the server's own
(``pg_get_indexdef``, ``pg_get_constraintdef``, ``pg_get_triggerdef``, ...), read with
``search_path = ''`` and with the relation's name rewritten token by token."""

from __future__ import annotations

import psycopg
from psycopg import sql

from mvgraph.db.queries import query
from mvgraph.rebuild.closure import Attached, QualifiedName, qualified_names, temp_name
from mvgraph.sql.lexer import Kind, lex

Conn = psycopg.Connection[tuple[object, ...]]
_WORD = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW"}


def attached_ddl(conn: Conn, relation: int, new: QualifiedName, job: int, *,
                 include: frozenset[str]) -> list[Attached]:
    """Statements that give the relation ``new`` what ``relation`` has attached, for the parts
    named in ``include``, in an order that runs; index names are ``temp_name(original,
    job)``."""
    with qualified_names(conn):
        rows = conn.execute(query("rebuild_attached"), {"oid": relation}).fetchall()
    row = conn.execute(query("rebuild_relation_facts"), {"oid": relation}).fetchone()
    assert row is not None
    schema, name, relkind = str(row[0]), str(row[1]), str(row[2])
    old = (schema, name)
    target = sql.Identifier(*new)
    word = sql.SQL(_WORD.get(relkind, "TABLE"))
    out: list[Attached] = []
    for part, obj, text, extra in rows:
        part, text = str(part), str(text) if text is not None else ""
        if part not in include:
            continue
        if part == "options":
            out.append(Attached(part, sql.SQL("ALTER {} {} SET ({})").format(
                word, target, sql.SQL(text))))
        elif part in ("primary_key", "indexes"):
            original = str(obj)
            tmp = temp_name(original, job)
            if extra:  # a constraint's index: PRIMARY KEY / UNIQUE / EXCLUDE
                out.append(Attached(part, sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                    target, sql.Identifier(tmp), sql.SQL(text)), (tmp, original)))
            else:
                out.append(Attached(part, sql.SQL(_index_on(text, original, tmp, old, new)),
                                    (tmp, original)))
        elif part == "foreign_keys":
            out.append(Attached(part, sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {} NOT VALID")
                                .format(target, sql.Identifier(str(obj)), sql.SQL(text))))
            out.append(Attached(part, sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(
                target, sql.Identifier(str(obj)))))
        elif part in ("triggers", "rules", "policies", "statistics"):
            out.append(Attached(part, sql.SQL(_replace_name(text, old, new))))
            if part == "triggers" and extra and extra != "O":
                how = {"D": "DISABLE", "R": "ENABLE REPLICA", "A": "ENABLE ALWAYS"}[str(extra)]
                out.append(Attached(part, sql.SQL("ALTER TABLE {} {} TRIGGER {}").format(
                    target, sql.SQL(how), sql.Identifier(str(obj)))))
        elif part == "rls":
            if "policies" in include:
                out.append(Attached("policies", sql.SQL("ALTER TABLE {} {}").format(
                    target, sql.SQL(text))))
        elif part == "grants":
            columns = sql.SQL(" ({})").format(sql.Identifier(str(extra))) if extra else sql.SQL("")
            privilege, grantee, grantable = text.split("|")
            out.append(Attached(part, sql.SQL("GRANT {}{} ON {} TO {}{}").format(
                sql.SQL(privilege), columns, target,
                sql.SQL("PUBLIC") if grantee == "-" else sql.Identifier(grantee),
                sql.SQL(" WITH GRANT OPTION" if grantable == "t" else ""))))
        elif part == "comments":
            on = (sql.SQL("COLUMN {}").format(sql.Identifier(*new, str(obj))) if obj
                  else sql.SQL("{} {}").format(word, target))
            out.append(Attached(part, sql.SQL("COMMENT ON {} IS {}").format(
                on, sql.Literal(text))))
        elif part == "owner":
            out.append(Attached(part, sql.SQL("ALTER {} {} OWNER TO {}").format(
                word, target, sql.Identifier(text))))
        elif part == "replica_identity":
            ident = (sql.SQL("USING INDEX {}").format(sql.Identifier(temp_name(str(obj), job)))
                     if text == "i" else sql.SQL({"f": "FULL", "n": "NOTHING"}[text]))
            out.append(Attached(part, sql.SQL("ALTER TABLE {} REPLICA IDENTITY {}").format(
                target, ident)))
    return out


def _index_on(definition: str, original: str, tmp: str, old: QualifiedName,
              new: QualifiedName) -> str:
    """``CREATE [UNIQUE] INDEX name ON [ONLY] s.t USING ...`` for the new relation under the
    temporary name (tokens replaced, the rest as the server wrote it)."""
    text = _replace_name(definition, old, new)
    for x in lex(text):
        if x.kind in (Kind.WORD, Kind.IDENT) and _bare(text[x.start:x.end]) == original:
            return text[:x.start] + sql.Identifier(tmp).as_string(None) + text[x.end:]
    return text


def _replace_name(text: str, old: QualifiedName, new: QualifiedName) -> str:
    """Every ``schema.name`` of ``old`` in ``text`` becomes ``new`` (a relation position in a
    server-written definition: ON s.t, REFERENCES s.t, FROM s.t)."""
    lexemes = [x for x in lex(text) if x.kind is not Kind.COMMENT]
    out: list[str] = []
    pos = 0
    i = 0
    while i + 2 < len(lexemes):
        a, dot, b = lexemes[i], lexemes[i + 1], lexemes[i + 2]
        if (a.kind in (Kind.WORD, Kind.IDENT) and text[dot.start:dot.end] == "."
                and b.kind in (Kind.WORD, Kind.IDENT)
                and (_bare(text[a.start:a.end]), _bare(text[b.start:b.end])) == old
                and not (i + 3 < len(lexemes) and text[lexemes[i + 3].start] == ".")):
            out.append(text[pos:a.start])
            out.append(sql.Identifier(*new).as_string(None))
            pos = b.end
            i += 3
            continue
        i += 1
    out.append(text[pos:])
    return "".join(out)


def _bare(token: str) -> str:
    if token.startswith('"'):
        return token[1:-1].replace('""', '"')
    return token.lower()
