"""ONNX export: parity, card metadata, dynamic batch, fp16 safety, op lint, CLI exit codes.

Most tests use a tiny stand-in detector shaped like CS-Flow (conv backbone with
``padding="same"``, affine couplings with Softplus(beta=0.5) and soft-clamped
scales, fp32 sum-of-squares reduction), so they run in seconds without the
real detectors; the CLI tests use the shared ``tiny_checkpoint``.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from flowedge.backends.onnxrt import OnnxRuntimeBackend
from flowedge.core import metadata
from flowedge.core.card import CardError, ImageInput, ModelCard, ScoreSpec
from flowedge.core.errors import ConfigError
from flowedge.export.calibration_ref import CalibrationRef
from flowedge.export.checked import check_graph, torch_outputs
from flowedge.export.fp16 import fp32_nodes, to_fp16, to_fp16_naive
from flowedge.export.onnx_export import explicit_same_padding, export_onnx
from flowedge.export.onnx_graph import get_metadata, set_metadata
from flowedge.export.oplint import unsupported_ops
from flowedge.export.parity import compare, synthetic_samples
from flowedge.flows.config import ImageDetectorConfig
from flowedge.flows.detectors.base import Detector


class _Coupling(nn.Module):
    def __init__(self, channels: int, clamp: float = 3.0) -> None:
        super().__init__()
        half = channels // 2
        self.net = nn.Sequential(
            nn.Conv2d(half, 16, 3, padding="same"),
            nn.Softplus(beta=0.5),
            nn.Conv2d(16, 2 * (channels - half), 3, padding=1),
        )
        self.clamp = clamp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[1] // 2
        x1, x2 = x[:, :half], x[:, half:]
        s, t = self.net(x1).chunk(2, dim=1)
        s = self.clamp * 0.636 * torch.atan(s / self.clamp)
        return torch.cat([x2 * torch.exp(s) + t, x1], dim=1)


class StandInDetector(Detector):
    """Two scales, two couplings each; score = sum over scales of 0.5 * sum(z**2)."""

    name = "standin"

    def __init__(
        self, size: int = 32, channels: int = 8, blocks: int = 2, gain: float = 1.0
    ) -> None:
        super().__init__(ImageDetectorConfig(kind=self.name, image_size=size), None, {})
        torch.manual_seed(0)
        self.size, self.gain = size, gain
        self.backbone = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding="same"), nn.ReLU(), nn.AvgPool2d(4)
        )
        self.flows = nn.ModuleList(
            nn.ModuleList(_Coupling(channels) for _ in range(blocks)) for _ in range(2)
        )

    def features(self, x):
        f = self.backbone(x) * self.gain
        return [f, F.avg_pool2d(f, 2)]

    def latents(self, feats):
        out = []
        for f, blocks in zip(feats, self.flows, strict=True):
            for block in blocks:
                f = block(f)
            out.append(f)
        return out

    def reduce(self, latents, input_hw):
        sq = [z.float() ** 2 for z in latents]
        score = sum(0.5 * s.sum(dim=(1, 2, 3)) for s in sq)
        amap = F.interpolate(
            sq[0].mean(dim=1, keepdim=True), size=input_hw, mode="bilinear", align_corners=False
        )[:, 0]
        return score, amap

    def score_spec(self):
        return ScoreSpec(kind="sum_z2")

    def card(self) -> ModelCard:
        spec = ImageInput(height=self.size, width=self.size)
        return ModelCard(
            detector=self.name,
            detector_params={},
            backbone={"name": "conv"},
            input=spec,
            score=self.score_spec(),
            weights_sha256="0" * 64,
        )


@pytest.fixture(scope="module")
def standin() -> StandInDetector:
    return StandInDetector().eval()


@pytest.fixture(scope="module")
def exported(standin: StandInDetector, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "standin.onnx"
    export_onnx(standin, standin.card(), out, calibration=CalibrationRef(1.5, "ab" * 32, "c.json"))
    return out


@pytest.fixture(scope="module")
def samples(standin: StandInDetector) -> np.ndarray:
    return synthetic_samples(standin.card().input, n_normal=3, n_anomalous=3)


def test_graph_is_valid_with_opset_17_and_card(exported: Path, standin: StandInDetector) -> None:
    model = onnx.load(str(exported))
    onnx.checker.check_model(model, full_check=True)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert [o.name for o in model.graph.output] == ["score", "map"]
    meta = get_metadata(model)
    card = metadata.card_from_metadata(meta, "test")
    assert card.detector == "standin" and card.calibration_sha256 == "ab" * 32
    assert json.loads(meta[metadata.CALIBRATION_KEY])["threshold"] == 1.5
    assert json.loads(meta[metadata.LATENTS_KEY]) == ["z0", "z1"]
    backend = OnnxRuntimeBackend.open(exported, "cpu", 1)
    assert backend.card.to_dict() == card.to_dict()


def test_dynamic_batch_matches_torch(exported: Path, standin, samples: np.ndarray) -> None:
    backend = OnnxRuntimeBackend.open(exported, "cpu", 1)
    ref = torch_outputs(standin, samples)
    for size in (1, 3):
        score, amap = backend.infer(samples[:size])
        assert score.shape == (size,) and amap.shape == (size, 32, 32)
        np.testing.assert_allclose(score, ref[0][:size], rtol=1e-4)
    report = check_graph(exported, ref, samples, calibration=None)
    assert report.passed, report.summary()


def test_samples_contain_synthetic_defects(samples: np.ndarray) -> None:
    diff = np.abs(samples[3:] - samples[:3]).max(axis=(1, 2, 3))
    assert samples.shape == (6, 3, 32, 32) and np.all(diff > 1.0)  # blob + scratch, normalised


def test_tampered_graph_fails_parity(exported: Path, standin, samples, tmp_path: Path) -> None:
    model = onnx.load(str(exported))
    init = next(i for i in model.graph.initializer if onnx.numpy_helper.to_array(i).ndim == 4)
    weights = onnx.numpy_helper.to_array(init) * 1.05
    init.CopyFrom(onnx.numpy_helper.from_array(weights.astype(np.float32), init.name))
    bad = tmp_path / "tampered.onnx"
    onnx.save(model, str(bad))
    report = check_graph(bad, torch_outputs(standin, samples), samples, calibration=None)
    assert not report.passed and report.max_score_rel_err > report.score_rtol


def test_decision_flip_is_a_failure() -> None:
    ref = (np.array([1.0, 2.0, 3.0]), np.zeros((3, 2, 2)))
    got = (np.array([1.0, 1.9999, 3.0]), np.zeros((3, 2, 2)))
    report = compare(ref, got, "fp32", threshold=1.99995)  # decisions are score > threshold
    assert report.max_score_rel_err < report.score_rtol and report.flips and not report.passed
    assert compare(ref, ref, "fp32").passed


def test_quantile_thresholds_fail_real_flips_and_report_borderline_ones() -> None:
    ref = (np.array([1.0, 2.0, 2.0005, 4.0, 8.0]), np.zeros((5, 2, 2)))
    got = (ref[0] * np.array([1, 1, 0.9995, 1, 1]), ref[1])  # a near-tie swaps order
    report = compare(ref, got, "fp32")
    assert report.passed and report.borderline and not report.flips
    moved = (ref[0] * np.array([1, 1, 1, 0.3, 1]), ref[1])  # far from any threshold: a real flip
    assert compare(ref, moved, "fp32").flips


def test_backend_refuses_graph_without_card(exported: Path, tmp_path: Path) -> None:
    model = onnx.load(str(exported))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    with pytest.raises(CardError, match="no model card"):
        OnnxRuntimeBackend.open(bare, "cpu", 1)
    card = json.loads(get_metadata(onnx.load(str(exported)))[metadata.CARD_KEY])
    set_metadata(model, {metadata.CARD_KEY: json.dumps({**card, "card_format": "9.0"})})
    onnx.save(model, str(bare))
    with pytest.raises(CardError, match="format 9.0"):
        OnnxRuntimeBackend.open(bare, "cpu", 1)


def test_same_padding_rewrite_keeps_outputs() -> None:
    conv = nn.Sequential(nn.Conv2d(3, 4, (3, 4), padding="same", dilation=(2, 1)))
    x = torch.randn(1, 3, 9, 10)
    expected = conv(x)
    assert explicit_same_padding(conv) == 1
    torch.testing.assert_close(conv(x), expected)


def test_fp16_keeps_reductions_fp32_and_parity(
    exported: Path, standin, samples, tmp_path: Path
) -> None:
    model = onnx.load(str(exported))
    block = fp32_nodes(model)
    ops = {n.op_type for n in model.graph.node if n.name in block}
    assert {"Pow", "ReduceSum"} <= ops or {"Mul", "ReduceSum"} <= ops
    assert not any(n.op_type == "Conv" for n in model.graph.node if n.name in block)
    half = to_fp16(model)
    onnx.checker.check_model(half, full_check=True)
    fp16_inits = [i for i in half.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert fp16_inits  # the convolutions really are fp16
    path = tmp_path / "half.onnx"
    onnx.save(half, str(path))
    ref = torch_outputs(standin, samples)
    for faithful in (False, True):
        report = check_graph(path, ref, samples, calibration=None, fp16_faithful=faithful)
        assert report.precision == "fp16" and report.passed, report.summary()


def test_fp16_refuses_a_score_with_log_determinants(exported: Path, standin) -> None:
    """Log-det terms sit beside z, not after it: fp16 cannot keep them fp32, so it refuses."""
    model = onnx.load(str(exported))
    card = replace(standin.card(), score=ScoreSpec(kind="nll", uses_logdet=True))
    set_metadata(model, {**get_metadata(model), metadata.CARD_KEY: card.to_json()})
    with pytest.raises(ConfigError, match="log-determinant terms.*export and build fp32"):
        to_fp16(model, source="logdet.onnx")


def test_naive_fp16_overflows_where_safe_fp16_does_not(tmp_path: Path) -> None:
    # 12 x 12 x 304 latent values (CS-Flow's channels): the fp16 sum of squares exceeds 65504
    det = StandInDetector(size=48, channels=304, blocks=1, gain=4.0).eval()
    out = tmp_path / "big.onnx"
    export_onnx(det, det.card(), out)
    batch = synthetic_samples(det.card().input, n_normal=1, n_anomalous=1)
    ref = torch_outputs(det, batch)
    assert np.all(ref[0] > 65504)  # the case is built to overflow fp16
    model = onnx.load(str(out))
    for convert, name in ((to_fp16, "safe"), (to_fp16_naive, "naive")):
        onnx.save(convert(model), str(tmp_path / f"{name}.onnx"))
    safe = check_graph(tmp_path / "safe.onnx", ref, batch, calibration=None, fp16_faithful=True)
    naive = check_graph(tmp_path / "naive.onnx", ref, batch, calibration=None, fp16_faithful=True)
    assert safe.passed, safe.summary()
    assert not naive.passed and naive.nonfinite == len(batch)


def test_oplint_flags_unknown_ops(exported: Path) -> None:
    model = onnx.load(str(exported))
    assert unsupported_ops(model) == []
    model.graph.node.add(op_type="StringNormalizer", name="odd", input=["input"], output=["x"])
    model.graph.node.add(
        op_type="MyOp", domain="com.vendor", name="custom", input=["x"], output=["y"]
    )
    found = {str(f) for f in unsupported_ops(model)}
    assert found == {"StringNormalizer (x1)", "com.vendor::MyOp (x1)"}
