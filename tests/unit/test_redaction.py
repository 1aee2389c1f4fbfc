"""``scrub``: no password survives in text, whatever shape the DSN or the message has."""

from __future__ import annotations

import logging
import sys

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mvgraph.commands.render import one_line
from mvgraph.redaction import ScrubFilter, dsn_passwords, remember, scrub
from mvgraph.scheduler.daemon import DaemonConfig

PW = "S3cr3t-canary"


@pytest.mark.parametrize(("text", "dsn"), [
    (f'invalid URI: "postgresql://bob:{PW}@[h/db"', None),                  # libpq quotes it
    (f"postgres://bob:{PW}@db:5432/app?sslmode=require", None),
    (f"host=db user=bob password={PW} dbname=app", None),
    (f"host=db password='{PW} x' dbname=app", None),
    (f"host=db PASSWORD = {PW}", None),
    (f"postgresql://bob@db/app?password={PW}&sslmode=require", None),
    (f"host=db sslpassword={PW}", None),
    (f'unexpected spaces found in "{PW} x"', f"postgresql://bob:{PW} x@db/app"),
    (f'invalid percent-encoded token: "{PW}%zz"', f"postgresql://bob:{PW}%zz@db/app"),
    ('missing "=" after "S3cr3t%2Dcanary"', "postgresql://bob:S3cr3t%2Dcanary@db/app"),
    (f"plain mention of {PW} anywhere", f"host=db password={PW}"),
    (f"escaped: {PW}'x", f"host=db password='{PW}\\'x'"),
])
def test_scrub_removes_the_password(text: str, dsn: str | None) -> None:
    out = scrub(text, dsn)
    assert PW not in out and "S3cr3t%2Dcanary" not in out, out
    assert "***" in out


def test_scrub_keeps_everything_else() -> None:
    text = "cannot connect to user=bob dbname=app host=db port=5432: Connection refused"
    assert scrub(text, "postgresql://bob@db/app") == text
    assert scrub("postgresql://bob@db:5432/app") == "postgresql://bob@db:5432/app"
    assert scrub("password authentication failed for user \"bob\"") == \
        "password authentication failed for user \"bob\""
    assert scrub("") == ""


def test_dsn_passwords_reads_every_spelling() -> None:
    assert dsn_passwords("postgresql://bob:p%40ss@db/app") == {"p%40ss", "p@ss"}
    assert dsn_passwords("host=db password='a\\'b'") >= {"a'b", "a\\'b"}
    assert dsn_passwords("postgresql://bob@db/app") == set()
    assert dsn_passwords(None) == set() and dsn_passwords("") == set()


def test_remembered_and_environment_passwords_are_scrubbed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    remember("postgresql://bob:Remembered-9z@db/app")
    monkeypatch.setenv("PGPASSWORD", "From-env-7q")
    out = scrub("echo Remembered-9z and From-env-7q")
    assert out == "echo *** and ***"


@settings(max_examples=200, deadline=None)
@given(password=st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00@/"),
                        min_size=4, max_size=30),
       around=st.text(max_size=20))
@example(password="a b'c\\d", around="x")
def test_any_password_of_a_dsn_is_scrubbed_from_any_text(password: str, around: str) -> None:
    from urllib.parse import quote

    for dsn in (f"postgresql://bob:{quote(password, safe='')}@db/app",
                f"postgresql://bob:{password}@db/app",
                "host=db password='" + password.replace("\\", "\\\\").replace("'", "\\'") + "'"):
        for text in (f"{around}{password}{around}", f"{around} {dsn} {around}"):
            assert password not in scrub(text, dsn), (dsn, text)


def test_the_log_filter_scrubs_message_arguments_and_tracebacks() -> None:
    record = logging.LogRecord("mvgraph.worker", logging.WARNING, __file__, 1,
                               "database unavailable (%s)", (f"postgresql://u:{PW}@h/d",), None)
    try:
        raise RuntimeError(f"host=h password={PW}")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    assert ScrubFilter().filter(record)
    text = logging.Formatter().format(record)
    assert PW not in text and "RuntimeError" in text and "u:***@h" in text


def test_mvgraph_loggers_scrub_before_any_handler(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        for name in ("mvgraph", "mvgraph.worker", "mvgraph.daemon"):
            logging.getLogger(name).warning("connecting to %s", f"host=h password={PW}")
    assert PW not in caplog.text and caplog.text.count("password=***") == 3


def test_a_daemon_config_repr_has_no_dsn() -> None:
    assert PW not in repr(DaemonConfig(dsn=f"host=h password={PW}"))


def test_one_line_escapes_what_would_break_or_reorder_a_line() -> None:
    assert one_line("a\nb\r\tc\x1b[0m\u2028\u202e\u2066d") == \
        "a\\nb\\r\\tc\\x1b[0m\\u2028\\u202e\\u2066d"
    assert one_line("naïve ünïcode שלום 😀") == "naïve ünïcode שלום 😀"
