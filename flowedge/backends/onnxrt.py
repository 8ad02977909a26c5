"""ONNX Runtime backend: the station's default, no torch needed.

The graph carries its model card (metadata ``flowedge.card``), so the station
preprocesses exactly as in training and refuses graphs that are not flowedge
exports or come from an incompatible card format.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph, InvalidProtobuf

from flowedge.backends.base import Backend, as_model_batch
from flowedge.core import metadata
from flowedge.core.card import CardError
from flowedge.core.errors import ConfigError

log = logging.getLogger(__name__)


def session_options(threads: int) -> ort.SessionOptions:
    """All graph optimisations, sequential execution (one frame batch at a time), fixed threads."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = max(threads, 0)  # 0: ONNX Runtime picks (one per core)
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only; our own log says what was loaded
    return options


def providers_for(device: str) -> list[str]:
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in available:
            raise ConfigError(
                f"model.device is '{device}' but this ONNX Runtime has no CUDA provider "
                f"(available: {', '.join(available)}); install onnxruntime-gpu or use device 'cpu'"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise ConfigError(
        f"model.device '{device}' is not supported by onnxruntime; use 'cpu' or 'cuda'"
    )


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, session: ort.InferenceSession, source: str) -> None:
        card, calibration, self.precision = metadata.model_entries(
            session.get_modelmeta().custom_metadata_map, source
        )
        super().__init__(card, calibration)
        self.session = session
        self.source = source
        inputs = session.get_inputs()
        names = [o.name for o in session.get_outputs()]
        if len(inputs) != 1 or names[:2] != list(metadata.OUTPUT_NAMES):
            raise CardError(
                f"{source}: expected one input and outputs {list(metadata.OUTPUT_NAMES)}, got "
                f"{[i.name for i in inputs]} -> {names}; export the checkpoint again"
            )
        self.input_name = inputs[0].name

    @classmethod
    def open(cls, path: Path, device: str = "cpu", threads: int = 0) -> OnnxRuntimeBackend:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(
                f"ONNX model {path} not found; give the file written by 'flowedge export onnx'"
            )
        try:
            session = ort.InferenceSession(
                str(path), sess_options=session_options(threads), providers=providers_for(device)
            )
        except (Fail, InvalidGraph, InvalidProtobuf) as exc:
            raise CardError(f"{path}: not a loadable ONNX graph ({exc}); export it again") from exc
        backend = cls(session, str(path))
        log.info(
            "onnxruntime: %s (%s, %s) on %s",
            path,
            backend.card.model_id,
            backend.precision,
            session.get_providers()[0],
        )
        return backend

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = as_model_batch(batch, self.input_shape, self.source)
        score, amap = self.session.run(list(metadata.OUTPUT_NAMES), {self.input_name: batch})
        return score.astype(np.float32, copy=False), amap.astype(np.float32, copy=False)
