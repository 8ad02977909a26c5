"""ONNX -> TensorRT engine with fp32 reductions, an optimisation profile and a timing cache.

TensorRT 10 (weakly typed): the builder's FP16 flag lets every layer pick fp16;
the reduction layers (found by the same traversal as the ONNX fp16 conversion,
:mod:`export.graph`, on the TensorRT network) are pinned to fp32 with
``layer.precision``/``set_output_type`` and OBEY_PRECISION_CONSTRAINTS, so the
build fails instead of silently ignoring them.
TensorRT 11 (strongly typed only): precision follows the tensor types, so the
fp16-safe ONNX graph (fp16 up to z, fp32 reductions) is parsed into a
STRONGLY_TYPED network; an fp32 graph is converted first.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from flowedge.backends.tensorrt import gpu_identity, import_tensorrt
from flowedge.core import metadata
from flowedge.core.card import sha256_file
from flowedge.core.engine_meta import BatchProfile, EngineMeta, meta_path, write_meta
from flowedge.core.errors import CheckFailedError, ConfigError
from flowedge.export.fp16 import require_fp16_safe, to_fp16
from flowedge.export.graph import Node, reduction_nodes
from flowedge.export.onnx_graph import get_metadata

log = logging.getLogger(__name__)

WORKSPACE_BYTES = 2 << 30


@dataclass
class BuildRequest:
    onnx_path: Path
    out: Path
    precision: str = "fp16"  # fp32 | fp16 | int8
    profile: BatchProfile = BatchProfile()
    timing_cache: Path | None = None
    int8_images: Path | None = None
    strongly_typed: bool | None = None  # None: TensorRT >= 11


def network_nodes(network: Any) -> list[Node]:
    nodes = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        inputs = tuple(
            layer.get_input(k).name
            for k in range(layer.num_inputs)
            if layer.get_input(k) is not None
        )
        outputs = tuple(layer.get_output(k).name for k in range(layer.num_outputs))
        nodes.append(Node(layer.name, inputs, outputs))
    return nodes


def pin_reductions_fp32(network: Any, trt: Any, latents: list[str]) -> int:
    """Constrain every reduction layer (downstream of z or feeding only outputs) to fp32."""
    outputs = [network.get_output(i).name for i in range(network.num_outputs)]
    try:
        names = reduction_nodes(network_nodes(network), latents, outputs)
    except ValueError as exc:
        raise CheckFailedError(
            f"cannot find the latent tensors in the TensorRT network: {exc}"
        ) from exc
    floats = (trt.float32, trt.float16)
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.name not in names:
            continue
        float_outputs = [k for k in range(layer.num_outputs) if layer.get_output(k).dtype in floats]
        if not float_outputs:
            continue  # shape arithmetic (int) has no precision to pin
        layer.precision = trt.float32
        for k in float_outputs:
            layer.set_output_type(k, trt.float32)
        pinned += 1
    return pinned


def _parse(trt: Any, builder: Any, logger: Any, path: Path, strongly_typed: bool) -> Any:
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise CheckFailedError(
            f"TensorRT cannot parse {path}: {errors} (see 'flowedge export onnx' op lint)"
        )
    return network, parser


def _timing_cache(config: Any, path: Path | None) -> Any:
    data = path.read_bytes() if path is not None and path.is_file() else b""
    cache = config.create_timing_cache(data)
    config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def build_engine(request: BuildRequest) -> EngineMeta:
    if not request.onnx_path.is_file():
        raise ConfigError(
            f"ONNX model {request.onnx_path} not found; write it with 'flowedge export onnx'"
        )
    trt = import_tensorrt("'flowedge export trt'")
    source = onnx.load(str(request.onnx_path), load_external_data=False)
    meta = get_metadata(source)
    card = metadata.card_from_metadata(meta, str(request.onnx_path))
    latents = metadata.json_entry(meta, metadata.LATENTS_KEY, str(request.onnx_path), [])
    if request.precision != "fp32":
        require_fp16_safe(card, str(request.onnx_path))
    major = int(trt.__version__.split(".")[0])
    strongly = major >= 11 if request.strongly_typed is None else request.strongly_typed
    if request.precision == "int8" and strongly:
        raise ConfigError(
            "INT8 with a strongly typed network needs a Q/DQ graph; build fp16 instead"
        )
    with tempfile.TemporaryDirectory(prefix="flowedge-trt-") as tmp:
        onnx_path = request.onnx_path
        if strongly and request.precision == "fp16" and meta.get(metadata.PRECISION_KEY) != "fp16":
            onnx_path = Path(tmp) / "fp16.onnx"
            onnx.save(
                to_fp16(onnx.load(str(request.onnx_path)), str(request.onnx_path)), str(onnx_path)
            )
            log.info("strongly typed build: converted %s to the fp16-safe graph", request.onnx_path)
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network, _parser = _parse(trt, builder, logger, onnx_path, strongly)
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        profile = builder.create_optimization_profile()
        profile.set_shape(metadata.INPUT_NAME, *request.profile.shapes(card.input.tensor_shape))
        config.add_optimization_profile(profile)
        cache = _timing_cache(config, request.timing_cache)
        if not strongly and request.precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            pinned = pin_reductions_fp32(network, trt, latents)
            log.info("pinned %d reduction layer(s) to fp32", pinned)
        if request.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
            config.int8_calibrator = _int8_calibrator(request, card)
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise CheckFailedError(
            f"TensorRT failed to build an engine from {request.onnx_path} (see its log above)"
        )
    request.out.parent.mkdir(parents=True, exist_ok=True)
    request.out.write_bytes(bytes(serialized))
    if request.timing_cache is not None:
        request.timing_cache.write_bytes(bytes(cache.serialize()))
    gpu, capability = gpu_identity(0)
    engine_meta = EngineMeta(
        tensorrt_version=trt.__version__,
        gpu_name=gpu,
        compute_capability=capability,
        onnx_sha256=sha256_file(request.onnx_path),
        precision=request.precision,
        profile=request.profile,
        card=card.to_dict(),
        strongly_typed=strongly,
        calibration=metadata.json_entry(meta, metadata.CALIBRATION_KEY, str(request.onnx_path)),
    )
    write_meta(request.out, engine_meta)
    log.info("wrote %s and %s", request.out, meta_path(request.out).name)
    return engine_meta


def _int8_calibrator(request: BuildRequest, card: Any) -> Any:
    if request.int8_images is None:
        raise ConfigError("--int8 needs --int8-images DIR (normal images for calibration)")
    from flowedge.calibration.int8 import make_int8_calibrator

    return make_int8_calibrator(
        request.int8_images,
        card.input,
        request.out.with_name(request.out.name + ".int8cache"),
        request.profile.opt,
        card.input.tensor_shape,
    )
