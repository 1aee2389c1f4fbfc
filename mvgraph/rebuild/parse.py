"""Read ``[ASYNC] REBUILD TABLE ...``, ``[ASYNC] REBUILD MATERIALIZED VIEW ... AS query`` and
``mvgraph rebuild --action`` text into the forms of :mod:`mvgraph.rebuild.spec`.

Structure comes from :func:`mvgraph.sql.lexer.lex` (a string, dollar quote, quoted identifier or
comment is one lexeme, so its commas and parentheses are its own); types, expressions,
definitions and queries are slices of the caller's text. A ``;`` may only end the text: what
follows one would be another statement.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final, Literal

from mvgraph.errors import SqlParseError
from mvgraph.rebuild.spec import (
    Action,
    AddColumn,
    AlterPrimaryKey,
    AlterType,
    DropDefault,
    DropNotNull,
    PartitionBy,
    RebuildParams,
    RebuildStatement,
    SetDefault,
    SetNotNull,
    SetStorage,
)
from mvgraph.sql.lexer import Kind, Lexeme, lex

__all__ = ["ACTIONS", "parse_actions", "parse_rebuild"]

#: The accepted actions, as the messages (and ``mvgraph rebuild --action``'s help) list them.
ACTIONS: Final = ("ADD [COLUMN] c <type ...>; ALTER [COLUMN] c [SET DATA] TYPE <type> [USING "
                  "<expr>]; ALTER [COLUMN] c {SET DEFAULT <expr> | DROP DEFAULT | SET NOT NULL | "
                  "DROP NOT NULL}; ALTER PRIMARY KEY (c, ...); TO [LOGICAL] PARTITION BY "
                  "{LIST | RANGE | HASH} (c, ...); SET (param [= value], ...)")
_CONSTRAINTS: Final = {"CONSTRAINT", "PRIMARY", "UNIQUE", "CHECK", "FOREIGN", "EXCLUDE"}
_ASCII_LOWER: Final = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_GUC: Final = "rebuild_guc_"
_METHODS: Final[dict[str, Literal["list", "range", "hash"]]] = {
    "LIST": "list", "RANGE": "range", "HASH": "hash"}
_SIMPLE: Final[dict[tuple[str, ...], Callable[[str], Action]]] = {
    ("DROP", "DEFAULT"): DropDefault, ("SET", "NOT", "NULL"): SetNotNull,
    ("DROP", "NOT", "NULL"): DropNotNull}
_DEPTH: Final = {Kind.OPEN: 1, Kind.CLOSE: -1}
_UNCLOSED: Final = {Kind.STRING: "string", Kind.IDENT: "quoted name", Kind.DOLLAR: "$$ quote",
                    Kind.COMMENT: "/* comment"}
_Param = tuple[str, Sequence[Lexeme] | None]


class _Source:
    """The text being parsed, its lexemes (comments left out) and its errors."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.all = lex(text)
        self.lexemes = [x for x in self.all if x.kind is not Kind.COMMENT]

    def raw(self, x: Lexeme) -> str:
        return self.text[x.start : x.end]

    def sql(self, xs: Sequence[Lexeme]) -> str:
        """The text from the first lexeme to the last, as written."""
        return self.text[xs[0].start : xs[-1].end] if xs else ""

    def words(self, xs: Sequence[Lexeme]) -> list[str]:
        """Each lexeme upper-cased if it is a bare word, else ''."""
        return [self.raw(x).upper() if x.kind is Kind.WORD else "" for x in xs]

    def error(self, message: str) -> SqlParseError:
        return SqlParseError(f"syntax error: {message}",
                             statement=self.text.strip().split("\n", 1)[0])

    def shown(self, xs: Sequence[Lexeme]) -> str:
        """Some lexemes on one short line, for a message."""
        text = " ".join(self.sql(xs).split())
        return text if len(text) <= 60 else text[:57] + "..."

    def found(self, xs: Sequence[Lexeme]) -> str:
        """What was found instead, for a message: the lexemes quoted, or nothing."""
        return repr(self.shown(xs)) if xs else "nothing"

    def checked(self) -> list[Lexeme]:
        """The lexemes, without a final ``;``; an unterminated quote or a second statement is an
        error."""
        unclosed = next((x for x in self.all if not x.closed), None)
        if unclosed is not None:
            raise self.error(f"unterminated {_UNCLOSED.get(unclosed.kind, 'text')} "
                             f"{self.shown([unclosed])!r}: close it")
        xs = self.lexemes
        for i, x in enumerate(xs):
            if x.kind is Kind.META:
                raise self.error(f"unexpected {self.shown([x])}: a backslash is not SQL here")
            if x.kind is Kind.SEMICOLON and i != len(xs) - 1:
                raise self.error(f"text after ';' ({self.shown(xs[i + 1:])}): give one "
                                 "statement, without the ';' inside")
        return xs[:-1] if xs and xs[-1].kind is Kind.SEMICOLON else xs

    def ident(self, x: Lexeme | None, what: str) -> str:
        """One identifier: a bare word folded to lower case, or a "quoted" one."""
        raw = "" if x is None else self.raw(x)
        if x is not None and x.kind is Kind.WORD:
            return raw.translate(_ASCII_LOWER)
        if x is not None and x.kind is Kind.IDENT and raw.startswith('"') and len(raw) > 2:
            return raw[1:-1].replace('""', '"')
        found = repr(raw) if x is not None else "nothing"
        raise self.error(f"expected {what} (a name, or \"Quoted\"), found {found}")

    def close(self, xs: Sequence[Lexeme], i: int) -> int:
        """The index of the ``)`` that closes the ``(`` at ``i``."""
        depth = 0
        for j in range(i, len(xs)):
            depth += _DEPTH.get(xs[j].kind, 0)
            if depth == 0:
                return j
        raise self.error(f"unbalanced parentheses: '(' not closed in {self.shown(xs[i:])}")

    def split(self, xs: Sequence[Lexeme], what: str) -> list[Sequence[Lexeme]]:
        """``xs`` split at the commas outside parentheses; an empty item is an error."""
        items: list[Sequence[Lexeme]] = []
        depth, start = 0, 0
        for j, x in enumerate([*xs, None]):
            if x is not None and x.kind in _DEPTH:
                depth += _DEPTH[x.kind]
                if depth < 0:
                    raise self.error(f"unbalanced parentheses: ')' in {self.shown(xs)}")
            elif x is None or (depth == 0 and x.kind is Kind.OTHER and self.raw(x) == ","):
                if start == j:
                    raise self.error(f"empty {what} (two commas, or one at an end)")
                items.append(xs[start:j])
                start = j + 1
        if depth:
            raise self.error(f"unbalanced parentheses: '(' not closed in {self.shown(xs)}")
        return items


def parse_rebuild(text: str) -> RebuildStatement | None:
    """The rebuild ``text`` asks for; None when it is not a rebuild statement.

    >>> parse_rebuild("ASYNC REBUILD TABLE s.T ALTER PRIMARY KEY (a);")  # doctest: +ELLIPSIS
    RebuildStatement(kind='table', schema='s', name='t', ...actions=(AlterPrimaryKey(...
    >>> parse_rebuild("REBUILD MATERIALIZED VIEW v AS SELECT 1").query
    'SELECT 1'
    >>> parse_rebuild("REFRESH MATERIALIZED VIEW v") is None
    True

    Raises:
        SqlParseError: a malformed rebuild statement (the message says what to write).
    """
    src = _Source(text)
    head = src.words(src.lexemes[:2])
    asynchronous = head[:1] == ["ASYNC"]
    if head[int(asynchronous):][:1] != ["REBUILD"]:
        return None
    xs = src.checked()
    i = 1 + int(asynchronous)
    words = src.words(xs)
    kind: Literal["table", "materialized view"]
    if words[i : i + 1] == ["TABLE"]:
        kind, i = "table", i + 1
    elif words[i : i + 2] == ["MATERIALIZED", "VIEW"]:
        kind, i = "materialized view", i + 2
    else:
        raise src.error(f"REBUILD takes TABLE t action, ... or MATERIALIZED VIEW v AS query, not "
                        f"{src.found(xs[i:i + 2])}")
    if_exists = words[i : i + 2] == ["IF", "EXISTS"]
    i += 2 * int(if_exists)
    schema, name, i = _name(src, xs, i)
    params = RebuildParams()
    if words[i : i + 1] == ["WITH"]:
        if i + 1 >= len(xs) or xs[i + 1].kind is not Kind.OPEN:
            raise src.error("WITH takes parameters in parentheses: WITH (keep_source, ...)")
        end = src.close(xs, i + 1)
        params = _rebuild_params(src, xs[i + 2 : end], kind)
        i = end + 1
    rest = xs[i:]
    is_as = words[i : i + 1] == ["AS"]
    if kind == "table":
        if is_as:
            raise src.error("AS query rebuilds a materialized view (REBUILD MATERIALIZED VIEW v "
                            f"AS ...); a table takes actions: {ACTIONS}")
        return RebuildStatement(kind, schema, name, params, _actions(src, rest), None,
                                if_exists, asynchronous)
    if not is_as or len(rest) < 2:
        found = f", found {src.shown(rest)!r}" if rest and not is_as else ""
        raise src.error(f"a materialized view is rebuilt from its new query: write REBUILD "
                        f"MATERIALIZED VIEW {name} AS SELECT ...{found}")
    return RebuildStatement(kind, schema, name, params, (), src.sql(rest[1:]), if_exists,
                            asynchronous)


def parse_actions(text: str) -> tuple[Action, ...]:
    """The actions of ``text`` (``mvgraph rebuild t --action "..."``), comma-separated.

    >>> parse_actions("ALTER x TYPE int, DROP DEFAULT")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    mvgraph.errors.SqlParseError: <sql>:0: syntax error: unknown action 'DROP DEFAULT'; ...
    >>> parse_actions("ALTER x TYPE numeric(10,2) USING round(x, 2)")
    (AlterType(column='x', type_sql='numeric(10,2)', using_sql='round(x, 2)'),)

    Raises:
        SqlParseError: no action, or a malformed or unknown one.
    """
    src = _Source(text)
    return _actions(src, src.checked())


def _name(src: _Source, xs: Sequence[Lexeme], i: int) -> tuple[str | None, str, int]:
    """``name`` or ``schema.name`` at ``i``: (schema, name, the index after it)."""
    first = src.ident(xs[i] if i < len(xs) else None, "the name to rebuild")
    dotted = i + 1 < len(xs) and src.raw(xs[i + 1]) == "."
    if not dotted:
        return None, first, i + 1
    second = src.ident(xs[i + 2] if i + 2 < len(xs) else None, "a name after the '.'")
    if i + 3 < len(xs) and src.raw(xs[i + 3]) == ".":
        raise src.error("name the relation as schema.name (no database part)")
    return first, second, i + 3


def _params(src: _Source, xs: Sequence[Lexeme], what: str) -> list[_Param]:
    """``param [= value], ...``: each name folded (``a.b`` for a namespaced one) and its value's
    lexemes (one word, number or string, or a signed number); None when it has none."""
    out: list[_Param] = []
    for item in src.split(xs, f"parameter in {what} (...)"):
        eq = next((j for j, x in enumerate(item) if src.raw(x) == "="), len(item))
        names = [src.ident(x, f"a parameter name in {what} (...)") if j % 2 == 0 else src.raw(x)
                 for j, x in enumerate(item[:eq])]
        if len(names) % 2 == 0 or any(n != "." for n in names[1::2]):
            raise src.error(f"expected param [= value] in {what} (...), found "
                            f"{src.shown(item)!r}")
        value = item[eq + 1 :] if eq < len(item) else None
        signed = value is not None and len(value) == 2 and src.raw(value[0]) in ("-", "+") \
            and value[1].kind is Kind.NUMBER
        if value is not None and not signed and (len(value) != 1 or value[0].kind not in (
                Kind.WORD, Kind.NUMBER, Kind.STRING)):
            raise src.error(f"the value of {''.join(names)} in {what} (...) is one word, number "
                            f"or 'string', not {src.found(value)}")
        out.append(("".join(names), value))
    return out


def _rebuild_params(src: _Source, xs: Sequence[Lexeme], kind: str) -> RebuildParams:
    """The ``WITH (...)`` of a rebuild: keep_source, binlog_mode, rebuild_guc_<name> = 'v'."""
    flags: dict[str, bool] = {}
    gucs: list[tuple[str, str]] = []
    extra: list[tuple[str, str | None]] = []
    for name, value in _params(src, xs, "WITH"):
        if kind != "table" and name != "keep_source" and not name.startswith(_GUC):
            raise src.error(f"WITH ({name}) is for tables; a materialized view's rebuild takes "
                            "keep_source and rebuild_guc_<name> = 'value'")
        text = None if value is None else _value(src, value, name)
        if name in ("keep_source", "binlog_mode"):
            if text is not None:
                raise src.error(f"{name} takes no value: write WITH ({name})")
            flags[name] = True
        elif name.startswith(_GUC) and len(name) > len(_GUC):
            if text is None:
                raise src.error(f"{name} needs a value: {name} = 'value'")
            gucs.append((name[len(_GUC) :], text))
        else:
            extra.append((name, text))
    return RebuildParams(flags.get("keep_source", False), flags.get("binlog_mode", False),
                         tuple(gucs), tuple(extra))


def _value(src: _Source, xs: Sequence[Lexeme], name: str) -> str:
    """A parameter's value without quotes (a plain '...' string's pieces joined)."""
    raw = src.sql(xs)
    if xs[0].kind is not Kind.STRING:
        return raw
    body = raw[1:] if raw[:1] in "nN" else raw
    if not body.startswith("'"):
        raise src.error(f"write the value of {name} as a plain 'string', not {raw!r}")
    pieces, i = [], 0
    while i < len(body):
        if body.startswith("--", i):  # a comment between the pieces of a continued string
            i = body.index("\n", i)
        elif body[i] != "'":
            i += 1
        else:
            j = i + 1
            while body.startswith("''", k := body.index("'", j)):
                j = k + 2
            pieces.append(body[i + 1 : k].replace("''", "'"))
            i = k + 1
    return "".join(pieces)


def _actions(src: _Source, xs: Sequence[Lexeme]) -> tuple[Action, ...]:
    if not xs:
        raise src.error(f"no action given; a table's rebuild takes one or more of: {ACTIONS}")
    return tuple(_action(src, item) for item in src.split(xs, "action"))


def _action(src: _Source, xs: Sequence[Lexeme]) -> Action:
    words = src.words(xs)
    if words[0] == "ADD":
        return _add(src, xs[1:])
    if words[0] == "ALTER" and words[1:3] == ["PRIMARY", "KEY"]:
        return AlterPrimaryKey(_columns(src, xs[3:], "ALTER PRIMARY KEY"))
    if words[0] == "ALTER":
        return _alter(src, xs[1:])
    if words[0] == "TO":
        return _partition(src, xs[1:])
    if words[0] == "SET" and len(xs) > 1 and xs[1].kind is Kind.OPEN \
            and src.close(xs, 1) == len(xs) - 1:
        return SetStorage(tuple((n, None if v is None else src.sql(v))
                                for n, v in _params(src, xs[2:-1], "SET")))
    raise src.error(f"unknown action {src.shown(xs)!r}; a rebuild takes: {ACTIONS} (anything "
                    "else: ALTER TABLE)")


def _add(src: _Source, xs: Sequence[Lexeme]) -> AddColumn:
    words = src.words(xs)
    if words[:1] and words[0] in _CONSTRAINTS:
        key = " KEY" if words[0] in ("PRIMARY", "FOREIGN") else ""
        raise src.error(f"ADD {words[0]}{key} adds a constraint, not a column: rebuild the "
                        "primary key with ALTER PRIMARY KEY (c, ...), add other constraints "
                        "with ALTER TABLE")
    i = int(words[:1] == ["COLUMN"])
    if words[i : i + 3] == ["IF", "NOT", "EXISTS"]:
        raise src.error("ADD COLUMN IF NOT EXISTS has no place in a rebuild: name a new column")
    column = src.ident(xs[i] if i < len(xs) else None, "the new column's name")
    if i + 1 >= len(xs):
        raise src.error(f"ADD COLUMN {column} needs a type: ADD COLUMN {column} text [NOT NULL "
                        "DEFAULT ...]")
    return AddColumn(column, src.sql(xs[i + 1 :]))


def _alter(src: _Source, xs: Sequence[Lexeme]) -> Action:
    words = src.words(xs)
    i = int(words[:1] == ["COLUMN"])
    column = src.ident(xs[i] if i < len(xs) else None, "the column to alter")
    rest, words = xs[i + 1 :], words[i + 1 :]
    if words[:3] == ["SET", "DATA", "TYPE"] or words[:1] == ["TYPE"]:
        body = rest[3:] if words[0] == "SET" else rest[1:]
        depth, using = 0, len(body)
        for j, x in enumerate(body):
            depth += _DEPTH.get(x.kind, 0)
            if depth == 0 and x.kind is Kind.WORD and src.raw(x).upper() == "USING":
                using = j
                break
        if using == 0 or using == len(body) - 1:
            raise src.error(f"ALTER COLUMN {column} TYPE needs a type [and USING an expression]: "
                            f"ALTER COLUMN {column} TYPE bigint [USING {column}::bigint]")
        return AlterType(column, src.sql(body[:using]), src.sql(body[using + 1 :]) or None)
    if words[:2] == ["SET", "DEFAULT"] and len(rest) > 2:
        return SetDefault(column, src.sql(rest[2:]))
    simple = _SIMPLE.get(tuple(words))
    if simple is not None:
        return simple(column)
    raise src.error(f"ALTER COLUMN {column} takes [SET DATA] TYPE <type> [USING <expr>], SET "
                    f"DEFAULT <expr>, DROP DEFAULT, SET NOT NULL or DROP NOT NULL, not "
                    f"{src.found(rest)}")


def _partition(src: _Source, xs: Sequence[Lexeme]) -> PartitionBy:
    words = src.words(xs)
    logical = words[:1] == ["LOGICAL"]
    head = "TO LOGICAL PARTITION" if logical else "TO PARTITION"
    words = words[int(logical) :]
    if words[:1] != ["PARTITION"] or (words[1:2] != ["BY"] and len(words) > 1):
        raise src.error(f"expected {head} BY LIST (col), found TO {src.shown(xs)!r}")
    if len(words) == 1:
        raise src.error(f"{head} needs the partition key: write {head} BY LIST (col)")
    method = _METHODS.get(words[2] if len(words) > 2 else "")
    if method is None:
        raise src.error(f"{head} BY takes LIST, RANGE or HASH (col, ...)")
    columns = _columns(src, xs[int(logical) + 3 :], f"PARTITION BY {method.upper()}")
    return PartitionBy(method, columns, logical)


def _columns(src: _Source, xs: Sequence[Lexeme], what: str) -> tuple[str, ...]:
    """``(a, "B", ...)``: the whole of ``xs``, column names only."""
    if not xs or xs[0].kind is not Kind.OPEN or src.close(xs, 0) != len(xs) - 1 or len(xs) < 3:
        raise src.error(f"{what} takes column names in parentheses: {what} (a, b), not "
                        f"{src.found(xs)}")
    items = src.split(xs[1:-1], f"column in {what} (...)")
    if any(len(item) != 1 for item in items):
        raise src.error(f"{what} takes column names, not expressions: {what} (a, b)")
    return tuple(src.ident(item[0], f"a column name in {what} (...)") for item in items)
