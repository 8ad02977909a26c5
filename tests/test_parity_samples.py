"""What ``flowedge export onnx`` checks the graph on: samples that fit the model's front end,
from its training data when that is still here, for every modality."""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import onnx
import pytest
import yaml

from flowedge.cli import main
from flowedge.core import metadata
from flowedge.core.card import AudioInput
from flowedge.export.onnx_graph import get_metadata
from flowedge.modalities import get_modality

sys.path.insert(0, str(Path(__file__).parent))

pytest.importorskip("soundfile")
torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHORT = 0.5  # seconds: a short motion, shorter than the generator's fault timing assumed


@pytest.mark.parametrize(
    ("duration_s", "rate"), [(0.02, 16000), (0.1, 44100), (SHORT, 16000), (1.0, 2000)]
)
def test_synthetic_audio_fits_every_valid_front_end(duration_s: float, rate: int) -> None:
    spec = AudioInput(
        sample_rate=rate, n_fft=256, win_length=256, hop_length=64, n_mels=16,
        duration_s=duration_s, f_max=rate / 2,
    )  # fmt: skip
    batch = get_modality("audio").synthetic_batch(spec, 3, 6)
    assert batch.shape == (9, *spec.tensor_shape)


def _parity(graph: Path) -> dict:
    return json.loads(get_metadata(onnx.load(str(graph)))[metadata.PARITY_KEY])


@pytest.fixture(scope="module")
def short_clip_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny audio flow trained (1 epoch) on 0.5 s clips."""
    root = tmp_path_factory.mktemp("short-clips")
    data = get_modality("audio").synthesize(
        root / "motor", 4, 0, 0, sample_rate=16000, duration_s=SHORT
    )
    from conftest import tiny_audio_detector

    config = root / "config.yaml"
    detector = tiny_audio_detector(duration_s=SHORT)
    training = {"epochs": 1, "batch_size": 4}
    config.write_text(yaml.safe_dump({"detector": detector, "training": training}))
    argv = ["train", str(data), "--config", str(config), "--out", str(root / "model")]
    assert main([*argv, "--no-progress"]) == 0
    return root / "model"


def test_export_of_a_short_clip_model_checks_its_training_clips(
    short_clip_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    graph = tmp_path / "model.onnx"
    with caplog.at_level(logging.INFO, "flowedge.export"):
        assert main(["export", "onnx", str(short_clip_model), "--out", str(graph)]) == 0
    assert "parity samples: 4 normal from the training data in" in caplog.text
    report = _parity(graph)["onnxruntime"]
    assert report["passed"] and report["n_samples"] == 8  # 4 training clips, 4 synthetic faults


def test_export_without_the_training_data_checks_synthetic_clips(
    short_clip_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    moved = tmp_path / "model"
    shutil.copytree(short_clip_model, moved)
    data = json.loads((moved / "card.json").read_text())["training"]["data"]["root"]
    hidden = Path(data).with_name("elsewhere")
    Path(data).rename(hidden)
    try:
        graph = tmp_path / "model.onnx"
        with caplog.at_level(logging.INFO, "flowedge.export"):
            assert main(["export", "onnx", str(moved), "--out", str(graph)]) == 0
    finally:
        hidden.rename(data)
    assert "parity samples: synthetic" in caplog.text
    assert _parity(graph)["onnxruntime"]["n_samples"] == 12


def test_parity_samples_of_a_series_model_are_its_cycles_read_with_its_log_format(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from test_predict_inputs import series_model_at

    checkpoint, _ = series_model_at(tmp_path, export=False)
    graph = tmp_path / "again.onnx"
    with caplog.at_level(logging.INFO, "flowedge.export"):
        assert main(["export", "onnx", str(checkpoint), "--out", str(graph)]) == 0
    assert "parity samples: 6 normal from the training data in" in caplog.text  # of 12 cycles
    logs = checkpoint.parent / "logs"
    assert (
        main(["export", "onnx", str(checkpoint), "--out", str(graph), "--samples", str(logs)]) == 0
    )
    assert _parity(graph)["onnxruntime"]["n_samples"] == 12  # its 12 cycles
