"""Passwords and private files of the station's own users (the OPC UA server's, the web
page's): scrypt hashes with a random salt (``scrypt$n$r$p$salt$hash``, hex), never a clear
password, in files written whole with mode 0600."""

from __future__ import annotations

import getpass
import hashlib
import hmac
import os
import secrets
import sys
from pathlib import Path

from flowedge.core.errors import ConfigError

MIN_PASSWORD = 8
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
