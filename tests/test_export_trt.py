"""TensorRT: metadata and compatibility rules, profiles and fp32 pinning (no TensorRT needed),
plus an engine build + parity test that runs only where TensorRT and a GPU exist."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from flowedge.cli import main
from flowedge.core.card import CardError
from flowedge.core.engine_meta import (
    BatchProfile,
    EngineMeta,
    check_compatible,
    read_meta,
    write_meta,
)
from flowedge.core.errors import ConfigError, ModelMismatchError
from flowedge.export.tensorrt_build import pin_reductions_fp32

HAS_TRT = importlib.util.find_spec("tensorrt") is not None
needs_trt = pytest.mark.skipif(not HAS_TRT, reason="TensorRT is not installed (GPU stations only)")


def _meta(**changes) -> EngineMeta:
    base = dict(
        tensorrt_version="10.3.0",
        gpu_name="NVIDIA RTX 4090",
        compute_capability="8.9",
        onnx_sha256="ab" * 32,
        precision="fp16",
        profile=BatchProfile(1, 4, 8),
        card={"detector": "csflow"},
    )
    return EngineMeta(**{**base, **changes})


def test_profile_shapes_and_validation() -> None:
    assert BatchProfile(1, 4, 8).shapes((3, 64, 64)) == (
        (1, 3, 64, 64),
        (4, 3, 64, 64),
        (8, 3, 64, 64),
    )
    for bad in ((0, 1, 2), (2, 1, 4), (1, 9, 8)):
        with pytest.raises(ConfigError, match="min <= opt <= max"):
            BatchProfile(*bad)


def test_metadata_roundtrip_and_missing(tmp_path: Path) -> None:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    with pytest.raises(CardError, match="rebuild"):
        read_meta(engine)
    write_meta(engine, _meta())
    assert read_meta(engine) == _meta()


def test_compatibility_check() -> None:
    check_compatible(_meta(), "10.3.0", "NVIDIA RTX 4090", "8.9", "m.engine")
    with pytest.raises(ModelMismatchError, match=r"TensorRT 10\.3\.0.*10\.8\.0.*Rebuild"):
        check_compatible(_meta(), "10.8.0", "NVIDIA RTX 4090", "8.9", "m.engine")
    with pytest.raises(ModelMismatchError, match=r"compute capability 8\.9.*Orin.*8\.7"):
        check_compatible(_meta(), "10.3.0", "Orin", "8.7", "m.engine")


# --- a TensorRT-shaped network stand-in to test the fp32 pinning without TensorRT -----------


@dataclass
class _Tensor:
    name: str
    dtype: str = "float"


@dataclass
class _Layer:
    name: str
    inputs: list[_Tensor]
    outputs: list[_Tensor]
    precision: str | None = None
    output_types: dict[int, str] = field(default_factory=dict)

    num_inputs = property(lambda self: len(self.inputs))
    num_outputs = property(lambda self: len(self.outputs))

    def get_input(self, k):
        return self.inputs[k]

    def get_output(self, k):
        return self.outputs[k]

    def set_output_type(self, k, dtype):
        self.output_types[k] = dtype


class _Network:
    def __init__(self, layers, outputs):
        self.layers, self.outputs = layers, outputs

    num_layers = property(lambda self: len(self.layers))
    num_outputs = property(lambda self: len(self.outputs))

    def get_layer(self, i):
        return self.layers[i]

    def get_output(self, i):
        return self.outputs[i]


class _Trt:
    float32, float16 = "float", "half"


def test_pin_reductions_marks_only_the_fp32_part() -> None:
    t = {n: _Tensor(n) for n in ("input", "f", "s", "z0", "sq", "score", "ld", "map")}
    shape = _Tensor("shape", dtype="int32")
    layers = [
        _Layer("conv", [t["input"]], [t["f"]]),
        _Layer("coupling_s", [t["f"]], [t["s"]]),
        _Layer("coupling", [t["f"], t["s"]], [t["z0"]]),
        _Layer("square", [t["z0"]], [t["sq"]]),
        _Layer("logdet", [t["s"]], [t["ld"]]),  # feeds the score, not z
        _Layer("sum", [t["sq"], t["ld"]], [t["score"]]),
        _Layer("shape_of", [t["input"]], [shape]),
        _Layer("resize", [t["sq"], shape], [t["map"]]),
    ]
    net = _Network(layers, [t["score"], t["map"]])
    assert pin_reductions_fp32(net, _Trt, ["z0"]) == 4
    pinned = {layer.name for layer in layers if layer.precision == "float"}
    assert pinned == {"square", "logdet", "sum", "resize"}
    assert all(layer.output_types == {0: "float"} for layer in layers if layer.name in pinned)
    assert layers[6].precision is None  # int shape layer untouched


@pytest.mark.skipif(HAS_TRT, reason="checks the message shown where TensorRT is absent")
def test_export_trt_without_tensorrt_is_a_clear_error(tmp_path: Path, capsys) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    assert main(["export", "trt", str(model)]) == 2
    assert "needs TensorRT" in capsys.readouterr().err


@needs_trt
def test_engine_build_matches_onnxruntime(tmp_path: Path) -> None:
    pytest.importorskip("cuda", reason="cuda-python is not installed")
    sys.path.insert(0, str(Path(__file__).parent))
    from test_export import StandInDetector

    from flowedge.backends.onnxrt import OnnxRuntimeBackend
    from flowedge.backends.tensorrt import TensorRTBackend
    from flowedge.export.onnx_export import export_onnx
    from flowedge.export.parity import compare, synthetic_samples
    from flowedge.export.tensorrt_build import BuildRequest, build_engine

    det = StandInDetector().eval()
    onnx_path = tmp_path / "m.onnx"
    export_onnx(det, det.card(), onnx_path)
    engine = tmp_path / "m.engine"
    build_engine(BuildRequest(onnx_path, engine, "fp16", BatchProfile(1, 2, 4), tmp_path / "cache"))
    assert (tmp_path / "cache").stat().st_size > 0
    batch = synthetic_samples(det.card().input, 3, 3)
    ref = OnnxRuntimeBackend.open(onnx_path, "cpu", 1).infer(batch)
    got = TensorRTBackend.open(engine, "cuda", 0).infer(batch)
    assert compare(ref, got, "fp16").passed
    write_meta(engine, _meta(card=read_meta(engine).card))  # pretend: built elsewhere
    with pytest.raises(ModelMismatchError, match="Rebuild"):
        TensorRTBackend.open(engine, "cuda", 0)
    np.testing.assert_equal(got[0].shape, (6,))
