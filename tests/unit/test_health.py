"""The daemon's health (``/healthz``) from its own state: its last heartbeat and failures."""

from __future__ import annotations

from mvgraph.scheduler.health import Health


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_healthy_only_while_the_last_heartbeat_is_recent_and_nothing_failed_since() -> None:
    clock = Clock()
    health = Health(10.0, clock)
    assert health.status() == (False, "database unreachable: no contact yet")
    health.lost()  # connecting failed at start
    assert health() is False
    health.beat()
    assert health.status() == (True, "ok: last database contact 0.0s ago")
    clock.now += 9.5
    assert health.status() == (True, "ok: last database contact 9.5s ago")
    clock.now += 1.0  # no heartbeat for longer than 10 s: a hung connection
    assert health.status() == (False, "database unreachable: last contact 10.5s ago (more "
                                      "than 10s)")
    health.beat()
    clock.now += 1.0
    health.lost()  # the server went away: unhealthy at once, not after 10 s
    clock.now += 2.0
    assert health.status() == (False, "database unreachable: a call failed 2.0s ago, last "
                                      "contact 3.0s ago")
    health.lost()  # a retry failing again keeps the first failure's time
    assert "a call failed 2.0s ago" in health.status()[1]
    health.beat()  # reconnected
    assert health() is True


def test_the_answer_names_no_server_and_no_error() -> None:
    health = Health()
    health.beat()
    health.lost()
    ok, line = health.status()
    assert not ok and "\n" not in line
    assert all(word not in line for word in ("host", "password", "postgresql://"))
