"""Read the decision threshold a calibration file binds to a model (for parity and metadata).

The file must belong to the exported weights: a threshold computed for another
model would be embedded in the graph and published by every station running it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from flowedge.calibration.calibfile import read_calibration_json
from flowedge.core.card import ModelCard, sha256_file
from flowedge.core.errors import ModelMismatchError


@dataclass(frozen=True)
class CalibrationRef:
    threshold: float
    sha256: str
    path: str
    weights_sha256: str = ""  # of the weights the threshold was computed for


def load_calibration(path: str | Path) -> CalibrationRef:
    """The calibration file must be JSON with a finite numeric top-level ``threshold``."""
    path = Path(path)
    data = read_calibration_json(path)
    threshold = data.get("threshold") if isinstance(data, dict) else None
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not math.isfinite(threshold)
    ):
        raise ModelMismatchError(
            f"calibration file {path}: no finite numeric 'threshold' (got {threshold!r}); "
            "write it with 'flowedge calibrate'"
        )
    weights = data.get("weights_sha256")
    return CalibrationRef(
        float(threshold), sha256_file(path), str(path), weights if isinstance(weights, str) else ""
    )


def check_bound_to(calibration: CalibrationRef, card: ModelCard) -> None:
    """Refuse (exit 4) a calibration without a binding or bound to other weights."""
    if not calibration.weights_sha256:
        raise ModelMismatchError(
            f"calibration file {calibration.path} names no 'weights_sha256', so nothing shows it "
            f"belongs to {card.model_id}: write it with 'flowedge calibrate' for this checkpoint"
        )
    if calibration.weights_sha256 != card.weights_sha256:
        raise ModelMismatchError(
            f"calibration file {calibration.path} belongs to weights "
            f"{calibration.weights_sha256[:12]}, not to the exported model {card.model_id}; "
            f"thresholds do not transfer between models: run 'flowedge calibrate' for it"
        )
