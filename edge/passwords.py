"""Passwords and private files of the station's own users (the OPC UA server's, the web
page's): scrypt hashes with a random salt (``scrypt$n$r$p$salt$hash``, hex), never a clear
password, in files written whole with mode 0600; and the lockout both logins share after
repeated failures."""

from __future__ import annotations

import getpass
import hashlib
import hmac
import os
import secrets
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from flowedge.core.errors import ConfigError

MIN_PASSWORD = 8
LOCK_AFTER = 5  # failed logins of one user name within LOCK_WINDOW_S lock it
LOCK_WINDOW_S = 300.0  # and for this long after the failure that locked it
TRACKED_NAMES = 10_000  # names remembered (guessed names too), the oldest forgotten first
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1  # about 50 ms a login: slow for guessing, fine for PLCs


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(hashed: str, password: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = hashed.split("$")
        if scheme != "scrypt":
            return False
        computed = hashlib.scrypt(
            password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32
        )
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(computed.hex(), digest)


def replace_file(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` whole or not at all (a crash leaves the old file), mode 0600."""
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # also when a stale temporary file was there with other bits
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def read_password(from_stdin: bool) -> str:
    """A new password: one line of standard input (provisioning scripts), else asked twice
    on the terminal; never from the command line, where other users could see it."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise ConfigError("the two passwords differ; nothing written")
    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"the password needs at least {MIN_PASSWORD} characters")
    return password


class FailedLogins:
    """Brute-force protection of a login: after ``limit`` failed logins of one user name
    within ``window_s`` the name is locked for ``window_s``, the right password included
    (guessing at 20 tries a second becomes 5 tries in 5 minutes). A success clears the
    name's failures. Keyed by user name, not address: on a plant network many clients sit
    behind one address, and an attacker can change address more easily than target."""

    def __init__(
        self,
        limit: int = LOCK_AFTER,
        window_s: float = LOCK_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self._failures: OrderedDict[str, list[float]] = OrderedDict()
        self._locked_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def locked_for(self, name: str) -> float:
        """Seconds ``name`` stays locked (0: it may try)."""
        with self._lock:
            left = self._locked_until.get(name, 0.0) - self.clock()
            if left <= 0:
                self._locked_until.pop(name, None)
            return max(left, 0.0)

    def failed(self, name: str) -> bool:
        """Count a failed login of ``name``; True when this failure locks it."""
        now = self.clock()
        with self._lock:
            recent = [t for t in self._failures.pop(name, []) if now - t < self.window_s]
            recent.append(now)
            if len(recent) >= self.limit:
                self._locked_until[name] = now + self.window_s
                if len(self._locked_until) > TRACKED_NAMES:  # guessed names: keep live locks
                    self._locked_until = {n: t for n, t in self._locked_until.items() if t > now}
                return True
            self._failures[name] = recent
            while len(self._failures) > TRACKED_NAMES:
                self._failures.popitem(last=False)
            return False

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._failures.pop(name, None)
