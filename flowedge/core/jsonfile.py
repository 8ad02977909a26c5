"""Reading the project's small JSON files (model cards, calibrations, engine metadata).

One place decides how a missing, unreadable or malformed file is reported: the
message names the file and ends with what the user should do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flowedge.core.errors import FlowedgeError


def read_json(path: Path, what: str, error: type[FlowedgeError], missing: str, invalid: str) -> Any:
    """Parsed content of ``path``; ``missing``/``invalid`` say what to do in each failure."""
    if not path.is_file():
        raise error(f"{what} {path} not found; {missing}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{what} {path}: cannot read ({exc}); {invalid}") from exc
    except json.JSONDecodeError as exc:
        raise error(f"{what} {path}: not valid JSON ({exc}); {invalid}") from exc
