"""What is attached to a relation (options, keys, indexes, constraints, triggers, rules,
policies, statistics, comments, owner, grants), as statements that give it to another relation.

Every statement is built with ``psycopg.sql``; text the server wrote (``pg_get_indexdef``,
``pg_get_constraintdef``, ``pg_get_triggerdef``, ``pg_get_ruledef``, ``pg_get_expr``,
``pg_get_statisticsobjdef``, read with ``search_path`` = '') goes in only after
:func:`~mvgraph.rebuild.rename.rename_relations` has pointed it at the new relation.

Names: indexes (also those behind PRIMARY KEY / UNIQUE / EXCLUDE constraints) and statistics
objects are schema-wide, so they are created under ``temp_name(original, job)`` and renamed at
the swap (:attr:`Attached.index`, :attr:`Attached.statistics`); constraints, triggers, rules
and policies are named per relation and keep their names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from psycopg import sql

from mvgraph.rebuild.reading import Conn, one, qualified_names, rows
from mvgraph.rebuild.rename import QualifiedName, rename_qualifier, rename_relations, temp_name
from mvgraph.sql.lexer import Kind, lex


@dataclass(frozen=True, slots=True)
class Attached:
    """One statement that gives the new relation something the old one has. ``index``: for a
    statement that creates an index (also one behind a PRIMARY KEY / UNIQUE / EXCLUDE
    constraint), (the temporary name it is created under, the original name it takes at the
    swap), both in the new relation's schema; None otherwise. ``statistics``: likewise for a
    statistics object, (its schema, temporary name, original name)."""

    part: str  # one of PARTS
    statement: sql.Composable
    index: tuple[str, str] | None = None
    statistics: tuple[str, str, str] | None = None


# In the order attached_ddl emits them: the owner before the grants (REVOKE from the owner,
# then the original ACL), indexes before the replica identity that may name one.
ORDER: Final = ("options", "primary_key", "indexes", "constraints", "foreign_keys", "triggers",
                "rules", "policies", "statistics", "replica_identity", "comments", "owner",
                "grants")
PARTS = frozenset(ORDER)


def attached_ddl(conn: Conn, relation: int, new: QualifiedName, job: int, *,
                 include: frozenset[str],
                 renames: dict[QualifiedName, QualifiedName] | None = None) -> list[Attached]:
    """Statements that give the relation ``new`` what ``relation`` has attached, for the parts
    named in ``include`` (see PARTS), in an order that runs; index names are
    ``temp_name(original, job)``. ``renames``: other relations to point server-written text
    at (the closure's other members, for a rule or policy that reads them); the relation
    itself is always renamed to ``new``."""
    unknown = include - PARTS
    if unknown:
        raise ValueError(f"unknown parts: {', '.join(sorted(unknown))}")
    with qualified_names(conn):
        facts = one(conn, "rb_attached_relation", oid=relation)
        old = (str(facts["schema"]), str(facts["name"]))
        target = _Target(conn, relation, new, job, include, {**(renames or {}), old: new},
                         facts)
        return [a for part in ORDER if part in include for a in _BUILDERS[part](target)]


_KEYWORDS: Final = {"r": "TABLE", "p": "TABLE", "m": "MATERIALIZED VIEW", "v": "VIEW"}


@dataclass
class _Target:
    """The relation read, the one to build, and the catalog rows read so far."""

    conn: Conn
    oid: int
    new: QualifiedName
    job: int
    include: frozenset[str]
    renames: dict[QualifiedName, QualifiedName]
    facts: dict[str, Any]
    _read: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def rows(self, name: str) -> list[dict[str, Any]]:
        """The rows of a named query about the relation (read once)."""
        if name not in self._read:
            self._read[name] = rows(self.conn, name, oid=self.oid)
        return self._read[name]

    def alter(self, action: sql.Composable, keyword: str | None = None) -> sql.Composed:
        """``ALTER <TABLE|VIEW|MATERIALIZED VIEW> new <action>``."""
        word = keyword or _KEYWORDS.get(self.facts["kind"], "TABLE")
        return sql.SQL("ALTER {} {} {}").format(sql.SQL(word), self.ident, action)

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(*self.new)

    def server(self, text: str, *, alias: bool = False) -> sql.SQL:
        """Server-written text pointed at the new relations."""
        return sql.SQL(rename_relations(text, self.renames, alias=alias))

    def comment(self, what: sql.Composable, text: str | None) -> list[Attached]:
        """``COMMENT ON what IS 'text'`` when there is a comment and comments are asked for."""
        if text is None or "comments" not in self.include:
            return []
        return [Attached("comments", sql.SQL("COMMENT ON {} IS {}").format(
            what, sql.Literal(text)))]

    def on_new(self, keyword: str, name: str) -> sql.Composed:
        """``<keyword> name ON new`` (a constraint, trigger, rule or policy of it)."""
        return sql.SQL("{} {} ON {}").format(sql.SQL(keyword), sql.Identifier(name), self.ident)


def _options(t: _Target) -> list[Attached]:
    """Storage parameters (view options for a view), TOAST ones, column options and
    statistics targets, a view's column defaults."""
    settings = _settings(t.facts["options"]) + _settings(t.facts["toast_options"], "toast")
    out = [t.alter(sql.SQL("SET ({})").format(sql.SQL(", ").join(settings)))] if settings else []
    for c in t.rows("rb_column_facts"):
        column = sql.SQL("ALTER COLUMN {} ").format(sql.Identifier(c["name"]))
        if c["options"]:
            out.append(t.alter(column + sql.SQL("SET ({})").format(
                sql.SQL(", ").join(_settings(c["options"])))))
        if c["stattarget"] is not None:
            out.append(t.alter(column + sql.SQL("SET STATISTICS {}").format(
                sql.Literal(c["stattarget"]))))
        if c["view_default"] is not None:
            out.append(t.alter(column + sql.SQL("SET DEFAULT {}").format(
                t.server(c["view_default"], alias=True))))
    return [Attached("options", s) for s in out]


def _settings(options: list[str], prefix: str | None = None) -> list[sql.Composable]:
    """``key = 'value'`` items of a reloptions array (``prefix.key`` for TOAST's)."""
    out: list[sql.Composable] = []
    for option in options:
        key, _, value = option.partition("=")
        name = sql.Identifier(prefix, key) if prefix else sql.Identifier(key)
        out.append(sql.SQL("{} = {}").format(name, sql.Literal(value)))
    return out


def _constraints_of(t: _Target, *types: str) -> list[dict[str, Any]]:
    return [c for c in t.rows("rb_constraints") if c["type"] in types]


def _primary_key(t: _Target) -> list[Attached]:
    """The primary key, its index under a temporary name."""
    return [a for c in _constraints_of(t, "p") for a in _indexed_constraint(t, c, "primary_key")]


def _indexes(t: _Target) -> list[Attached]:
    """UNIQUE and EXCLUDE constraints, then every index that backs no constraint."""
    out = [a for c in _constraints_of(t, "u", "x") for a in _indexed_constraint(t, c, "indexes")]
    for index in t.rows("rb_indexes"):
        temp = temp_name(index["name"], t.job)
        text = _index_definition(index["definition"], temp)
        out.append(Attached("indexes", t.server(text), index=(temp, index["name"])))
        out += _clustered(t, index["clustered"], temp, "indexes")
        out += t.comment(sql.SQL("INDEX {}").format(sql.Identifier(t.new[0], temp)),
                         index["comment"])
    return out


def _indexed_constraint(t: _Target, c: dict[str, Any], part: str) -> list[Attached]:
    """A PRIMARY KEY / UNIQUE / EXCLUDE constraint named (with its index) temporarily."""
    temp = temp_name(c["index"], t.job)
    add = t.alter(sql.SQL("ADD CONSTRAINT {} {}").format(sql.Identifier(temp),
                                                          t.server(c["definition"])), "TABLE")
    return [Attached(part, add, index=(temp, c["index"])),
            *_clustered(t, c["clustered"], temp, part),
            *t.comment(t.on_new("CONSTRAINT", temp), c["comment"])]


def _clustered(t: _Target, clustered: bool, index: str, part: str) -> list[Attached]:
    if not clustered:
        return []
    return [Attached(part, t.alter(sql.SQL("CLUSTER ON {}").format(sql.Identifier(index))))]


def _index_definition(text: str, temp: str) -> str:
    """``CREATE [UNIQUE] INDEX name ON [ONLY] s.t ...`` with ``temp`` for the name and without
    ONLY (an index of a partitioned table is made on its partitions too)."""
    lexemes = lex(text)
    words = [text[x.start:x.end].lower() if x.kind is Kind.WORD else "" for x in lexemes]
    at = words.index("index") + 1  # pg_get_indexdef writes no CONCURRENTLY / IF NOT EXISTS
    name, on = lexemes[at], lexemes[at + 1]
    after = lexemes[at + 2].end if words[at + 2] == "only" else on.end
    return (text[:name.start] + sql.Identifier(temp).as_string(None) + text[name.end:on.end]
            + text[after:])


def _check_constraints(t: _Target) -> list[Attached]:
    """CHECK constraints (LIKE copies none without INCLUDING CONSTRAINTS), as they are:
    NOT VALID / NO INHERIT / NOT ENFORCED kept."""
    out = []
    for c in _constraints_of(t, "c"):
        out.append(Attached("constraints", t.alter(sql.SQL("ADD CONSTRAINT {} {}").format(
            sql.Identifier(c["name"]), t.server(c["definition"])))))
        out += t.comment(t.on_new("CONSTRAINT", c["name"]), c["comment"])
    return out


def _foreign_keys(t: _Target) -> list[Attached]:
    """The relation's own foreign keys: added NOT VALID, then validated (one that is not
    valid, or not enforced, stays so)."""
    out = []
    for c in _constraints_of(t, "f"):
        name = sql.Identifier(c["name"])
        check = c["valid"] and c["enforced"]
        add = sql.SQL("ADD CONSTRAINT {} {}{}").format(name, t.server(c["definition"]),
                                                       sql.SQL(" NOT VALID" if check else ""))
        out.append(Attached("foreign_keys", t.alter(add, "TABLE")))
        if check:
            out.append(Attached("foreign_keys", t.alter(
                sql.SQL("VALIDATE CONSTRAINT {}").format(name), "TABLE")))
        out += t.comment(t.on_new("CONSTRAINT", c["name"]), c["comment"])
    return out


_ENABLE: Final = {"D": "DISABLE", "R": "ENABLE REPLICA", "A": "ENABLE ALWAYS"}  # 'O': default


def _triggers(t: _Target) -> list[Attached]:
    """User triggers, disabled or replica/always as they are."""
    return [a for row in t.rows("rb_triggers") for a in _event_object(t, row, "TRIGGER")]


def _rules(t: _Target) -> list[Attached]:
    """Rules but a view's own _RETURN, enabled as they are."""
    return [a for row in t.rows("rb_rules") for a in _event_object(t, row, "RULE")]


def _event_object(t: _Target, row: dict[str, Any], keyword: str) -> list[Attached]:
    """A trigger or a rule from its definition, its enabled state and comment."""
    part = "triggers" if keyword == "TRIGGER" else "rules"
    text = str(row["definition"]).rstrip().removesuffix(";")
    out = [Attached(part, t.server(text, alias=keyword == "RULE"))]
    if row["enabled"] in _ENABLE:
        out.append(Attached(part, t.alter(sql.SQL("{} {} {}").format(
            sql.SQL(_ENABLE[row["enabled"]]), sql.SQL(keyword), sql.Identifier(row["name"])),
            "TABLE")))
    return out + t.comment(t.on_new(keyword, row["name"]), row["comment"])


_COMMANDS: Final = {"*": "ALL", "r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE"}


def _policies(t: _Target) -> list[Attached]:
    """Row security: ENABLE / FORCE, and each policy."""
    out = [t.alter(sql.SQL(action), "TABLE") for flag, action in (
        ("row_security", "ENABLE ROW LEVEL SECURITY"),
        ("force_row_security", "FORCE ROW LEVEL SECURITY")) if t.facts[flag]]
    done = [Attached("policies", s) for s in out]
    for p in t.rows("rb_policies"):
        done.append(Attached("policies", _policy(t, p)))
        done += t.comment(t.on_new("POLICY", p["name"]), p["comment"])
    return done


def _policy(t: _Target, p: dict[str, Any]) -> sql.Composable:
    roles = sql.SQL(", ").join(sql.Identifier(r) if r is not None else sql.SQL("PUBLIC")
                               for r in p["roles"])
    text: sql.Composable = sql.SQL("CREATE POLICY {} ON {} AS {} FOR {} TO {}").format(
        sql.Identifier(p["name"]), t.ident,
        sql.SQL("PERMISSIVE" if p["permissive"] else "RESTRICTIVE"),
        sql.SQL(_COMMANDS[p["command"]]), roles)
    for key, clause in (("qual", " USING ({})"), ("with_check", " WITH CHECK ({})")):
        if p[key] is not None:
            expression = rename_qualifier(rename_relations(p[key], t.renames, alias=True),
                                          t.facts["name"], t.new[1])
            text += sql.SQL(clause).format(sql.SQL(expression))
    return text


def _statistics(t: _Target) -> list[Attached]:
    """Extended statistics objects, each under a temporary name in its schema."""
    out = []
    for s in t.rows("rb_statistics"):
        temp = temp_name(s["name"], t.job)
        name = sql.Identifier(s["schema"], temp)
        text = _statistics_definition(s["definition"], s["schema"], temp)
        out.append(Attached("statistics", t.server(text),
                            statistics=(s["schema"], temp, s["name"])))
        if s["stattarget"] is not None:
            out.append(Attached("statistics", sql.SQL("ALTER STATISTICS {} SET STATISTICS {}")
                                .format(name, sql.Literal(s["stattarget"]))))
        out += t.comment(sql.SQL("STATISTICS {}").format(name), s["comment"])
    return out


def _statistics_definition(text: str, schema: str, temp: str) -> str:
    """``CREATE STATISTICS s.name ...`` with ``s.temp`` for the name."""
    lexemes = lex(text)
    first = 2  # CREATE STATISTICS <name>
    last = first + 2 if text[lexemes[first + 1].start:lexemes[first + 1].end] == "." else first
    return (text[:lexemes[first].start] + sql.Identifier(schema, temp).as_string(None)
            + text[lexemes[last].end:])


def _replica_identity(t: _Target) -> list[Attached]:
    """REPLICA IDENTITY FULL / NOTHING / USING INDEX (the index's temporary name); tables
    only (a view or materialized view says 'n' and has none)."""
    mode = t.facts["replica_identity"] if t.facts["kind"] in ("r", "p") else "d"
    action: sql.Composable
    if mode == "i" and t.facts["replica_index"] is not None:
        action = sql.SQL("REPLICA IDENTITY USING INDEX {}").format(
            sql.Identifier(temp_name(t.facts["replica_index"], t.job)))
    elif mode in ("f", "n"):
        action = sql.SQL("REPLICA IDENTITY FULL" if mode == "f" else "REPLICA IDENTITY NOTHING")
    else:
        return []
    return [Attached("replica_identity", t.alter(action, "TABLE"))]


def _comments(t: _Target) -> list[Attached]:
    """The relation's comment and its columns' (those of other objects come with them)."""
    keyword = sql.SQL(_KEYWORDS.get(t.facts["kind"], "TABLE"))
    out = t.comment(sql.SQL("{} {}").format(keyword, t.ident), t.facts["comment"])
    for c in t.rows("rb_column_facts"):
        out += t.comment(sql.SQL("COLUMN {}").format(sql.Identifier(*t.new, c["name"])),
                         c["comment"])
    return out


def _owner(t: _Target) -> list[Attached]:
    return [Attached("owner", t.alter(sql.SQL("OWNER TO {}").format(
        sql.Identifier(t.facts["owner"]))))]


def _grants(t: _Target) -> list[Attached]:
    """The ACL of the relation and its columns. Where the relation has one, its owner's
    implicit rights are revoked first and granted back as the ACL says (grantors are not
    kept: each GRANT is the running role's)."""
    out = []
    if t.facts["has_acl"]:
        out.append(sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(
            t.ident, sql.Identifier(t.facts["owner"])))
    for g in t.rows("rb_grants"):
        columns = sql.SQL(" ({})").format(sql.Identifier(g["column"])) if g["column"] else None
        privileges = sql.SQL(", ").join(sql.SQL(_privilege(p)) + (columns or sql.SQL(""))
                                        for p in g["privileges"])
        grantee = sql.Identifier(g["grantee"]) if g["grantee"] else sql.SQL("PUBLIC")
        out.append(sql.SQL("GRANT {} ON TABLE {} TO {}{}").format(
            privileges, t.ident, grantee,
            sql.SQL(" WITH GRANT OPTION" if g["grantable"] else "")))
    return [Attached("grants", s) for s in out]


def _privilege(name: str) -> str:
    """A privilege keyword as aclexplode writes it (SELECT, TRUNCATE, MAINTAIN...)."""
    if not name.replace(" ", "").isalpha() or not name.isupper():
        raise ValueError(f"unexpected privilege {name!r}")
    return name


_BUILDERS: Final[dict[str, Callable[[_Target], list[Attached]]]] = {
    "options": _options, "primary_key": _primary_key, "indexes": _indexes,
    "constraints": _check_constraints, "foreign_keys": _foreign_keys, "triggers": _triggers,
    "rules": _rules, "policies": _policies, "statistics": _statistics,
    "replica_identity": _replica_identity, "comments": _comments, "owner": _owner,
    "grants": _grants}
