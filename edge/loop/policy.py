"""Where the station's threshold comes from: the decision policy.

In order: ``model.calibration`` (a calibration file: threshold, normalised scores,
drift), else ``model.threshold`` (a fixed number), else the calibration embedded in
the model at export (``flowedge export --calibration``: ONNX metadata or TensorRT
engine metadata; a threshold only). With none of them the station refuses to start.
The rule itself (``score > threshold``) is :func:`flowedge.core.decision.decide`.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from dataclasses import dataclass, field
from typing import Any

from flowedge.core.card import ModelCard
from flowedge.core.decision import Decision
from flowedge.core.errors import ConfigError
from flowedge.edge.config import FlowedgeConfig
from flowedge.edge.models_config import ModelConfig

log = logging.getLogger(__name__)


@dataclass
class Policy:
    """What turns a score into a decision; replaced as a whole on SIGHUP."""

    threshold: float
    calibration: Any = None  # calibration.calibfile.Calibration when a file is given
    drift: dict[str, Any] = field(default_factory=dict)  # sensor -> DriftMonitor
    calibration_sha256: str | None = None  # the calibration the threshold comes from
    origin: str = "model.threshold"  # said in the start-up log line

    def normalise(self, score: float) -> float | None:
        return None if self.calibration is None else float(self.calibration.normalise(score))


def load_policy(
    cfg: FlowedgeConfig,
    card: ModelCard,
    embedded: dict[str, Any] | None = None,
    model: ModelConfig | None = None,
    key: str = "model",
) -> Policy:
    """Calibration file, else the fixed threshold, else ``embedded``; none is a config error.

    ``model``: the model's section (default ``cfg.model``; a recipe's, named ``key`` in
    messages, e.g. ``recipes.models.A``)."""
    model = model or cfg.model
    if model.calibration is not None:
        return _file_policy(cfg, card, model)
    if model.threshold is not None:
        return Policy(threshold=float(model.threshold), origin=f"{key}.threshold")
    if embedded is not None:
        return _embedded_policy(cfg, embedded, model)
    raise ConfigError(
        f"{key}: no threshold anywhere: neither 'calibration' nor 'threshold' is set and "
        f"{model.path} has no calibration embedded at export; run 'flowedge calibrate' and set "
        f"{key}.calibration, give a fixed {key}.threshold, or export with --calibration"
    )


def _file_policy(cfg: FlowedgeConfig, card: ModelCard, model: ModelConfig) -> Policy:
    if importlib.util.find_spec("flowedge.calibration.calibfile") is None:
        raise ConfigError("a calibration file is set but this flowedge has no calibration support")
    from flowedge.calibration.calibfile import load_calibration

    calibration = load_calibration(model.calibration, card)
    policy = Policy(
        threshold=float(calibration.threshold),
        calibration=calibration,
        calibration_sha256=calibration.sha256 or None,
        origin=f"calibration file {model.calibration}",
    )
    if cfg.drift.enabled and importlib.util.find_spec("flowedge.calibration.drift") is not None:
        from flowedge.calibration.drift import DriftMonitor

        policy.drift = {s.name: DriftMonitor(calibration, cfg.drift) for s in cfg.sources}
    return policy


def _embedded_policy(cfg: FlowedgeConfig, embedded: dict[str, Any], model: ModelConfig) -> Policy:
    """A threshold only: normalised scores and drift need the calibration file itself."""
    threshold = embedded.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        threshold = None
    if threshold is None or not math.isfinite(threshold):
        raise ConfigError(
            f"{model.path}: the embedded calibration has no finite threshold "
            f"(got {embedded.get('threshold')!r}); export again with --calibration, or set "
            "model.threshold or model.calibration"
        )
    if cfg.drift.enabled:
        log.info("drift monitoring needs model.calibration (the file); it is off")
    return Policy(
        threshold=float(threshold),
        calibration_sha256=embedded.get("sha256") or None,
        origin=f"the calibration embedded in {model.path} at export",
    )


@dataclass(frozen=True)
class Verdict:
    """One sample's decision with what it was made from (one policy, even during a reload)."""

    decision: Decision
    score: float | None  # None when the sample could not be scored
    policy: Policy | None  # None: no model applied (a recipe without a model)
    heatmap: str | None = None  # overlay PNG path when one was written
    evidence: str | None = None  # the input file's copy when one was kept (pipeline.evidence)
