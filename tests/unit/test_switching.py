"""Worker and daemon processes hand the GIL on quickly; a lower interval is kept."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from mvgraph.jobs.worker import SWITCH_INTERVAL_S, quick_switching


@pytest.fixture()
def interval() -> Iterator[None]:
    before = sys.getswitchinterval()
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def test_the_default_interval_is_lowered(interval: None) -> None:
    sys.setswitchinterval(0.005)
    quick_switching()
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)


def test_a_lower_interval_is_never_raised(interval: None) -> None:
    sys.setswitchinterval(SWITCH_INTERVAL_S / 4)
    quick_switching()
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S / 4)
