"""Backends: the model file picks the backend, and nothing assumes image-shaped input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from flowedge.backends import backend_for, open_backend
from flowedge.backends.onnxrt import OnnxRuntimeBackend
from flowedge.core.card import ModelCard, ScoreSpec, SeriesInput
from flowedge.core.errors import EXIT_USAGE, ConfigError
from flowedge.core.validation import Strict
from flowedge.export.onnx_export import export_onnx
from flowedge.flows.detectors.base import Detector


@pytest.mark.parametrize(
    "name, expected",
    [
        ("m.onnx", "onnxruntime"),
        ("m.engine", "tensorrt"),
        ("m.PLAN", "tensorrt"),
        ("ckpt", "torch"),
    ],
)
def test_auto_picks_the_backend_from_the_model_file(
    tmp_path: Path, name: str, expected: str
) -> None:
    path = tmp_path / name
    if name == "ckpt":
        path.mkdir()
    else:
        path.write_bytes(b"")
    assert backend_for(path) == expected
    assert backend_for(path, "onnxruntime") == "onnxruntime"  # an explicit choice wins


def test_a_missing_model_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"gone\.onnx not found; give a checkpoint directory"
    ) as info:
        open_backend(tmp_path / "gone.onnx")
    assert info.value.exit_code == EXIT_USAGE


def test_unknown_file_kind_or_backend_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"")
    with pytest.raises(ConfigError, match="cannot tell which backend runs"):
        backend_for(tmp_path / "model.bin")
    with pytest.raises(ConfigError, match="backend 'openvino' is not one of auto, torch"):
        backend_for(tmp_path / "model.bin", "openvino")


SERIES = SeriesInput(
    signals=("current", "speed", "torque"), units=("A", "rad/s", "Nm"), length=40,
    mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
)  # fmt: skip


class SeriesStandIn(Detector):
    """A [B, signals, steps] model: 1-D convolutions, score = 0.5 * sum(z**2), map per step."""

    name = "series-standin"

    def __init__(self) -> None:
        super().__init__(Strict(), None, {})
        torch.manual_seed(0)
        self.encoder = nn.Conv1d(len(SERIES.signals), 8, 5, padding=2)
        self.flow = nn.Conv1d(8, 8, 3, padding=1)

    def input_spec(self):
        return SERIES

    def features(self, x):
        return [torch.relu(self.encoder(x))]

    def latents(self, feats):
        return [self.flow(f) for f in feats]

    def reduce(self, latents, map_shape):
        sq = latents[0].float() ** 2
        per_step = sq.mean(dim=1, keepdim=True).expand(-1, map_shape[0], -1)
        return 0.5 * sq.sum(dim=(1, 2)), per_step

    def score_spec(self):
        return ScoreSpec(kind="sum_z2")


def test_a_series_model_exports_and_runs_on_onnxruntime(tmp_path: Path) -> None:
    detector = SeriesStandIn().eval()
    card = ModelCard(detector.name, {}, {"name": "conv1d"}, SERIES, detector.score_spec(), weights_sha256="0" * 64)  # fmt: skip
    export_onnx(detector, card, tmp_path / "series.onnx")
    backend = open_backend(tmp_path / "series.onnx")
    assert isinstance(backend, OnnxRuntimeBackend) and backend.input_shape == (3, 40)
    batch = np.random.default_rng(0).normal(size=(5, 3, 40)).astype(np.float32)
    scores, maps = backend.infer(batch)
    assert scores.shape == (5,) and maps.shape == (5, *SERIES.map_shape)
    with torch.no_grad():
        expected, _ = detector(torch.from_numpy(batch))
    np.testing.assert_allclose(scores, expected.numpy(), rtol=1e-4)
    with pytest.raises(ValueError, match=r"the model expects \[B, 3, 40\]"):
        backend.infer(batch[:, :, None])
