"""Reading the project's small JSON files (model cards, calibrations, engine metadata).

One place decides how a missing, unreadable or malformed file is reported: the
message names the file and ends with what the user should do. A document nested
too deeply for the parser (``[[[[...`` ten thousand times) is malformed like any
other, never a RecursionError.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flowedge.core.errors import FlowedgeError


def parse_json(text: str | bytes) -> Any:
    """``json.loads``, where a document nested too deeply for the parser is a ValueError (as
    ``json.JSONDecodeError`` is), so every reader reports it as malformed JSON."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply for the JSON parser") from None


def read_json(
    path: Path,
    what: str,
    error: type[FlowedgeError],
    missing: str,
    invalid: str,
    missing_error: type[FlowedgeError] | None = None,
) -> Any:
    """Parsed content of ``path``; ``missing``/``invalid`` say what to do in each failure.

    ``error`` is raised for a file that cannot be read or parsed, ``missing_error`` (default:
    ``error``) for no file at all: a path the user gave wrong is not a damaged file."""
    if not path.is_file():
        raise (missing_error or error)(f"{what} {path} not found; {missing}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{what} {path}: cannot read ({exc}); {invalid}") from exc
    try:
        return parse_json(text)
    except ValueError as exc:
        raise error(f"{what} {path}: not valid JSON ({exc}); {invalid}") from exc
