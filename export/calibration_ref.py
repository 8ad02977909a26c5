"""Read the decision threshold a calibration file binds to a model (for parity and metadata)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from flowedge.core.card import sha256_file
from flowedge.core.errors import ConfigError


@dataclass(frozen=True)
class CalibrationRef:
    threshold: float
    sha256: str
    path: str


def load_calibration(path: str | Path) -> CalibrationRef:
    """The calibration file must be JSON with a finite numeric top-level ``threshold``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"calibration file {path}: cannot read ({exc.strerror})") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"calibration file {path}: not valid JSON ({exc})") from exc
    threshold = data.get("threshold") if isinstance(data, dict) else None
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not math.isfinite(threshold)
    ):
        raise ConfigError(
            f"calibration file {path}: no finite numeric 'threshold' (got {threshold!r}); "
            "write it with 'flowedge calibrate'"
        )
    return CalibrationRef(float(threshold), sha256_file(path), str(path))
