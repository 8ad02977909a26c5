"""OpenVINO backend: Intel CPUs (and their integrated GPUs and NPUs) without torch.

Reads an OpenVINO IR (``.xml`` with its ``.bin``, from ``flowedge export openvino``) or,
when ``backend: openvino`` is named, the ``.onnx`` graph itself. Both carry the model
card the same way: OpenVINO keeps an ONNX graph's metadata under its ``framework``
run-time info, and the IR written from it keeps that section, so the station
preprocesses exactly as in training and refuses files that are not flowedge exports.

What is not quantised runs with fp32 arithmetic on the CPU (``INFERENCE_PRECISION_HINT``
f32): OpenVINO would otherwise pick bf16 on CPUs that have it, which loses the digits
the threshold depends on (the sums over z). An INT8 model's quantised parts run in INT8.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from flowedge.backends.base import Backend, Tuning, as_model_batch
from flowedge.core import metadata
from flowedge.core.card import CardError
from flowedge.core.errors import ConfigError

log = logging.getLogger(__name__)

SUFFIXES = (".xml", ".onnx")  # what core.read_model reads here (an IR's weights: its .bin)
DEVICES = ("CPU", "GPU", "NPU", "AUTO")  # model.device, any case; AUTO: OpenVINO picks
METADATA_SECTION = "framework"  # where OpenVINO keeps an ONNX graph's metadata_props
PROPERTIES = (
    "INFERENCE_NUM_THREADS",
    "NUM_STREAMS",
    "PERFORMANCE_HINT",
    "INFERENCE_PRECISION_HINT",
)


def model_metadata(model: ov.Model) -> dict[str, str]:
    """The flowedge metadata entries of an IR or ONNX model, as ONNX Runtime shows them."""
    info = model.get_rt_info()
    if METADATA_SECTION not in info:
        return {}
    return {key: str(value.astype(str)) for key, value in info[METADATA_SECTION].items()}


def set_model_metadata(model: ov.Model, entries: dict[str, str]) -> None:
    """Write entries where :func:`model_metadata` reads them (saved with the IR)."""
    for key, value in entries.items():
        model.set_rt_info(value, [METADATA_SECTION, key])


def device_name(core: ov.Core, device: str) -> str:
    """The OpenVINO device for ``model.device``; refused when this machine has none of it."""
    name = device.upper()
    if name not in DEVICES:
        raise ConfigError(
            f"model.device '{device}' is not an OpenVINO device; use one of "
            f"{', '.join(d.lower() for d in DEVICES)}"
        )
    present = core.available_devices  # e.g. ['CPU', 'GPU.0', 'GPU.1']
    if name != "AUTO" and not any(d.split(".")[0] == name for d in present):
        raise ConfigError(
            f"model.device '{device}': OpenVINO finds no {name} on this machine (present: "
            f"{', '.join(present) or 'none'}); install its driver or use device 'cpu' or 'auto'"
        )
    return name


def compile_config(device: str, threads: int, tuning: Tuning) -> dict[str, Any]:
    """Properties for ``compile_model``: only what the config sets (the rest: OpenVINO's)."""
    config: dict[str, Any] = {}
    if tuning.hint:
        config["PERFORMANCE_HINT"] = tuning.hint.upper()
    if tuning.streams:
        config["NUM_STREAMS"] = tuning.streams
    if device == "CPU":
        config["INFERENCE_PRECISION_HINT"] = "f32"  # never bf16 (module docstring)
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
    elif threads:
        raise ConfigError(
            f"inference threads ({threads}) apply to OpenVINO's CPU only, not to {device}; "
            "set model.intra_op_threads to 0"
        )
    return config


class OpenVinoBackend(Backend):
    name = "openvino"

    def __init__(self, compiled: ov.CompiledModel, meta: dict[str, str], source: str) -> None:
        card, calibration, self.precision = metadata.model_entries(meta, source)
        super().__init__(card, calibration)
        self.compiled = compiled
        self.source = source
        names = [sorted(o.get_names()) for o in compiled.outputs]  # a tensor may have several
        missing = [n for n in metadata.OUTPUT_NAMES if not any(n in found for found in names)]
        if len(compiled.inputs) != 1 or missing:
            raise CardError(
                f"{source}: expected one input and outputs {list(metadata.OUTPUT_NAMES)}, got "
                f"{len(compiled.inputs)} input(s) -> {names}; export the checkpoint again"
            )
        self.outputs = [compiled.output(n) for n in metadata.OUTPUT_NAMES]
        self.request = compiled.create_infer_request()

    @classmethod
    def open(
        cls, path: Path, device: str = "cpu", threads: int = 0, tuning: Tuning | None = None
    ) -> OpenVinoBackend:
        path = Path(path)
        if not path.is_file() or path.suffix.lower() not in SUFFIXES:
            raise ConfigError(
                f"OpenVINO model {path} not found or not {' / '.join(SUFFIXES)}; give the .xml "
                "written by 'flowedge export openvino' (its .bin beside it) or an .onnx graph"
            )
        core = ov.Core()
        target = device_name(core, device)
        try:
            model = core.read_model(str(path))
        except RuntimeError as exc:
            raise CardError(
                f"{path}: not a loadable OpenVINO model ({exc}); export it again"
            ) from exc
        compiled = core.compile_model(
            model, target, compile_config(target, threads, tuning or Tuning())
        )
        backend = cls(compiled, model_metadata(model), str(path))
        log.info(
            "openvino %s: %s (%s, %s) on %s, %s",
            ov.get_version(),
            path,
            backend.card.model_id,
            backend.precision,
            target,
            backend.properties(),
        )
        return backend

    def properties(self) -> dict[str, str]:
        """What the compiled model runs with (threads, streams, hint, precision), for logs."""
        found = {}
        for name in PROPERTIES:
            try:
                found[name] = str(self.compiled.get_property(name))
            except RuntimeError:  # a device without that property
                continue
        return found

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = as_model_batch(batch, self.input_shape, self.source)
        results = self.request.infer({0: batch})
        score, amap = (np.asarray(results[o]) for o in self.outputs)
        return score.astype(np.float32, copy=True), amap.astype(np.float32, copy=True)
