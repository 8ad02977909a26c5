"""``flowedge export openvino``: the checked ONNX graph converted to an OpenVINO IR.

The IR is converted from the graph ``flowedge export onnx`` would write (fp32, or the
fp16-safe graph: fp16 up to z, reductions fp32, refused for detectors whose log-det
sums sit inside the flow, by the same rule), so precision decisions are made once, on
ONNX. The conversion keeps the graph's metadata (card, calibration, latents) as the
IR's ``framework`` run-time info, where the backend reads it. Weights are stored as
computed (no ``compress_to_fp16``: an fp32 model stays fp32 on disk).
"""

from __future__ import annotations

from pathlib import Path

import openvino as ov

from flowedge.backends.openvino_backend import model_metadata, set_model_metadata


def convert(onnx_path: Path) -> ov.Model:
    """The OpenVINO model of an ONNX graph, its flowedge metadata carried over."""
    model = ov.convert_model(str(onnx_path))
    if not model_metadata(model):  # an OpenVINO that drops ONNX metadata_props
        set_model_metadata(model, model_metadata(ov.Core().read_model(str(onnx_path))))
    return model


def save(model: ov.Model, out: Path, entries: dict[str, str] | None = None) -> None:
    """Write ``out`` (.xml) and its .bin, with extra metadata ``entries``."""
    if entries:
        set_model_metadata(model, entries)
    out.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(out), compress_to_fp16=False)


def read(path: Path) -> ov.Model:
    return ov.Core().read_model(str(path))
