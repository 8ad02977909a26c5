"""The one decision rule: a score above the threshold is an anomaly.

The MQTT message, the station's metrics, the heatmap choice and calibration's
false-alarm and recall statistics all decide through this module, so a score
exactly at the threshold is ``OK`` everywhere (and a calibrated false-alarm rate
means what the station does).

Beyond the rule's ``OK`` and ``ANOMALY`` a station answers ``ERROR`` (the sample could
not be scored) and ``BASELINING`` (the sample belongs to the window after a changeover
whose samples re-estimate the model's input standardisation: it is not judged). Only
``OK`` and ``ANOMALY`` are judgements (:data:`JUDGED`): false-alarm rates, recall, drift
and heatmaps count those alone, and neither ``ERROR`` nor ``BASELINING`` is an ``OK``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

Decision = Literal["OK", "ANOMALY", "ERROR", "BASELINING"]
DECISIONS: tuple[Decision, ...] = ("OK", "ANOMALY", "ERROR", "BASELINING")
JUDGED: frozenset[Decision] = frozenset({"OK", "ANOMALY"})


def is_anomalous(score: Any, threshold: float) -> Any:
    """``score > threshold``; elementwise on numpy arrays (calibration counts with it)."""
    return score > threshold


def decide(score: float | None, threshold: float) -> Decision:
    """``ANOMALY`` iff ``score > threshold``; a missing or non-finite score is ``ERROR``.

    Never ``BASELINING``: whether a sample is judged at all is the station's matter."""
    if score is None or not math.isfinite(score):
        return "ERROR"
    return "ANOMALY" if is_anomalous(score, threshold) else "OK"
