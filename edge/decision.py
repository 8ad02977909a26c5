"""From a score to the message a PLC acts on: threshold, calibration, drift, heatmap.

Decision values: ``OK`` (score <= threshold), ``ANOMALY`` (score > threshold, the rule
calibration uses for its false-alarm statistics) and ``ERROR`` (the sample could not be
scored: the PLC still gets an answer for every trigger, with ``error`` saying why). See ``edge/schema/decision.schema.json``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from flowedge.core.card import ModelCard, PreprocessSpec
from flowedge.core.errors import ConfigError
from flowedge.edge.config import FlowedgeConfig
from flowedge.edge.filenames import safe_file_stem
from flowedge.edge.sample import Sample, utc_now

log = logging.getLogger(__name__)

DECISION_SCHEMA = "flowedge.decision/1"
EVENT_SCHEMA = "flowedge.event/1"


@dataclass
class Policy:
    """What turns a score into a decision; replaced as a whole on SIGHUP."""

    threshold: float
    calibration: Any = None  # calibration.calibfile.Calibration when a file is given
    drift: dict[str, Any] = field(default_factory=dict)  # sensor -> DriftMonitor

    def normalise(self, score: float) -> float | None:
        return None if self.calibration is None else float(self.calibration.normalise(score))


def load_policy(cfg: FlowedgeConfig, card: ModelCard) -> Policy:
    """Calibration file wins; else ``model.threshold``; neither is a config error."""
    model = cfg.model
    if model.calibration is None:
        if model.threshold is None:
            raise ConfigError(
                "model: neither 'calibration' nor 'threshold' is set; run 'flowedge calibrate' "
                "and set model.calibration, or give a fixed model.threshold"
            )
        return Policy(threshold=float(model.threshold))
    if importlib.util.find_spec("flowedge.calibration.calibfile") is None:
        raise ConfigError("model.calibration is set but this flowedge has no calibration support")
    from flowedge.calibration.calibfile import load_calibration

    calibration = load_calibration(model.calibration, card)
    policy = Policy(threshold=float(calibration.threshold), calibration=calibration)
    if cfg.drift.enabled and importlib.util.find_spec("flowedge.calibration.drift") is not None:
        from flowedge.calibration.drift import DriftMonitor

        policy.drift = {s.name: DriftMonitor(calibration, cfg.drift) for s in cfg.sources}
    return policy


def _number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def decision_doc(
    cfg: FlowedgeConfig,
    card: ModelCard,
    backend: str,
    sample: Sample,
    score: float | None,
    policy: Policy,
    heatmap: str | None,
) -> dict[str, Any]:
    if sample.error is not None or score is None:
        decision, normalised = "ERROR", None
    else:
        decision = "ANOMALY" if score > policy.threshold else "OK"
        normalised = policy.normalise(score)
    total = (time.perf_counter() - sample.t_captured) * 1000.0  # capture to decision
    return {
        "schema": DECISION_SCHEMA,
        "site": cfg.site,
        "station": cfg.station,
        "sensor": sample.source,
        "seq": sample.seq,
        "part_id": sample.part_id,
        "captured_utc": sample.captured_utc,
        "decided_utc": utc_now(),
        "decision": decision,
        "score": None if score is None else _number(score),
        "threshold": policy.threshold,
        "normalised_score": normalised,
        "model": {
            "id": card.model_id,
            "weights_sha256": card.weights_sha256,
            "calibration_sha256": getattr(policy.calibration, "sha256", None) or None,
            "backend": backend,
        },
        "latency_ms": {**sample.timings_ms, "total": round(total, 3)},
        "heatmap": heatmap,
        "error": sample.error,
    }


def event_doc(
    cfg: FlowedgeConfig, sensor: str | None, kind: str, message: str, severity: str, **details: Any
) -> dict[str, Any]:
    return {
        "schema": EVENT_SCHEMA,
        "site": cfg.site,
        "station": cfg.station,
        "sensor": sensor,
        "utc": utc_now(),
        "kind": kind,
        "severity": severity,
        "message": message,
        "details": details,
    }


def encode(doc: dict[str, Any]) -> bytes:
    """UTF-8 JSON; a file name that was not UTF-8 keeps its undecodable bytes as ``\\udcNN``."""
    try:
        return json.dumps(doc, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode()
    except UnicodeEncodeError:  # lone surrogates (os.fsdecode of invalid UTF-8) are not Unicode
        return encode(_printable(doc))


def _printable(value: Any) -> Any:
    """``value`` with every string's surrogates spelled out, as valid Unicode."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_printable(key): _printable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_printable(item) for item in value]
    return value


def write_heatmap(
    folder: Path, sample: Sample, tensor: np.ndarray, amap: np.ndarray, spec: PreprocessSpec
) -> str:
    """Overlay the anomaly map on the model's input view; returns the PNG path."""
    mean = np.asarray(spec.mean, dtype=np.float32)[: spec.channels, None, None]
    std = np.asarray(spec.std, dtype=np.float32)[: spec.channels, None, None]
    image = np.clip((tensor * std + mean).transpose(1, 2, 0) * 255.0, 0, 255).astype(np.uint8)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    span = float(amap.max() - amap.min()) or 1.0
    heat = ((amap - amap.min()) / span * 255.0).astype(np.uint8)
    heat = cv2.resize(heat, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    overlay = cv2.addWeighted(image, 0.55, cv2.applyColorMap(heat, cv2.COLORMAP_JET), 0.45, 0)
    stamp = sample.captured_utc.replace("-", "").replace(":", "").replace(".", "")
    out = folder / sample.source / f"{stamp}_{safe_file_stem(sample.part_id)}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    ok, png = cv2.imencode(".png", overlay)
    if not ok:
        raise ValueError(f"OpenCV could not encode the heatmap {out} as PNG")
    out.write_bytes(png.tobytes())  # unlike cv2.imwrite, a full disk raises (OSError)
    return str(out)
