"""The unit that flows through the pipeline: one captured payload and what happened to it.

Generic on purpose: ``payload`` is whatever a source yields (a decoded frame,
raw file bytes, later an audio window or a robot-log slice) and ``modality``
picks the preprocessor, so new sensors add a source and a preprocessor only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np


def utc_now() -> str:
    """ISO 8601 UTC with milliseconds and a ``Z``, the timestamp format of every message."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class Sample:
    source: str
    part_id: str  # file name or frame counter: what the PLC matches the decision to
    payload: Any
    modality: str = "image"
    seq: int = 0  # per-sensor, assigned (and persisted) with the decision
    intake_id: int | None = None  # its intake journal row, closed with the decision (h6)
    captured_utc: str = field(default_factory=utc_now)
    t_captured: float = field(default_factory=time.perf_counter)
    timings_ms: dict[str, float] = field(default_factory=dict)
    tensor: np.ndarray | None = None
    score: float | None = None
    amap: np.ndarray | None = None  # the anomaly map, kept until the heatmap is written
    error: str | None = None  # set when a stage refused the sample; it still gets a decision
    # score drop per signal when it is occluded (an ANOMALY cycle whose map cannot name signals)
    signal_drops: np.ndarray | None = None
    # fields the source adds to the decision message: {"event": ...} for an audio motion,
    # {"cycle": ...} for a robot cycle (see Frame.context)
    context: dict[str, Any] | None = None

    def mark(self, stage: str, started: float) -> None:
        """Record how long ``stage`` took for this sample, from ``started`` (perf_counter)."""
        self.timings_ms[stage] = round((time.perf_counter() - started) * 1000.0, 3)
