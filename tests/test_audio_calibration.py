"""``flowedge calibrate`` on an audio model: held-out WAV recordings calibrate it like images."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from flowedge.calibration.calibfile import load_calibration  # noqa: E402
from flowedge.cli import main  # noqa: E402
from flowedge.core.card import ModelCard  # noqa: E402
from flowedge.modalities import get_modality  # noqa: E402

pytest.importorskip("soundfile")
torch = pytest.importorskip("torch")

RATE, SECONDS = 16000, 1.0


def recordings(root: Path, n_good: int, n_faulty: int, seed: int) -> Path:
    """Generated gear-motor WAVs in MVTec layout (``train/good``, ``test/<fault>_mid``)."""
    return get_modality("audio").synthesize(
        root, n_good, 0, n_faulty, seed=seed, sample_rate=RATE, duration_s=SECONDS
    )


@pytest.fixture(scope="module")
def audio_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_audioflow import tiny

    from flowedge.flows.config import TrainingConfig
    from flowedge.flows.train import train

    root = tmp_path_factory.mktemp("audio-calibration")
    torch.set_num_threads(1)
    data = get_modality("audio").synthesize(
        root / "motor", 6, 1, 1, sample_rate=RATE, duration_s=SECONDS
    )
    train(
        tiny("hybrid"),
        TrainingConfig(epochs=1, batch_size=4),
        data,
        root / "model",
        show_progress=False,
    )
    return root / "model"


def test_calibrate_an_audio_model_on_held_out_recordings(audio_model: Path, tmp_path: Path) -> None:
    held = recordings(tmp_path / "held", 30, 0, seed=1) / "train" / "good"
    faulty = recordings(tmp_path / "faulty", 0, 4, seed=2) / "test" / "thrust_click_mid"
    out = tmp_path / "calibration.json"
    args = ["calibrate", str(audio_model), "--normal", str(held), "--target-far", "0.05"]
    assert main([*args, "--anomalous", str(faulty), "--out", str(out)]) == 0

    card = ModelCard.load(audio_model / "card.json")
    assert card.input.kind == "audio"
    cal = load_calibration(out, card)
    assert cal.model_id == card.model_id and math.isfinite(cal.threshold)
    assert cal.normalise(cal.threshold) == pytest.approx(-math.log10(0.05))
    assert cal.data["normal"]["n"] == 30 and cal.data["anomalous"]["n"] == 4


def test_training_recordings_are_refused_as_calibration_data(
    audio_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train_good = audio_model.parent / "motor" / "train" / "good"
    out = tmp_path / "calibration.json"
    assert (
        main(["calibrate", str(audio_model), "--normal", str(train_good), "--out", str(out)]) == 3
    )
    assert "were used to train" in capsys.readouterr().err
