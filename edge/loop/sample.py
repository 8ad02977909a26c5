"""The unit that flows through the pipeline: one captured payload and what happened to it.

Generic on purpose: ``payload`` is whatever a source yields (a decoded frame,
raw file bytes, later an audio window or a robot-log slice) and ``modality``
picks the preprocessor, so new sensors add a source and a preprocessor only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flowedge.edge.loop.models import Route
from flowedge.edge.loop.policy import Verdict
from flowedge.edge.timestamps import utc_now


@dataclass
class Sample:
    source: str
    part_id: str  # file name or frame counter: what the PLC matches the decision to
    payload: Any
    modality: str = "image"
    # the file the payload is read from (file sources), kept for copying it as evidence
    # after the payload itself is dropped; None for in-memory frames, windows and cycles
    input_file: str | None = None
    seq: int = 0  # per-sensor, assigned (and persisted) with the decision
    intake_id: int | None = None  # its intake journal row, closed with the decision (h6)
    captured_utc: str = field(default_factory=utc_now)
    t_captured: float = field(default_factory=time.perf_counter)
    timings_ms: dict[str, float] = field(default_factory=dict)
    tensor: np.ndarray | None = None
    score: float | None = None
    amap: np.ndarray | None = None  # the anomaly map, kept until the heatmap is written
    error: str | None = None  # set when a stage refused the sample; it still gets a decision
    verdict: Verdict | None = None  # the one decision, made by the infer stage
    # what the modality found drove an anomaly beyond its map (series: score drop per
    # occluded signal); None when not asked or not needed
    explanation: Any = None
    # fields the source adds to the decision message: {"event": ...} for an audio motion,
    # {"cycle": ...} for a robot cycle (see Frame.context)
    context: dict[str, Any] | None = None
    # the recipe it belongs to (stations with recipes): announced ones are read at capture
    recipe: str | None = None
    route: Route | None = None  # the model it is scored and decided with (set by preprocess)
    # its place in its sensor's baseline after a changeover ("3/20"): decided BASELINING
    baseline: str | None = None

    def mark(self, stage: str, started: float) -> None:
        """Record how long ``stage`` took for this sample, from ``started`` (perf_counter)."""
        self.timings_ms[stage] = round((time.perf_counter() - started) * 1000.0, 3)
