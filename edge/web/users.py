"""The web page's users: a JSON file of names, roles and scrypt password hashes
(:mod:`flowedge.edge.passwords`, as the OPC UA server's users).

The file is written 0600 and refused when others may read it (a hash is still a secret:
it can be attacked offline). ``flowedge web-user`` adds or changes a user.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from flowedge.calibration.history.resend import read_private
from flowedge.core.errors import ConfigError
from flowedge.edge.passwords import MIN_PASSWORD, hash_password, replace_file

ROLES = ("operator", "engineer", "admin")  # each may do what the one before may, and more
APPLY_ROLES = ("engineer", "admin")  # may apply a threshold
MAX_NAME = 64


@dataclass(frozen=True)
class User:
    name: str
    role: str
    password: str  # the scrypt hash (edge/passwords.py)

    @property
    def may_apply(self) -> bool:
        return self.role in APPLY_ROLES


def load_users(path: Path) -> dict[str, User]:
    """The users in ``path`` (0600, see :func:`read_private`); ConfigError naming the file."""
    try:
        data = json.loads(read_private(path, "web.users"))
        users = {
            name: User(name, entry["role"], entry["password"])
            for name, entry in data["users"].items()
        }
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(
            f"web.users {path}: not a users file ({exc}); create it with 'flowedge web-user "
            f"--users {path} NAME --role operator'"
        ) from None
    bad = [u.name for u in users.values() if u.role not in ROLES]
    if bad:
        raise ConfigError(f"web.users {path}: unknown role for {', '.join(bad)}; use {ROLES}")
    return users


def save_user(path: Path, name: str, role: str, password: str) -> bool:
    """Add ``name`` (or change its role and password); True when it is new. The file is
    written whole, 0600, and replaced atomically."""
    if not name or len(name) > MAX_NAME or not name.isprintable() or ":" in name:
        raise ConfigError(f"user name {name!r}: 1 to {MAX_NAME} printable characters, no ':'")
    if role not in ROLES:
        raise ConfigError(f"role {role!r}: use one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"the password has {len(password)} characters; use {MIN_PASSWORD}+")
    users = load_users(path) if path.exists() else {}
    new = name not in users
    users[name] = User(name, role, hash_password(password))
    body = {"users": {u.name: {"role": u.role, "password": u.password} for u in users.values()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_file(path, json.dumps(body, indent=1).encode())
    return new
