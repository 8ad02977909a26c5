"""File names the station writes, derived from names it did not choose.

A part id is whatever the vision system named its file: bytes that are not UTF-8
(decoded by Python as surrogates), newlines, ``..``, names near the file system's
length limit. Writing a file named after it must neither fail nor escape the
output folder, and two different ids must not overwrite each other's files.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import PurePosixPath

MAX_READABLE = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,10}")


def safe_file_stem(part_id: str) -> str:
    """An ASCII stem (``[A-Za-z0-9._-]``, at most ~75 characters): readable part + short hash.

    The hash is of the original id (surrogates included), so ids that read alike
    after cleaning still get distinct files.
    """
    digest = hashlib.sha256(part_id.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    stem = PurePosixPath(part_id.replace("\\", "/")).stem
    readable = _UNSAFE.sub("_", stem).strip("._-")[:MAX_READABLE] or "part"
    return f"{readable}-{digest}"


def safe_suffix(name: str) -> str:
    """The file name's extension (``.png``) when it is a plain one, else none: a copy keeps
    what the file is without taking over what its name may hold."""
    suffix = PurePosixPath(name.replace("\\", "/")).suffix
    return suffix if _SUFFIX.fullmatch(suffix) else ""
