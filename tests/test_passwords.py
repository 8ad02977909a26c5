"""The lockout both logins share (web page, OPC UA server) after repeated failed logins."""

from __future__ import annotations

from flowedge.edge.passwords import FailedLogins, hash_password


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_within_the_window_lock_a_name_until_the_window_has_passed() -> None:
    clock = Clock()
    logins = FailedLogins(limit=3, window_s=60.0, clock=clock)
    assert not logins.failed("olga") and not logins.failed("olga")
    clock.now += 61  # the first two have aged out
    assert [logins.failed("olga") for _ in range(2)] == [False, False]
    assert logins.locked_for("olga") == 0
    assert logins.failed("olga")  # the third within a minute locks
    assert logins.locked_for("olga") == 60.0 and logins.locked_for("ernst") == 0
    clock.now += 59
    assert logins.locked_for("olga") == 1.0
    clock.now += 1
    assert logins.locked_for("olga") == 0


def test_a_success_clears_the_failures() -> None:
    logins = FailedLogins(limit=2, window_s=60.0, clock=Clock())
    assert not logins.failed("olga")
    logins.succeeded("olga")
    assert not logins.failed("olga")


def test_the_opcua_users_share_the_lockout() -> None:
    import pytest

    pytest.importorskip("asyncua")
    from flowedge.edge.sinks.opcua_security import StationUsers
    from flowedge.edge.sinks.opcua_users import UserEntry

    locked: list[str] = []
    users = StationUsers(
        {"plc": UserEntry("plc", "write", hash_password("right password"))},
        {},
        False,
        locked.append,
    )
    assert [users.get_user(None, "plc", f"guess {i}") for i in range(5)] == [None] * 5
    assert users.get_user(None, "plc", "right password") is None  # locked: the right one too
    assert locked == ["plc"]
