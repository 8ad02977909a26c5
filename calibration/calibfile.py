"""calibration.json: the threshold and normal-score distribution bound to one model.

The station reads it with :func:`load_calibration` (numpy/scipy only, no torch). The
file is plain JSON; the top-level ``threshold`` is the decision (``score > threshold``
is an anomaly) and ``weights_sha256`` binds it to the weights it was computed for.

Normalised score (:meth:`Calibration.normalise`): ``-log10 S(score)`` where ``S`` is the
calibrated probability that a *normal* sample scores higher (see
:mod:`calibration.distribution`). It is comparable across detectors and stations: 2.0
means "1 normal sample in 100 scores this high", 3.0 "1 in 1000". At the threshold it
equals ``-log10(expected false-alarm rate)`` (2.0 for a 1 % target); it is monotone in
the raw score, 0 for very low scores, capped at 15, and NaN for a NaN score.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from flowedge.calibration.distribution import ScoreDistribution
from flowedge.core.card import ModelCard, sha256_file
from flowedge.core.errors import ConfigError, ModelMismatchError
from flowedge.core.jsonfile import read_json

log = logging.getLogger(__name__)

CALIBRATION_FORMAT = "1.0"


@dataclass(frozen=True)
class Calibration:
    """A loaded calibration: what the station needs, plus the whole file for reports."""

    threshold: float
    model_id: str
    weights_sha256: str
    strategy: str
    expected_far: float  # calibrated probability that a normal sample exceeds the threshold
    distribution: ScoreDistribution
    data: dict[str, Any]
    path: str = ""
    sha256: str = ""

    def normalise(self, score: float) -> float:
        """``-log10`` of the calibrated normal tail probability of ``score`` (see module doc)."""
        return float(self.distribution.normalise(score)[0])

    @property
    def normalised_threshold(self) -> float:
        return self.normalise(self.threshold)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "calibration") -> Calibration:
        """Validate a parsed file; every problem is a :class:`ModelMismatchError` naming
        ``source`` (a calibration file is part of the model it is bound to)."""
        if not isinstance(data, dict):
            raise ModelMismatchError(
                f"{source}: expected a JSON object, got {type(data).__name__}; recalibrate"
            )
        fmt = str(data.get("calibration_format", ""))
        if fmt.split(".")[0] != CALIBRATION_FORMAT.split(".")[0]:
            raise ModelMismatchError(
                f"{source}: calibration format {fmt or '?'} is not readable by this flowedge "
                f"(format {CALIBRATION_FORMAT}); recalibrate with 'flowedge calibrate'"
            )
        try:
            threshold = float(data["threshold"])
            distribution = ScoreDistribution.from_dict(data["normal"])
            calibration = cls(
                threshold=threshold,
                model_id=str(data["model_id"]),
                weights_sha256=str(data["weights_sha256"]),
                strategy=str(data["strategy"]["name"]),
                expected_far=float(data["expected_far"]["value"]),
                distribution=distribution,
                data=data,
                path=source,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelMismatchError(
                f"{source}: malformed calibration file ({type(exc).__name__}: {exc}); "
                "it is damaged or hand-edited: recalibrate with 'flowedge calibrate'"
            ) from exc
        if not math.isfinite(threshold):
            raise ModelMismatchError(f"{source}: threshold {threshold} is not finite; recalibrate")
        return calibration


def check_binding(calibration: Calibration, card: ModelCard) -> None:
    """Refuse a calibration computed for other weights (scores are not comparable)."""
    if not card.weights_sha256:
        raise ModelMismatchError(
            f"calibration {calibration.path}: the model card has no weights hash, so the binding "
            "cannot be checked; use a checkpoint or export written by 'flowedge train'/'export'"
        )
    if calibration.weights_sha256 != card.weights_sha256:
        raise ModelMismatchError(
            f"calibration {calibration.path} belongs to model {calibration.model_id} "
            f"(weights {calibration.weights_sha256[:12]}), not to the loaded model "
            f"{card.model_id} (weights {card.weights_sha256[:12]}); thresholds do not transfer "
            f"between models: run 'flowedge calibrate' for {card.model_id}"
        )
    if (
        card.calibration_sha256
        and calibration.sha256
        and card.calibration_sha256 != calibration.sha256
    ):
        log.warning(
            "calibration %s differs from the one embedded at export (sha256 %s...); using the file "
            "(it was probably updated with 'flowedge calibrate --update')",
            calibration.path,
            card.calibration_sha256[:12],
        )


def read_calibration_json(path: Path) -> Any:
    """The parsed calibration file, unchecked: no file is a wrong path (exit 2), a file that
    cannot be read or parsed a damaged one (exit 4)."""
    return read_json(
        path,
        "calibration file",
        ModelMismatchError,
        missing="create it with 'flowedge calibrate CHECKPOINT --normal DIR --out calibration.json' "
        "or set model.calibration to the right path",
        invalid="recalibrate with 'flowedge calibrate'",
        missing_error=ConfigError,
    )


def read_calibration(path: str | Path) -> Calibration:
    """Read and validate a calibration file without checking which model it is bound to."""
    path = Path(path)
    calibration = Calibration.from_dict(read_calibration_json(path), source=str(path))
    return _with_hash(calibration, path)


def load_calibration(path: str | Path, card: ModelCard) -> Calibration:
    """Read a calibration file and check it belongs to ``card``'s weights.

    Raises :class:`ConfigError` (exit 2) when missing and :class:`ModelMismatchError`
    (exit 4) when malformed or bound to another model.
    """
    calibration = read_calibration(path)
    check_binding(calibration, card)
    return calibration


def save_calibration(data: dict[str, Any], path: str | Path) -> Calibration:
    """Validate and write atomically (a station never reads half a file); returns it loaded."""
    path = Path(path)
    calibration = Calibration.from_dict(data, source=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return _with_hash(calibration, path)


def _with_hash(calibration: Calibration, path: Path) -> Calibration:
    return replace(calibration, path=str(path), sha256=sha256_file(path))
