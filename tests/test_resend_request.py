"""The historian's signed re-send request: only the holder of the shared secret, only for this
station and historian, only once and only while fresh; the secret only from a private file
or the environment."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from flowedge.calibration.history.resend import RequestChecker, ResendRequest, read_secret
from flowedge.core.errors import ConfigError

SECRET = b"s" * 32


def checker(**overrides: object) -> RequestChecker:
    values: dict = dict(historian="fleet", site="plant", station="line1", max_documents=100)
    return RequestChecker(SECRET, **(values | overrides))


def request(**overrides: object) -> ResendRequest:
    values: dict = dict(historian="fleet", site="plant", station="line1", sensor="cam1")
    return ResendRequest.new(**(values | {"first": 3, "last": 7} | overrides))


def wire(req: ResendRequest, secret: bytes = SECRET) -> dict:
    return json.loads(req.signed(secret))


def test_a_signed_request_is_accepted_once() -> None:
    check, req = checker(), request()
    assert check.check(wire(req)) == req
    with pytest.raises(ValueError, match="used already: a replayed request"):
        check.check(wire(req))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"secret": b"x" * 32}, "signature does not match"),
        ({"historian": "intruder"}, "signed by historian 'intruder'"),
        ({"station": "line2"}, "addressed to plant/line2"),
        ({"last": 2}, "first <= last"),
        ({"last": 200}, "at most 100 decisions"),
    ],
)
def test_what_is_refused(change: dict, reason: str) -> None:
    secret = change.pop("secret", SECRET)
    with pytest.raises(ValueError, match=reason):
        checker().check(wire(request(**change), secret))


def test_an_altered_or_unsigned_request_is_refused() -> None:
    doc = wire(request())
    with pytest.raises(ValueError, match="signature does not match"):
        checker().check({**doc, "last": 8})  # the range changed after signing
    with pytest.raises(ValueError, match="no signature"):
        checker().check({key: value for key, value in doc.items() if key != "mac"} | {"mac": 1})
    with pytest.raises(ValueError, match="unknown \\['extra'\\]"):
        checker().check({**doc, "extra": 1})
    with pytest.raises(ValueError, match="JSON object"):
        checker().check([doc])


def test_a_request_older_or_newer_than_max_age_is_refused() -> None:
    req = request()
    with pytest.raises(ValueError, match="beyond commands.resend.max_age_s 300"):
        checker().check(wire(req), now_ms=req.utc_ms + 301_000)
    with pytest.raises(ValueError, match="in the future"):
        checker().check(wire(req), now_ms=req.utc_ms - 301_000)


def test_the_secret_comes_from_a_private_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "secret"
    path.write_bytes(SECRET + b"\n")
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_secret("UNUSED", path, "historian")
    os.chmod(path, 0o600)
    assert read_secret("UNUSED", path, "historian") == SECRET
    with pytest.raises(ConfigError, match="cannot read"):
        read_secret("UNUSED", tmp_path / "absent", "historian")
    monkeypatch.delenv("TEST_SECRET", raising=False)
    with pytest.raises(ConfigError, match="TEST_SECRET .* empty or unset"):
        read_secret("TEST_SECRET", None, "historian")
    monkeypatch.setenv("TEST_SECRET", "short")
    with pytest.raises(ConfigError, match="has 5 bytes; use at least 32"):
        read_secret("TEST_SECRET", None, "historian")
    monkeypatch.setenv("TEST_SECRET", SECRET.decode())
    assert read_secret("TEST_SECRET", None, "historian") == SECRET
