"""``flowedge export onnx|openvino``: export, convert, lint and parity-check in one step.

A model is only left at ``--out`` when it passed; a failing one is kept as
``<out>.failed`` (an IR: ``<stem>.failed.xml``) for inspection and the command exits 5. An OpenVINO IR is
the checked graph converted, and checked again on OpenVINO. With ``--int8`` the checked
fp32 model is quantised and written only if it passes the INT8 gate
(:mod:`export.int8_gate`, exit 4 otherwise).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from flowedge.backends.base import Backend
from flowedge.backends.onnxrt import OnnxRuntimeBackend
from flowedge.core import metadata
from flowedge.core.errors import CheckFailedError
from flowedge.core.metadata import MIN_OPSET
from flowedge.export.calibration_ref import CalibrationRef, load_calibration
from flowedge.export.int8_gate import Int8Request
from flowedge.export.onnx_export import export_onnx
from flowedge.export.onnx_graph import get_metadata, set_metadata
from flowedge.export.oplint import supported_ops, unsupported_ops
from flowedge.export.parity import (
    ParityReport,
    compare,
    fp16_faithful_infer,
    parity_samples,
    run_in_batches,
)
from flowedge.flows.checkpoint import load_checkpoint
from flowedge.flows.detectors.base import Detector

log = logging.getLogger(__name__)


Opener = Callable[[Path, str, int], Backend]
ONNX, OPENVINO = "onnx", "openvino"  # the targets this module writes


@dataclass
class ExportRequest:
    checkpoint: Path
    out: Path
    opset: int = MIN_OPSET
    fp16: bool = False
    calibration: Path | None = None
    samples: Path | None = None
    score_rtol: float | None = None  # None: the default for the precision (see export.parity)
    target: str = ONNX  # or OPENVINO: the checked graph converted to an IR
    int8: Int8Request | None = None  # quantise the checked fp32 model, keep it if it passes


def torch_outputs(
    detector: Detector, batch: np.ndarray, chunk: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    def infer(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            score, amap = detector.graph_outputs(torch.from_numpy(x))
        return score.float().numpy(), amap.float().numpy()

    return run_in_batches(infer, batch, sizes=(chunk,))


FAITHFUL_SAMPLES = 2  # fp16 graphs: first normal and first anomalous sample


def check_graph(
    path: Path,
    reference: tuple[np.ndarray, np.ndarray],
    batch: np.ndarray,
    calibration: CalibrationRef | None,
    score_rtol: float | None = None,
    fp16_faithful: bool = False,
    opener: Opener = OnnxRuntimeBackend.open,
) -> ParityReport:
    """Run the model through a station backend (batch 1 and 3) and compare.

    ``opener`` opens it (default: ONNX Runtime); ``fp16_faithful`` runs ONNX's reference
    evaluator instead (true fp16 arithmetic).
    """
    backend = opener(path, "cpu", 0)
    infer = fp16_faithful_infer(path) if fp16_faithful else backend.infer
    got = run_in_batches(infer, batch, sizes=(1, 3))
    return compare(
        reference,
        got,
        precision=backend.precision,
        threshold=None if calibration is None else calibration.threshold,
        higher_is_anomalous=backend.card.score.higher_is_anomalous,
        score_rtol=score_rtol,
    )


def lint(model: onnx.ModelProto, source: str) -> list[str]:
    version, _ = supported_ops()
    findings = [str(f) for f in unsupported_ops(model)]
    if findings:
        log.warning(
            "%s: ops not in TensorRT %s's ONNX parser list: %s (a TensorRT build may fail)",
            source,
            version,
            ", ".join(findings),
        )
    return findings


def parity_checks(
    staged: Path,
    reference,
    batch: np.ndarray,
    request: ExportRequest,
    calibration: CalibrationRef | None,
) -> dict[str, ParityReport]:
    """ONNX Runtime on every sample; for fp16 graphs also true fp16 arithmetic on two."""
    reports = {
        "onnxruntime": check_graph(staged, reference, batch, calibration, request.score_rtol)
    }
    log.info("onnxruntime: %s", reports["onnxruntime"].summary())
    if request.fp16:
        picks = sorted({0, len(batch) // 2})  # first normal and first synthetic defect
        reports["fp16_reference_evaluator"] = check_graph(
            staged,
            tuple(r[picks] for r in reference),
            batch[picks],
            calibration,
            request.score_rtol,
            fp16_faithful=True,
        )
        log.info("fp16 reference evaluator: %s", reports["fp16_reference_evaluator"].summary())
    return reports


def stage_graph(detector: Detector, card, staged: Path, request: ExportRequest, calibration):
    """Export (and for fp16 convert) the graph to ``staged``; lint it for TensorRT."""
    export_onnx(detector, card, staged, opset=request.opset, calibration=calibration)
    model = onnx.load(str(staged))
    if request.fp16:
        from flowedge.export.fp16 import to_fp16  # onnxconverter-common: only for fp16 graphs

        model = to_fp16(model, source=str(request.checkpoint))
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, str(staged))
    lint(model, str(request.out))


def failed_path(out: Path) -> Path:
    """Where a model that failed a check is kept: ``model.onnx.failed``; an IR keeps its
    suffix (``model.failed.xml``), which its ``.bin`` is named after."""
    if out.suffix == ".xml":
        return out.with_name(f"{out.stem}.failed{out.suffix}")
    return out.with_name(out.name + ".failed")


def write_model(staged: Path, target: Path, entries: dict[str, str]) -> None:
    """Copy a staged model (.onnx or .xml) to ``target`` with extra metadata ``entries``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if staged.suffix == ".xml":
        from flowedge.export import openvino_ir

        openvino_ir.save(openvino_ir.read(staged), target, entries)
        return
    model = onnx.load(str(staged))
    set_metadata(model, {**get_metadata(model), **entries})
    onnx.save(model, str(target))


def run_export(request: ExportRequest) -> dict[str, ParityReport]:
    calibration = load_calibration(request.calibration) if request.calibration else None
    detector, card = load_checkpoint(request.checkpoint, device="cpu")
    batch = parity_samples(card, request.samples)
    reference = torch_outputs(detector, batch)
    out = request.out
    with tempfile.TemporaryDirectory(prefix="flowedge-export-") as tmp:
        staged = Path(tmp) / "model.onnx"
        stage_graph(detector, card, staged, request, calibration)
        reports = parity_checks(staged, reference, batch, request, calibration)
        opener: Opener = OnnxRuntimeBackend.open
        if request.target == OPENVINO:
            from flowedge.backends.openvino_backend import OpenVinoBackend
            from flowedge.export import openvino_ir

            staged, opener = Path(tmp) / "model.xml", OpenVinoBackend.open
            openvino_ir.save(openvino_ir.convert(Path(tmp) / "model.onnx"), staged)
            reports["openvino"] = check_graph(
                staged, reference, batch, calibration, request.score_rtol, opener=opener
            )
            log.info("openvino: %s", reports["openvino"].summary())
        passed = all(r.passed for r in reports.values())
        record = {"passed": passed, **{k: r.to_dict() for k, r in reports.items()}}
        entries = {metadata.PARITY_KEY: json.dumps(record)}
        if passed and request.int8 is not None:
            from flowedge.export.int8_export import quantize_checked

            quantize_checked(staged, opener, card, calibration, out, request.int8, entries)
            return reports
        target = out if passed else failed_path(out)
        write_model(staged, target, entries)
    if not passed:
        failed = [f"{name}: {r.summary()}" for name, r in reports.items() if not r.passed]
        flips = [f for r in reports.values() for f in r.flips][:5]
        details = "; ".join(
            f"sample {f['sample']}: {f['reference']:.6g} -> {f['graph']:.6g} at threshold "
            f"{f['threshold']:.6g}"
            for f in flips
        )
        raise CheckFailedError(
            f"parity check failed, model not written to {out} (kept as {target} for inspection): "
            f"{'; '.join(failed)}{'; ' + details if details else ''}"
        )
    log.info("wrote %s (%s, card %s)", out, "fp16-safe" if request.fp16 else "fp32", card.model_id)
    return reports
