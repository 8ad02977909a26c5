"""The JSON documents the station publishes (schemas in ``edge/schema/``).

Decision values: ``OK``, ``ANOMALY`` (``score > threshold``, see
:mod:`flowedge.core.decision`), ``ERROR`` (the sample could not be scored: the PLC
still gets an answer for every trigger, with ``error`` saying why) and ``BASELINING``
(the sample re-estimates its model's input statistics after a changeover: not judged).
A station with recipes names each decision's ``recipe``.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from flowedge.core.card import ModelCard
from flowedge.core.decision import JUDGED
from flowedge.edge.config import FlowedgeConfig
from flowedge.edge.loop.policy import Verdict
from flowedge.edge.loop.sample import Sample
from flowedge.edge.timestamps import utc_now

DECISION_SCHEMA = "flowedge.decision/1"
EVENT_SCHEMA = "flowedge.event/1"


def _number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def decision_doc(
    cfg: FlowedgeConfig,
    card: ModelCard | None,
    backend: str | None,
    sample: Sample,
    verdict: Verdict,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The decision document, plus the modality's fields (``extra``: what the source said
    about the sample, such as an audio motion's ``event`` or a robot cycle's ``cycle`` with
    its drivers); they never replace a field."""
    doc = _decision_fields(cfg, card, backend, sample, verdict) | _evidence_fields(sample, verdict)
    if sample.recipe is not None:
        doc["recipe"] = sample.recipe
    for key, value in (extra or {}).items():
        doc.setdefault(key, value)
    return doc


def _decision_fields(
    cfg: FlowedgeConfig,
    card: ModelCard | None,
    backend: str | None,
    sample: Sample,
    verdict: Verdict,
) -> dict[str, Any]:
    """``card``/``backend`` None: no model applied (a recipe without one): ``model`` and
    ``threshold`` are null."""
    score, policy = verdict.score, verdict.policy
    normalised = None
    if policy is not None and score is not None and verdict.decision in JUDGED:
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
        "decision": verdict.decision,
        "score": None if score is None else _number(score),
        "threshold": None if policy is None else policy.threshold,
        "normalised_score": normalised,
        "model": None
        if card is None
        else {
            "id": card.model_id,
            "weights_sha256": card.weights_sha256,
            "calibration_sha256": None if policy is None else policy.calibration_sha256,
            "backend": backend,
        },
        "latency_ms": {**sample.timings_ms, "total": round(total, 3)},
        "heatmap": verdict.heatmap,
        "error": sample.error,
        "modality": sample.modality,
    }


def _evidence_fields(sample: Sample, verdict: Verdict) -> dict[str, Any]:
    """What a history needs beyond the decision, when there is any: the sensor's drift state
    when the sample was decided (a calibration file's monitor: ``unchecked`` until its window
    is full) and the kept copy of the input (``pipeline.evidence``)."""
    fields: dict[str, Any] = {}
    monitor = None if verdict.policy is None else verdict.policy.drift.get(sample.source)
    if monitor is not None:
        report = monitor.last_report
        fields["drift"] = "unchecked" if report is None else ("drifted" if report.drifted else "ok")
    if verdict.evidence is not None:
        fields["evidence"] = {"input": verdict.evidence}
    return fields


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
    """UTF-8 JSON; a file name that was not UTF-8 keeps its undecodable bytes as ``\\udcNN``,
    and a number that JSON cannot hold (NaN, infinity: say, in a command's arguments) is null."""
    try:
        return json.dumps(doc, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode()
    except (UnicodeEncodeError, ValueError):  # lone surrogates; NaN or infinity
        return json.dumps(
            _printable(doc), separators=(",", ":"), allow_nan=False, ensure_ascii=False
        ).encode()


def _printable(value: Any) -> Any:
    """``value`` with every string's surrogates spelled out, as valid Unicode, and every
    non-finite number as None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_printable(key): _printable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_printable(item) for item in value]
    return value
