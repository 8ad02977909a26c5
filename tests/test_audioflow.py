"""The hierarchical audio flow: its feature pyramids, and a WAV dataset in MVTec layout
through ``flowedge train``, ``eval`` and ``export onnx`` (parity on generated sound)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flowedge.cli import main
from flowedge.core.card import ModelCard
from flowedge.flows.config import (
    AUDIO_INPUT_TYPES,
    AudioFlowConfig,
    MelFrontEnd,
    PyramidBackboneConfig,
)

torch = pytest.importorskip("torch")
pytest.importorskip("soundfile")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

FRONT_END = dict(
    sample_rate=16000, n_fft=512, win_length=512, hop_length=160, n_mels=32, duration_s=1.0
)
TINY_AUDIO_CONFIG = f"""\
detector:
  kind: audioflow
  image_size: [128, 128]
  n_blocks: 1
  kernel_sizes: [3]
  hidden_channels: 8
  front_end: {json.dumps(FRONT_END)}
  backbone:
    weights: none
training:
  epochs: 2
  batch_size: 4
"""


def tiny(input_type: str) -> AudioFlowConfig:
    return AudioFlowConfig(
        input_type=input_type,
        image_size=(128, 128),
        n_blocks=1,
        kernel_sizes=[3],
        hidden_channels=8,
        front_end=MelFrontEnd(**FRONT_END),
        backbone=PyramidBackboneConfig(weights="none"),
    )


@pytest.mark.parametrize("input_type", AUDIO_INPUT_TYPES)
def test_each_input_type_gives_three_halving_maps_and_a_spectrogram_map(input_type) -> None:
    from flowedge.flows.detectors import build_detector

    detector = build_detector(tiny(input_type)).eval()
    x = torch.randn(2, *detector.input_spec().tensor_shape)
    feats = detector.features(x)
    sides = [f.shape[-1] for f in feats]
    assert sides == [sides[0], sides[0] // 2, sides[0] // 4]
    if input_type == "hybrid":  # the middle map is full/32 and half/16 side by side: 320 + 112
        assert [f.shape[1] for f in feats] == [112, 432, 320]
    with torch.no_grad():
        score, amap = detector(x)
    assert score.shape == (2,) and amap.shape == (2, 32, 101)  # (n_mels, frames)


def test_a_wav_dataset_trains_evaluates_and_exports_with_the_image_commands(
    tmp_path: Path,
) -> None:
    from flowedge.modalities import get_modality

    data = get_modality("audio").synthesize(
        tmp_path / "motor",
        n_train=8,
        n_test_good=3,
        n_test_defect=2,
        sample_rate=16000,
        duration_s=1.0,
    )
    config = tmp_path / "config.yaml"
    config.write_text(TINY_AUDIO_CONFIG, encoding="utf-8")
    model = tmp_path / "model"
    assert (
        main(["train", str(data), "--out", str(model), "--config", str(config), "--no-progress"])
        == 0
    )
    card = ModelCard.load(model / "card.json")
    assert card.detector == "audioflow" and card.input.kind == "audio"
    assert card.training["data"]["n_images"] == 8 and card.input.tensor_shape == (1, 32, 101)

    report_dir = tmp_path / "eval"
    assert main(["eval", str(model), str(data), "--out", str(report_dir), "--no-progress"]) == 0
    report = json.loads((report_dir / "report.json").read_text())
    assert set(report["metrics"]["per_defect"]) == {
        "misalignment_mid",
        "thrust_click_mid",
        "tooth_scratch_mid",
    }
    assert report["files"]["heatmaps"] and all(
        Path(p).is_file() for p in report["files"]["heatmaps"]
    )

    onnx_path = tmp_path / "model.onnx"
    assert main(["export", "onnx", str(model), "--out", str(onnx_path)]) == 0  # parity-gated

    from flowedge.backends import open_backend

    backend = open_backend(onnx_path)
    batch = get_modality("audio").synthetic_batch(card.input, 1, 1)
    scores, maps = backend.infer(batch)
    assert scores.shape == (2,) and maps.shape == (2, 32, 101) and np.isfinite(scores).all()
