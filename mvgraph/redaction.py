"""Keeping passwords out of messages, logs and tracebacks (SPEC section 7).

:func:`scrub` is the one helper: it removes URI credentials (``scheme://user:pw@``),
``password=...`` settings and every password mvgraph has seen (each DSN it resolved, and
``PGPASSWORD``) from arbitrary text. The CLI applies it to every error line and traceback, and
:class:`ScrubFilter` to every record of mvgraph's loggers and of the handlers the CLI installs.

Only the standard library is imported here: errors, the CLI and logging use it cheaply.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from urllib.parse import quote, unquote

MASK = "***"

#: ``scheme://user:password@``: the password part, up to the ``@`` that ends the user info.
_URI_CREDENTIALS = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:'\"]*):[^\s@]*@")
#: ``password=value`` (or ``sslpassword``, the key's passphrase) in a conninfo string or URI
#: query; the value quoted or up to a blank.
_PASSWORD_SETTING = re.compile(
    r"(\b(?:ssl)?password\s*=\s*)(?:'(?:[^'\\]|\\.)*'?|\"(?:[^\"\\]|\\.)*\"?|[^\s&]+)",
    re.IGNORECASE)
#: In a DSN: the URI's user info (libpq ends it at the first ``@`` or ``/``).
_URI_USERINFO = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.-]*://([^@/]*)@")
_CONNINFO_PASSWORD = re.compile(r"\b(?:ssl)?password\s*=\s*('(?:[^'\\]|\\.)*'?|[^\s]+)",
                                re.IGNORECASE)

_known: set[str] = set()
_lock = threading.Lock()


def dsn_passwords(dsn: str | None) -> set[str]:
    """Every spelling of the passwords a DSN carries (as written, decoded, quoted), parsable or
    not: a DSN libpq rejects is echoed in its error message.

    >>> sorted(dsn_passwords("postgresql://bob:p%40ss@db/app"))
    ['p%40ss', 'p@ss']
    >>> sorted(dsn_passwords("host=db password='a b'"))
    ['a b', 'a%20b']
    """
    found: set[str] = set()
    if not dsn:
        return found
    m = _URI_USERINFO.match(dsn)
    if m and ":" in m[1]:
        found.add(m[1].split(":", 1)[1])
    for m in _CONNINFO_PASSWORD.finditer(dsn):
        value = m[1]
        if value.startswith("'"):
            value = value[1:-1] if value.endswith("'") and len(value) > 1 else value[1:]
            found.add(value)
            value = re.sub(r"\\(.)", r"\1", value)
        found.add(value)
    decoded = {unquote(v) for v in found}
    found |= decoded | {quote(v, safe="") for v in decoded}
    found.discard("")
    return found


def remember(dsn: str | None) -> None:
    """Note the passwords of a DSN this process uses, so that :func:`scrub` removes them from
    any text later (a message echoing a DSN, a log line of another thread)."""
    found = dsn_passwords(dsn)
    if found:
        with _lock:
            _known.update(found)


def secrets(dsn: str | None = None) -> list[str]:
    """The passwords to remove: those remembered, ``dsn``'s and ``PGPASSWORD``; longest first
    (a password containing another is removed whole)."""
    with _lock:
        found = set(_known)
    found |= dsn_passwords(dsn)
    env = os.environ.get("PGPASSWORD")
    if env:
        found |= {env, quote(env, safe="")}
    return sorted(found, key=lambda s: (-len(s), s))


def scrub(text: str, dsn: str | None = None) -> str:
    """``text`` without credentials: URI passwords (``user:***@``), ``password=***`` settings,
    and every known password (``dsn``'s, those remembered, ``PGPASSWORD``) as ``***``.

    A password that is also an ordinary word is masked wherever the word appears: safety first.

    >>> scrub('invalid URI: "postgresql://bob:hunter2@db/app"')
    'invalid URI: "postgresql://bob:***@db/app"'
    >>> scrub("host=db password='a b' user=bob")
    'host=db password=*** user=bob'
    >>> scrub('unexpected spaces found in "x y"', "postgresql://bob:x y@db/app")
    'unexpected spaces found in "***"'
    """
    if not text:
        return text
    out = text
    for secret in secrets(dsn):  # first: a pattern could cut a known password in two
        out = out.replace(secret, MASK)
    out = _URI_CREDENTIALS.sub(rf"\1:{MASK}@", out)
    return _PASSWORD_SETTING.sub(rf"\1{MASK}", out)


class ScrubFilter(logging.Filter):
    """Scrubs each record's message and exception text (a logger or handler filter): the
    message is formatted once, scrubbed, and its arguments dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Scrub ``record`` in place; never drops it."""
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to logging's own error report
            return True
        record.msg, record.args = scrub(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


#: The loggers mvgraph logs on (a logger's filter sees only its own records, not its children's).
LOGGERS = ("mvgraph", "mvgraph.worker", "mvgraph.daemon")


def install(*handlers: logging.Handler) -> None:
    """Put a :class:`ScrubFilter` on mvgraph's loggers and on ``handlers`` (once each)."""
    targets: list[logging.Filterer] = [logging.getLogger(n) for n in LOGGERS]
    targets.extend(handlers)
    for target in targets:
        if not any(isinstance(f, ScrubFilter) for f in target.filters):
            target.addFilter(ScrubFilter())


install()  # importing this module (connect and errors do) protects mvgraph's own loggers
