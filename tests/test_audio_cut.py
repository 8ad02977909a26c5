"""Continuous recordings through ``flowedge train``, ``eval`` and ``calibrate``: the card's
``input.cut`` makes each long WAV many samples (fixed windows or segmented motions)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from flowedge.cli import main
from flowedge.core.card import AudioInput, ModelCard
from flowedge.modalities.audio import Clip
from flowedge.modalities.audio_cut import cut_clip
from flowedge.modalities.audio_synthetic import gear_motor_clip

soundfile = pytest.importorskip("soundfile")
pytest.importorskip("torch")

RATE = 16000
MOTIONS = ["fold", "unfold"] * 2  # one recording: four 1-second motions, 4 s


def recording(seed: int, fault: str | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([gear_motor_clip(RATE, 1.0, rng, m, fault) for m in MOTIONS])


def write(folder: Path, seeds: range, fault: str | None = None) -> Path:
    folder.mkdir(parents=True)
    for seed in seeds:
        soundfile.write(folder / f"rec{seed}.wav", recording(seed, fault), RATE, subtype="PCM_16")
    return folder


def test_windows_and_motions_cut_a_recording_into_clips() -> None:
    clip = Clip(recording(0)[:, None], RATE)
    assert [c.seconds for c in cut_clip(clip, {"window_s": 1.0})] == [1.0] * 4
    assert len(cut_clip(clip, {"window_s": 1.0, "hop_s": 0.5})) == 7
    assert len(cut_clip(clip, {"motions": {}})) == 4
    folds = cut_clip(clip, {"motions": {}, "labels": ["fold"]})  # a model for fold only
    assert len(folds) == 2 and all(0.8 < c.seconds < 1.2 for c in folds)


def test_a_card_without_a_cut_keeps_its_digest_and_a_bad_cut_is_refused() -> None:
    assert AudioInput().digest() == AudioInput(cut=None).digest()
    assert AudioInput(cut={"window_s": 1.0}).digest() != AudioInput().digest()
    with pytest.raises(ValueError, match="input.cut"):
        AudioInput(cut={"length_s": 1.0})


def test_train_eval_and_calibrate_cut_long_recordings_into_windows(tmp_path: Path) -> None:
    data = tmp_path / "motor"
    write(data / "train" / "good", range(3))
    write(data / "test" / "good", range(10, 12))
    write(data / "test" / "thrust_click", range(20, 22), fault="thrust_click")
    held = write(tmp_path / "held" / "good", range(30, 35))
    front_end = {
        "sample_rate": RATE,
        "n_fft": 512,
        "win_length": 512,
        "hop_length": 160,
        "n_mels": 32,
        "duration_s": 1.0,
        "cut": {"window_s": 1.0},
    }
    config = tmp_path / "config.yaml"
    config.write_text(
        "detector:\n  kind: audioflow\n  image_size: [128, 128]\n  n_blocks: 1\n"
        f"  kernel_sizes: [3]\n  hidden_channels: 8\n  front_end: {json.dumps(front_end)}\n"
        "  backbone: {weights: none}\ntraining: {epochs: 1, batch_size: 4}\n",
        encoding="utf-8",
    )
    model = tmp_path / "model"
    train = ["train", str(data), "--out", str(model), "--config", str(config), "--no-progress"]
    assert main(train) == 0
    card = ModelCard.load(model / "card.json")
    assert card.input.cut == {"window_s": 1.0}
    assert card.training["data"]["n_images"] == 3 * 4  # three recordings, four windows each

    assert (
        main(["eval", str(model), str(data), "--out", str(tmp_path / "eval"), "--no-progress"]) == 0
    )
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["data"]["n_ok"] == 4 * 4

    out = tmp_path / "calibration.json"
    calibrate = ["calibrate", str(model), "--normal", str(held), "--target-far", "0.1"]
    assert main([*calibrate, "--out", str(out), "--no-progress"]) == 0
    assert json.loads(out.read_text())["normal"]["n"] == 5 * 4
