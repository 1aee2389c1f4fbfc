"""PostgreSQL's lexing, as far as splitting a script into statements needs it.

The rules are those of the server's scanner (``src/backend/parser/scan.l``) and of psql's
(``src/fe_utils/psqlscan.l``), which decides where a statement of a script ends:

* ``--`` comments run to the end of the line, ``/* */`` comments nest;
* ``'...'`` doubles its quotes; with ``standard_conforming_strings`` off, a backslash escapes
  the next character too, as always in ``E'...'``; ``U&'...'``, ``B'...'`` and ``X'...'`` know
  no backslash escapes (and B/X strings no doubling); a string followed by whitespace holding a
  newline and another quote continues, in the same mode (``E'a'`` newline ``'\\''`` is one
  E-string);
* ``$tag$ ... $tag$`` (tag optional, case-sensitive), which an identifier character before the
  first ``$`` makes part of an identifier instead (``a$b$``); ``$1`` is a parameter;
* ``"..."`` identifiers double their quotes;
* a semicolon ends a statement outside a ``BEGIN ... END`` of a ``CREATE [OR REPLACE]
  FUNCTION/PROCEDURE`` (psql's rule: words outside parentheses, CASE nests inside); unlike
  psql, also inside unbalanced parentheses, as the server's grammar does, so that a broken
  statement does not swallow the ones after it;
* a backslash outside all of these starts a psql meta-command, which ends with its line,
  except ``\\;``, which separates statements like a semicolon (psql sends them together);
* ``SET standard_conforming_strings`` / ``RESET`` statements change how later ones are lexed.

Everything runs in time linear in the text (no backtracking pattern): each regular expression
here is a single character class repeated, matched at a known position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Final

__all__ = ["Kind", "Lexeme", "Piece", "Scanner", "lex", "split"]


class Kind(Enum):
    """What a lexeme is."""

    WORD = "word"  # identifier or keyword, unquoted
    IDENT = "ident"  # "quoted" or U&"quoted"
    STRING = "string"  # any quoted string constant (E, B, X, N, U& included)
    DOLLAR = "dollar"  # $tag$ ... $tag$
    NUMBER = "number"
    PARAM = "param"  # $1
    COMMENT = "comment"
    SEMICOLON = "semicolon"
    OPEN = "open"
    CLOSE = "close"
    META = "meta"  # a psql meta-command, to the end of its line
    OTHER = "other"  # any other character (operators, punctuation)


@dataclass(frozen=True, slots=True)
class Lexeme:
    """One lexeme: ``text[start:end]``; ``closed`` is False for an unterminated quote/comment."""

    kind: Kind
    start: int
    end: int
    closed: bool = True


@dataclass(frozen=True, slots=True)
class Piece:
    """A statement of a script: ``text[start:end]`` from its first lexeme to its last (without
    the semicolon), the 1-based line where it starts, and its lexemes (comments left out)."""

    start: int
    end: int
    line: int
    lexemes: tuple[Lexeme, ...]

    @property
    def meta(self) -> bool:
        """True for a psql meta-command line."""
        return bool(self.lexemes) and self.lexemes[0].kind is Kind.META


_SPACE: Final = " \t\n\r\f\v"
_HORIZ: Final = " \t\f\v"
_NEWLINE: Final = "\n\r"
_SPACES_RE: Final = re.compile(r"[ \t\n\r\f\v]*")
_IDENT_RE: Final = re.compile(r"[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_$\x80-\U0010ffff]*")
_DIGITS_RE: Final = re.compile(r"[0-9_]*")
_HEX_RE: Final = re.compile(r"[0-9A-Za-z_]*")
_DOLLAR_RE: Final = re.compile(r"\$(?:[A-Za-z_\x80-\U0010ffff][A-Za-z0-9_\x80-\U0010ffff]*)?\$")
_NOT_QUOTE_RE: Final = re.compile(r"[^']*")
_NOT_QUOTE_OR_BACKSLASH_RE: Final = re.compile(r"[^'\\]*")
_NOT_DQUOTE_RE: Final = re.compile(r"[^\"]*")
_COMMENT_MARK_RE: Final = re.compile(r"/\*|\*/")
_NOT_NEWLINE_RE: Final = re.compile(r"[^\n\r]*")


def _ident_start(char: str) -> bool:
    return (char.isascii() and (char.isalpha() or char == "_")) or char >= "\x80"


class Scanner:
    """Lexemes of a text, one at a time; ``standard_strings`` may change between them."""

    def __init__(self, text: str, standard_strings: bool) -> None:
        self.text = text
        self.pos = 0
        self.standard_strings = standard_strings

    def next(self) -> Lexeme | None:
        text, size = self.text, len(self.text)
        pos = _SPACES_RE.match(text, self.pos).end()  # type: ignore[union-attr]
        if pos >= size:
            self.pos = size
            return None
        char = text[pos]
        two = text[pos : pos + 2]
        kind = Kind.OTHER
        closed = True
        if two == "--":
            end = _NOT_NEWLINE_RE.match(text, pos).end()  # type: ignore[union-attr]
            kind = Kind.COMMENT
        elif two == "/*":
            end, closed = self._block_comment(pos)
            kind = Kind.COMMENT
        elif char == "'":
            end, closed = self._string(pos + 1, "q" if self.standard_strings else "e")
            kind = Kind.STRING
        elif char in "eE" and two[1:] == "'":
            end, closed = self._string(pos + 2, "e")
            kind = Kind.STRING
        elif char in "bBxX" and two[1:] == "'":
            end, closed = self._string(pos + 2, "b")
            kind = Kind.STRING
        elif char in "nN" and two[1:] == "'":
            end, closed = self._string(pos + 2, "q" if self.standard_strings else "e")
            kind = Kind.STRING
        elif char in "uU" and text.startswith("&'", pos + 1):
            end, closed = self._string(pos + 3, "q")
            kind = Kind.STRING
        elif char in "uU" and text.startswith('&"', pos + 1):
            end, closed = self._quoted_ident(pos + 3)
            kind = Kind.IDENT
        elif char == '"':
            end, closed = self._quoted_ident(pos + 1)
            kind = Kind.IDENT
        elif _ident_start(char):
            end = _IDENT_RE.match(text, pos).end()  # type: ignore[union-attr]
            kind = Kind.WORD
        elif char == "$":
            tag = _DOLLAR_RE.match(text, pos)
            if tag is not None:
                close = text.find(tag.group(), tag.end())
                closed = close >= 0
                end = close + len(tag.group()) if closed else size
                kind = Kind.DOLLAR
            elif text[pos + 1 : pos + 2].isdigit() and text[pos + 1].isascii():
                end = _DIGITS_RE.match(text, pos + 1).end()  # type: ignore[union-attr]
                kind = Kind.PARAM
            else:
                end = pos + 1
        elif (char.isascii() and char.isdigit()) or (char == "." and text[pos + 1 : pos + 2]
                                                    .isdigit() and text[pos + 1].isascii()):
            end = self._number(pos)
            kind = Kind.NUMBER
        elif char == ";":
            end, kind = pos + 1, Kind.SEMICOLON
        elif char == "(":
            end, kind = pos + 1, Kind.OPEN
        elif char == ")":
            end, kind = pos + 1, Kind.CLOSE
        elif two == "\\;":  # psql's \; ends a statement without sending it: both run
            end, kind = pos + 2, Kind.SEMICOLON
        elif char == "\\":
            nl = text.find("\n", pos)
            end, kind = (size if nl < 0 else nl), Kind.META
        else:
            end = pos + 1
        self.pos = end
        return Lexeme(kind, pos, end, closed)

    def _block_comment(self, pos: int) -> tuple[int, bool]:
        depth, pos = 1, pos + 2
        while True:
            mark = _COMMENT_MARK_RE.search(self.text, pos)
            if mark is None:
                return len(self.text), False
            pos = mark.end()
            depth += 1 if mark.group() == "/*" else -1
            if depth == 0:
                return pos, True

    def _string(self, pos: int, mode: str) -> tuple[int, bool]:
        """The end of a string whose body starts at ``pos``; mode q: quotes double, e: and
        backslashes escape, b: neither."""
        text, size = self.text, len(self.text)
        inner = _NOT_QUOTE_OR_BACKSLASH_RE if mode == "e" else _NOT_QUOTE_RE
        while True:
            pos = inner.match(text, pos).end()  # type: ignore[union-attr]
            if pos >= size:
                return size, False
            if text[pos] == "\\":  # mode e only
                if pos + 1 >= size:
                    return size, False
                pos += 2
                continue
            if mode != "b" and text.startswith("''", pos):
                pos += 2
                continue
            pos += 1  # after the closing quote
            further = self._continuation(pos)
            if further is None:
                return pos, True
            pos = further

    def _continuation(self, pos: int) -> int | None:
        """Where a string continues after its closing quote at ``pos - 1`` (scan.l's
        ``{quote}{whitespace_with_newline}{quote}``), else None."""
        text, size = self.text, len(self.text)
        while pos < size:  # horizontal whitespace and -- comments
            if text[pos] in _HORIZ:
                pos += 1
            elif text.startswith("--", pos):
                pos = _NOT_NEWLINE_RE.match(text, pos).end()  # type: ignore[union-attr]
            else:
                break
        if pos >= size or text[pos] not in _NEWLINE:
            return None
        pos += 1
        while pos < size:  # any whitespace, and comments followed by a newline
            if text[pos] in _SPACE:
                pos += 1
            elif text.startswith("--", pos):
                pos = _NOT_NEWLINE_RE.match(text, pos).end()  # type: ignore[union-attr]
                if pos >= size:
                    return None
            else:
                break
        if pos < size and text[pos] == "'":
            return pos + 1
        return None

    def _quoted_ident(self, pos: int) -> tuple[int, bool]:
        text, size = self.text, len(self.text)
        while True:
            pos = _NOT_DQUOTE_RE.match(text, pos).end()  # type: ignore[union-attr]
            if pos >= size:
                return size, False
            if text.startswith('""', pos):
                pos += 2
                continue
            return pos + 1, True

    def _number(self, pos: int) -> int:
        text, size = self.text, len(self.text)
        if text.startswith(("0x", "0X", "0o", "0O", "0b", "0B"), pos):
            return _HEX_RE.match(text, pos + 2).end()  # type: ignore[union-attr]
        pos = _DIGITS_RE.match(text, pos).end()  # type: ignore[union-attr]
        if pos < size and text[pos] == "." and not text.startswith("..", pos):
            pos = _DIGITS_RE.match(text, pos + 1).end()  # type: ignore[union-attr]
        if pos < size and text[pos] in "eE":
            exp = pos + 1
            if exp < size and text[exp] in "+-":
                exp += 1
            if exp < size and text[exp].isascii() and text[exp].isdigit():
                pos = _DIGITS_RE.match(text, exp).end()  # type: ignore[union-attr]
        return pos


def lex(text: str, standard_strings: bool = True) -> list[Lexeme]:
    """All lexemes of ``text`` (whitespace left out), lexed with a fixed
    ``standard_conforming_strings``.

    Example:
        >>> text = "select E'\\\\';' -- c"
        >>> [text[x.start:x.end] for x in lex(text)]
        ['select', "E'\\\\';'", '-- c']
    """
    scanner = Scanner(text, standard_strings)
    out: list[Lexeme] = []
    while (lexeme := scanner.next()) is not None:
        out.append(lexeme)
    return out


_PSQL_WORDS: Final = {"create": "c", "function": "f", "procedure": "p", "or": "o",
                      "replace": "r"}


def split(text: str, standard_strings: bool = True) -> list[Piece]:
    """The statements of a script, split where psql would send them to the server.

    Example:
        >>> text = "select ';';\\n\\\\x\\nselect 2"
        >>> [(p.line, text[p.start:p.end]) for p in split(text)]
        [(1, "select ';'"), (2, '\\\\x'), (3, 'select 2')]
    """
    scanner = Scanner(text, standard_strings)
    pieces: list[Piece] = []
    current: list[Lexeme] = []
    parens = begins = 0
    words: list[str] = []
    line, counted = 1, 0

    def finish() -> None:
        nonlocal line, counted, parens, begins
        if current:
            first = current[0].start
            line += text.count("\n", counted, first)
            counted = first
            pieces.append(Piece(first, current[-1].end, line, tuple(current)))
            setting = _standard_strings_set(text, current)
            if setting is not None:
                scanner.standard_strings = setting
        current.clear()
        words.clear()
        parens = begins = 0

    while (lexeme := scanner.next()) is not None:
        kind = lexeme.kind
        if kind is Kind.COMMENT:
            continue
        if kind is Kind.META:
            finish()
            current.append(lexeme)
            finish()
            continue
        if kind is Kind.SEMICOLON and begins == 0:
            finish()
            continue
        current.append(lexeme)
        if kind is Kind.OPEN:
            parens += 1
        elif kind is Kind.CLOSE:
            parens = max(0, parens - 1)
        elif kind is Kind.WORD:
            word = text[lexeme.start : lexeme.end].lower()
            words.append(_PSQL_WORDS.get(word, "") if len(words) < 4 else "")
            lead = "".join(w or "-" for w in words[:4])
            if parens == 0 and (lead.startswith(("cf", "cp")) or lead.startswith(("corf",
                                                                                  "corp"))):
                if word == "begin" or (word == "case" and begins >= 1):
                    begins += 1
                elif word == "end" and begins > 0:
                    begins -= 1
    finish()
    return pieces


_TRUE: Final = ("true", "yes", "on", "1")
_FALSE: Final = ("false", "no", "off", "0")


def _bool(value: str) -> bool | None:
    """PostgreSQL's parse_bool: unique prefixes of true/yes/false/no, on, off, 1, 0."""
    value = value.strip().lower()
    if not value:
        return None
    if value in ("on", "1") or any(w.startswith(value) for w in ("true", "yes")):
        return True
    if value in ("off", "of", "0") or any(w.startswith(value) for w in ("false", "no")):
        return False
    return None


def _standard_strings_set(text: str, lexemes: list[Lexeme]) -> bool | None:
    """The standard_conforming_strings a SET/RESET statement leaves, or None if it is not one
    (RESET and DEFAULT give the built-in default, on)."""
    lowered = [text[x.start : x.end].lower() for x in lexemes]
    if lowered[:1] == ["reset"]:
        return True if lowered[1:] in (["standard_conforming_strings"], ["all"]) else None
    if lowered[:1] != ["set"]:
        return None
    rest = lowered[1:]
    if rest[:1] in (["session"], ["local"]):
        rest = rest[1:]
    if len(rest) != 3 or rest[0] != "standard_conforming_strings" or rest[1] not in ("to", "="):
        return None
    value, raw = rest[2], text[lexemes[-1].start : lexemes[-1].end]
    kind = lexemes[-1].kind
    if kind is Kind.STRING and raw.startswith("'") and raw.endswith("'"):
        return _bool(raw[1:-1])
    if kind in (Kind.WORD, Kind.NUMBER):
        return True if value == "default" else _bool(value)
    return None
