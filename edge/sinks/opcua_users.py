"""The OPC UA server's users file: one ``name:role:hash`` line per user, never a clear password.

Roles: ``read`` (browse, read, subscribe) and ``write`` (also the PLC handshake's writable
nodes). The hash is scrypt with a random salt (``scrypt$n$r$p$salt$hash``, hex). The file
is written 0600 by ``flowedge opcua-user`` and refused when the group or others may read
or write it, like any secret of the station.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

from flowedge.core.errors import ConfigError
from flowedge.edge.passwords import hash_password, replace_file

ROLES = ("read", "write")
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@")


@dataclass(frozen=True)
class UserEntry:
    name: str
    role: str  # read | write
    hashed: str


def private_file_problem(path: Path, what: str) -> str | None:
    """Why ``path`` is not a usable secret file (missing, not a file, open to group/others)."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        return f"{what} {path} cannot be read ({exc.strerror})"
    if not stat.S_ISREG(mode):
        return f"{what} {path} is not a file"
    if mode & 0o077:
        return (
            f"{what} {path} may be read or written by group or others (mode "
            f"{stat.S_IMODE(mode):04o}); chmod 600 {path}"
        )
    return None


def load_users(path: Path) -> dict[str, UserEntry]:
    """The users in ``path``; ConfigError naming the file and line for anything wrong."""
    problem = private_file_problem(path, "OPC UA users file")
    if problem:
        raise ConfigError(problem)
    users: dict[str, UserEntry] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.strip().split(":")
        if len(parts) != 3 or parts[1] not in ROLES or not parts[2].startswith("scrypt$"):
            raise ConfigError(
                f"OPC UA users file {path} line {number} is not name:role:scrypt-hash (role "
                f"read or write); add users with 'flowedge opcua-user {path} NAME'"
            )
        users[parts[0]] = UserEntry(parts[0], parts[1], parts[2])
    return users


def valid_name(name: str) -> bool:
    return 0 < len(name) <= 64 and set(name) <= NAME_CHARS


def save_user(path: Path, name: str, role: str, password: str) -> None:
    """Add or replace ``name`` in ``path`` (created 0600; written whole, then renamed)."""
    if not valid_name(name):
        raise ConfigError(f"user name {name!r}: use 1-64 letters, digits, '.', '_', '-', '@'")
    if role not in ROLES:
        raise ConfigError(f"role {role!r}: use one of {', '.join(ROLES)}")
    users = load_users(path) if path.exists() else {}
    users[name] = UserEntry(name, role, hash_password(password))
    text = "".join(f"{u.name}:{u.role}:{u.hashed}\n" for u in users.values())
    replace_file(path, text.encode("utf-8"))
