"""Paths a person typed are checked for what no file system takes before anything uses them.

A path of 4 KB, a file name over 255 bytes or a NUL character makes every ``stat``
fail (ENAMETOOLONG, ValueError) and ``Path.exists()`` does not swallow that: the
first code touching the path would end in a traceback. Command-line paths (every
``type=Path`` argument: :func:`flowedge.cli.command_parser` gives them
:func:`bounded_path`) and configuration paths (:data:`BoundedPath`) are refused up
front instead, naming the argument or key path (exit 2).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Annotated, TypeVar

from pydantic import AfterValidator

NAME_MAX = 255  # bytes in one file or folder name (Linux file systems)
PATH_MAX = 4096  # bytes in a whole path, its terminating NUL included (Linux)

PathOrText = TypeVar("PathOrText", str, Path)


def path_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` cannot name a file on this system (a phrase), or None."""
    text = os.fspath(path)
    if "\0" in text:
        return "contains a NUL character"
    encoded = os.fsencode(text)
    if len(encoded) >= PATH_MAX:
        return f"is too long: {len(encoded)} bytes, the system allows {PATH_MAX - 1}"
    longest = max(encoded.split(b"/"), key=len)
    if len(longest) > NAME_MAX:
        return (
            f"has a name too long: {len(longest)} bytes, the system allows {NAME_MAX} per "
            "file or folder name"
        )
    return None


def _preview(text: str, limit: int = 60) -> str:
    """The start of a path that may be kilobytes long, for one line of message."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def bounded_path(text: str) -> Path:
    """``argparse`` type for a path argument: a path the system cannot take is a usage error."""
    problem = path_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"path {_preview(text)} {problem}; give a shorter path")
    return Path(text)


def checked_path(path: PathOrText) -> PathOrText:
    """A validator for configuration paths: ``path`` itself, or ValueError saying why the
    system cannot take it (pydantic then names the key)."""
    problem = path_problem(path)
    if problem is not None:
        raise ValueError(f"the path {problem}; give a shorter path")
    return path


# a configuration path; validation names the key when the system cannot take it
BoundedPath = Annotated[Path, AfterValidator(checked_path)]
