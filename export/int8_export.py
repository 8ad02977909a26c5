"""``flowedge export onnx|openvino --int8``: quantise the checked fp32 model, then gate it.

The quantiser sees normal training samples only (``--int8-samples``, default the
card's training data, refused when it is a labelled set); the gate
(:mod:`export.int8_gate`) scores a labelled validation split with the fp32 and the
INT8 model on the same station backend. The INT8 model is written to ``--out`` only
when it passes; otherwise it is kept beside it as ``.failed`` and the export exits 4.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from flowedge.calibration.scoring import score_paths
from flowedge.core import metadata
from flowedge.core.card import ModelCard
from flowedge.core.errors import ConfigError, DataError
from flowedge.export.calibration_ref import CalibrationRef
from flowedge.export.checked import Opener, failed_path, write_model
from flowedge.export.int8_gate import Int8Report, Int8Request, int8_report, require_passed
from flowedge.export.parity import spread_samples
from flowedge.export.quantize import quantize_onnx, quantize_openvino
from flowedge.flows.data.datasets import labelled_samples, training_samples

log = logging.getLogger(__name__)


def normal_samples(card: ModelCard, folder: Path | None, count: int) -> np.ndarray:
    """Up to ``count`` normal samples for the quantiser, picked across the folder."""
    root = folder or card.training.get("data", {}).get("root")
    if not root or not Path(root).is_dir():
        raise ConfigError(
            f"--int8 needs normal samples for the quantiser and the training data of "
            f"{card.model_id} ({root or 'not recorded'}) is not on this machine: give "
            "--int8-samples DIR (normal samples only)"
        )
    files = [s.path for s in training_samples(root, card.input.kind)]  # refuses labelled sets
    batch = spread_samples(files, card, count)
    if batch is None:
        raise DataError(f"--int8-samples {root}: no readable {card.input.kind} sample")
    log.info("INT8: quantiser calibrated on %d normal sample(s) from %s", len(batch), root)
    return batch


def validation_scores(
    path: Path, opener: Opener, card: ModelCard, validation: Path
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, scores) of the labelled split, scored by the model at ``path``."""
    samples = labelled_samples(validation, card.input.kind)
    label_of = {str(s.path): s.label for s in samples}
    backend = opener(path, "cpu", 0)
    try:
        scored = score_paths(
            [s.path for s in samples],
            lambda batch: backend.infer(batch)[0],
            card,
            desc=f"validate {path.name}",
            show_progress=False,
        )
    finally:
        backend.close()
    return np.array([label_of[f] for f in scored.files]), scored.scores


def quantize_checked(
    staged: Path,
    opener: Opener,
    card: ModelCard,
    calibration: CalibrationRef | None,
    out: Path,
    int8: Int8Request,
    entries: dict[str, str],
) -> Int8Report:
    """Quantise the checked fp32 model at ``staged``, gate it, write ``out`` (or refuse, exit 4)."""
    samples = normal_samples(card, int8.samples, int8.count)
    quantized = staged.with_name(f"int8{staged.suffix}")
    if staged.suffix == ".xml":
        from flowedge.export import openvino_ir

        model, kept = quantize_openvino(openvino_ir.read(staged), samples, str(staged))
        openvino_ir.save(model, quantized)
    else:
        kept = quantize_onnx(staged, quantized, samples)
    labels, fp32 = validation_scores(staged, opener, card, int8.validation)
    _, got = validation_scores(quantized, opener, card, int8.validation)
    report = int8_report(
        labels,
        fp32,
        got,
        None if calibration is None else calibration.threshold,
        int8.bounds,
        card.score.higher_is_anomalous,
    )
    log.info("%s", report.summary())
    record = {**report.to_dict(), "kept_fp32": kept, "quantiser_samples": len(samples)}
    target = out if report.passed else failed_path(out)
    write_model(quantized, target, {**entries, metadata.INT8_KEY: json.dumps(record)})
    require_passed(report, str(out))
    log.info("wrote %s (INT8, card %s)", out, card.model_id)
    return report
