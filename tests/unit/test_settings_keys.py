"""Issue 18 item 14: the settings' keys and defaults come from one place."""

from __future__ import annotations

from mvgraph.refresh.service import SETTINGS
from mvgraph.settingkeys import SETTINGS as KEYS
from mvgraph.settingkeys import markdown_table
from mvgraph.tracking.wal import DEFAULT_MAX_LAG
from tests.conftest import ROOT


def test_documented_table_is_the_one_from_the_code() -> None:
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    block = text.split("<!-- settings:begin -->\n", 1)[1].split("\n<!-- settings:end -->", 1)[0]
    assert block == markdown_table()


def test_every_key_has_a_default_and_the_service_lists_the_same_keys() -> None:
    assert list(SETTINGS) == list(KEYS)
    assert all(s.default is not None or s.default_from for s in KEYS.values())
    assert KEYS["wal_slot_max_lag"].default == DEFAULT_MAX_LAG
