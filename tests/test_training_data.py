"""What ``flowedge train`` and ``eval`` say about the data they read, for every modality:
help texts that do not assume images, progress in samples, and a labelled folder refused."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import yaml

from flowedge.cli import COMMANDS, command_parser, main
from flowedge.modalities import get_modality

IMAGE_ONLY = {"image_size", "intensity", "backbone_weights"}  # options only image models have


@pytest.mark.parametrize("name", ["train", "eval", "calibrate"])
def test_help_speaks_of_samples_not_images(name: str) -> None:
    parser, _ = command_parser(name)
    texts = {"description": COMMANDS[name][1]}
    texts |= {a.dest: a.help or "" for a in parser._actions if a.dest not in IMAGE_ONLY}
    said = {key: text for key, text in texts.items() if _assumes_images(text)}
    assert not said, f"flowedge {name} --help assumes images: {said}"


def _assumes_images(text: str) -> bool:
    """Speaks of images without naming the other modalities beside them."""
    others = re.search(r"sound|audio", text) and re.search(r"\blogs?\b|series", text)
    return bool(re.search(r"\bimages?\b", text)) and not others


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 4 s recording in a folder: a long recording the model cuts into 0.5 s windows."""
    root = tmp_path_factory.mktemp("recording")
    get_modality("audio").synthesize(root / "motor", 1, 0, 0, sample_rate=16000, duration_s=4.0)
    return root / "motor" / "train" / "good"


def test_training_progress_counts_files_and_the_samples_they_give(
    recording: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys
) -> None:
    from conftest import tiny_audio_detector

    pytest.importorskip("soundfile")
    pytest.importorskip("torch")
    detector = tiny_audio_detector(duration_s=0.5, cut={"window_s": 0.5})
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"detector": detector, "training": {"epochs": 1}}))
    argv = ["train", str(recording), "--config", str(config), "--out", str(tmp_path / "m")]
    with caplog.at_level(logging.INFO, "flowedge.progress"):
        assert main([*argv, "--no-progress"]) == 0
    features = [r.getMessage() for r in caplog.records if r.getMessage().startswith("features:")]
    assert features and "1/1 file (100 %)" in features[-1] and "samples 8" in features[-1]
    assert "trained on 8 samples" in capsys.readouterr().out
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    assert card["training"]["data"]["n_images"] == 8  # the card's key, for every modality


@pytest.mark.parametrize("modality", ["image", "audio", "series"])
def test_a_labelled_test_folder_is_not_training_data(modality: str, tmp_path: Path) -> None:
    from flowedge.core.errors import DataError
    from flowedge.flows.data.datasets import training_samples

    root = get_modality(modality).synthesize(tmp_path / "data", 1, 2, 1, seed=0)
    good = root / "test" / "good"
    with pytest.raises(
        DataError, match=rf"{good} holds normal samples, and .* beside it hold defects"
    ):
        training_samples(root / "test", modality)


def test_train_on_a_labelled_test_folder_exits_3_naming_the_good_folder(
    tmp_path: Path, capsys
) -> None:
    root = get_modality("image").synthesize(tmp_path / "data", 1, 2, 1, seed=0)
    argv = ["train", str(root / "test"), "--out", str(tmp_path / "m"), "--detector", "gaussian"]
    assert main([*argv, "--image-size", "32", "--backbone-weights", "none"]) == 3
    err = capsys.readouterr().err
    assert f"{root / 'test' / 'good'} holds normal samples" in err
    assert "point flowedge train at" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


def test_a_folder_of_normal_samples_in_a_good_subfolder_is_used(tmp_path: Path) -> None:
    from flowedge.flows.data.datasets import training_samples

    root = get_modality("image").synthesize(tmp_path / "data", 2, 2, 1, seed=0)
    (tmp_path / "normal").mkdir()
    (root / "test" / "good").rename(tmp_path / "normal" / "good")
    assert len(training_samples(tmp_path / "normal", "image")) == 2
