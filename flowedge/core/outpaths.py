"""Output paths are checked before the work: minutes of training must not end in a traceback.

``--out`` of ``train`` and ``eval`` is a directory, of ``calibrate`` and ``export``
a file. Both must be creatable: nothing of the wrong kind in the way, no file
where a parent directory should be, and the nearest existing directory writable.
"""

from __future__ import annotations

import os
from pathlib import Path

from flowedge.core.errors import ConfigError


def check_output_dir(path: Path, flag: str = "--out") -> None:
    """``path`` is an existing directory or one that can be created (exit 2 otherwise)."""
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"{flag} {path} is an existing file, not a directory: give a directory "
            "(it is created when missing) or move the file away"
        )
    _check_creatable(path, flag)


def check_output_file(path: Path, flag: str = "--out") -> None:
    """``path`` is a file that can be written (replaced when it exists; exit 2 otherwise)."""
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a directory; give a file name inside it")
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"{flag} {path} is read-only for this user; fix its permissions")
    _check_creatable(path.parent, flag)


def _check_creatable(folder: Path, flag: str) -> None:
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(
            f"{flag} {folder}: {existing} is a file, so no directory can be created under it"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{flag} {folder}: directory {existing} is not writable by this user; "
            "choose another place or fix its permissions"
        )
