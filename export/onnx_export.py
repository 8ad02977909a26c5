"""Detector -> one ONNX graph (backbone included), dynamic batch, card embedded.

Exporter choice: the TorchScript-tracing exporter (``dynamo=False``). Tracing
runs the module once and records the tensor ops, so the FrEIA blocks' Python
loops (blocks, scales, coupling halves) are unrolled into a flat graph and
TorchScript *scripting* is never needed (FrEIA's ``AllInOneBlock`` is not
scriptable, anchors B #18-19). ``torch.export`` (dynamo) instead has to prove
FrEIA's shape checks and data-dependent branches symbolically and fails or
specialises the batch; the tracer's output also uses only long-standing ops
that TensorRT's parser knows. Traced graphs freeze data-dependent control
flow, which is why every export is followed by a parity check at two batch
sizes. The known flow export failures are handled here: ``padding="same"``
convolutions are rewritten to explicit padding (anchors B #11), the recursion
limit is raised for deep flows, and Softplus(beta != 1) is covered by a test.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import onnx
import torch
from torch import nn

from flowedge.core import metadata
from flowedge.core.card import ModelCard
from flowedge.core.metadata import MIN_OPSET, check_opset
from flowedge.export.calibration_ref import CalibrationRef
from flowedge.export.onnx_graph import name_nodes, set_metadata
from flowedge.flows.detectors.base import Detector

log = logging.getLogger(__name__)

_RECURSION_LIMIT = 20000


class _WithLatents(nn.Module):
    """Exposes the latents as extra outputs so the graph knows where z is (fp16 boundary)."""

    def __init__(self, detector: Detector, map_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.detector = detector
        self.map_shape = map_shape

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        latents = self.detector.latents(self.detector.features(x))
        score, amap = self.detector.reduce(latents, self.map_shape)
        return (score.float(), amap.float(), *latents)


@dataclass(frozen=True)
class ExportedGraph:
    path: Path
    latents: tuple[str, ...]
    opset: int


def explicit_same_padding(module: nn.Module) -> int:
    """Rewrite zero-padded ``padding="same"`` convolutions to explicit padding; returns the count.

    The exporter cannot lower ``aten::_convolution_mode`` on every version, and
    asymmetric "same" padding (even kernels) needs a separate Pad anyway.
    """
    count = 0
    for name, child in list(module.named_children()):
        count += explicit_same_padding(child)
        if not (isinstance(child, nn.modules.conv._ConvNd) and child.padding == "same"):
            continue
        if child.padding_mode != "zeros":
            continue  # non-zero modes already pad explicitly with F.pad in forward
        totals = [d * (k - 1) for d, k in zip(child.dilation, child.kernel_size, strict=True)]
        left = [t // 2 for t in totals]
        if all(t % 2 == 0 for t in totals):
            child.padding = tuple(left)
            replacement: nn.Module = child
        else:
            pads: list[int] = []
            for total, lo in zip(reversed(totals), reversed(left), strict=True):
                pads += [lo, total - lo]
            child.padding = (0,) * len(totals)
            pad_cls = {1: nn.ConstantPad1d, 2: nn.ConstantPad2d, 3: nn.ConstantPad3d}[len(totals)]
            replacement = nn.Sequential(pad_cls(tuple(pads), 0.0), child)
        setattr(module, name, replacement)
        count += 1
    return count


@contextlib.contextmanager
def _deep_recursion() -> Iterator[None]:
    """Deep flows (many blocks x scales) exceed Python's default limit while tracing."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, _RECURSION_LIMIT))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def export_onnx(
    detector: Detector,
    card: ModelCard,
    out: Path,
    opset: int = MIN_OPSET,
    calibration: CalibrationRef | None = None,
) -> ExportedGraph:
    """Trace ``detector`` to ``out`` (fp32): input [B, *card.input.tensor_shape], outputs
    ``score`` [B] and ``map`` [B, *card.input.map_shape]."""
    check_opset(opset)
    module = copy.deepcopy(detector).to("cpu").eval()
    rewritten = explicit_same_padding(module)
    if rewritten:
        log.info(
            "rewrote %d padding='same' convolution(s) to explicit padding for export", rewritten
        )
    wrapper = _WithLatents(module, card.input.map_shape).eval()
    # batch 2 so the tracer cannot specialise anything to a batch of one
    dummy = torch.zeros(2, *card.input.tensor_shape)
    with torch.no_grad():
        n_latents = len(wrapper(dummy)) - 2
    latent_names = tuple(f"z{i}" for i in range(n_latents))
    names = [*metadata.OUTPUT_NAMES, *latent_names]
    out.parent.mkdir(parents=True, exist_ok=True)
    with _deep_recursion(), warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        torch.onnx.export(
            wrapper,
            (dummy,),
            str(out),
            dynamo=False,
            opset_version=opset,
            input_names=[metadata.INPUT_NAME],
            output_names=names,
            dynamic_axes={name: {0: "batch"} for name in [metadata.INPUT_NAME, *names]},
            do_constant_folding=True,
        )
    for warning in caught:
        if issubclass(warning.category, torch.jit.TracerWarning):
            log.warning(
                "tracer: %s (the parity check at two batch sizes verifies it)", warning.message
            )
    model = onnx.load(str(out))
    name_nodes(model)
    keep = [o for o in model.graph.output if o.name in metadata.OUTPUT_NAMES]
    del model.graph.output[:]
    model.graph.output.extend(keep)
    if calibration is not None:
        card = replace(card, calibration_sha256=calibration.sha256)
    entries = {
        metadata.CARD_KEY: card.to_json(),
        metadata.LATENTS_KEY: json.dumps(list(latent_names)),
        metadata.PRECISION_KEY: "fp32",
    }
    if calibration is not None:
        entries[metadata.CALIBRATION_KEY] = json.dumps(
            {"threshold": calibration.threshold, "sha256": calibration.sha256}
        )
    set_metadata(model, entries)
    model.producer_name = "flowedge"
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(out))
    return ExportedGraph(out, latent_names, opset)
