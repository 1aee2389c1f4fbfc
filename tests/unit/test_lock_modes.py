"""Lock mode words (ours and BDR's ddl_locking words) and the global lock's key."""

from __future__ import annotations

import pytest

from mvgraph.errors import UsageError
from mvgraph.refresh.executor import advisory_key
from mvgraph.refresh.locks import GLOBAL_LOCK_KEY, LockMode, job_of, parse_lock_mode


@pytest.mark.parametrize(("word", "mode"), [
    ("view", LockMode.VIEW), ("dml", LockMode.VIEW), ("DML", LockMode.VIEW),
    ("global", LockMode.GLOBAL), ("on", LockMode.GLOBAL), (" On ", LockMode.GLOBAL),
    ("GLOBAL", LockMode.GLOBAL), ("off", LockMode.OFF), ("OFF\n", LockMode.OFF),
    ("", LockMode.VIEW), (None, LockMode.VIEW),
])
def test_our_words_and_bdrs_are_accepted_and_normalised(word: str | None,
                                                        mode: LockMode) -> None:
    assert parse_lock_mode(word) is mode
    assert parse_lock_mode(parse_lock_mode(word).value) is mode  # stored values parse again


@pytest.mark.parametrize("word", ["true", "yes", "1", "views", "dml,on", "o n", "on;", "glob"])
def test_other_words_are_refused_in_one_line(word: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_lock_mode(word)
    message = str(err.value)
    assert "\n" not in message and repr(word) in message
    assert "view (or dml), global (or on) or off" in message
    assert err.value.exit_code == 2


def test_the_global_key_is_no_views_key() -> None:
    assert advisory_key(0) == GLOBAL_LOCK_KEY  # oid 0 is InvalidOid: no relation has it
    assert all(advisory_key(oid) != GLOBAL_LOCK_KEY for oid in (1, 16384, 2**32 - 1))
    assert GLOBAL_LOCK_KEY >> 32 == 0x6D76 and GLOBAL_LOCK_KEY & 0xFFFFFFFF == 0


def test_the_job_of_a_session_comes_from_its_application_name() -> None:
    assert job_of("mvgraph job 42") == 42
    assert job_of("mvgraph job") is None
    assert job_of("mvgraph job 42x") is None
    assert job_of("psql") is None
