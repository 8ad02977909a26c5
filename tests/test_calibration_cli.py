"""``flowedge calibrate`` end to end on the shared tiny checkpoint (in-process, one torch import)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from flowedge.calibration.calibfile import load_calibration
from flowedge.cli import main
from flowedge.core.card import ModelCard


def normal_images(folder: Path, n: int, seed: int) -> Path:
    """Normal images from another seed: same process as training, never trained on."""
    from flowedge.modalities.image_synthetic import generate_dataset

    root = generate_dataset(folder, n_train=n, n_test_good=0, n_test_defect=0, size=64, seed=seed)
    return root / "train" / "good"


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return normal_images(tmp_path_factory.mktemp("held") / "part", 30, seed=1)


def test_calibrate_update_and_refusals(
    tiny_checkpoint: Path, synthetic_dataset: Path, held_out: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "calibration.json"
    args = [str(tiny_checkpoint), "--normal", str(held_out), "--target-far", "0.05"]
    assert main(["calibrate", *args, "--anomalous", str(held_out), "--out", str(out)]) == 0
    assert "threshold" in capsys.readouterr().out
    card = ModelCard.load(tiny_checkpoint / "card.json")
    cal = load_calibration(out, card)
    assert cal.model_id == card.model_id and cal.strategy == "far"
    assert cal.normalise(cal.threshold) == pytest.approx(-math.log10(0.05))
    assert cal.data["normal"]["n"] == 30 and cal.data["anomalous"]["n"] == 30

    # recalibrate from new normal data: merge keeps history and pools the sample
    newer = normal_images(tmp_path / "newer", 20, seed=2)
    assert (
        main(["calibrate", str(tiny_checkpoint), "--normal", str(newer), "--update", str(out)]) == 0
    )
    updated = json.loads(out.read_text())
    assert updated["normal"]["n"] == 50
    assert [h["action"] for h in updated["history"]] == ["calibrate", "update (merge)"]

    # a calibration file of another model is refused (exit 4)
    foreign = json.loads(out.read_text()) | {
        "weights_sha256": "0" * 64,
        "model_id": "csflow-000000000000",
    }
    (tmp_path / "foreign.json").write_text(json.dumps(foreign))
    assert main(["calibrate", *args, "--update", str(tmp_path / "foreign.json")]) == 4
    assert "belongs to model csflow-000000000000" in capsys.readouterr().err

    # training images are refused as calibration data (exit 3)
    train_good = synthetic_dataset / "train" / "good"
    assert (
        main(["calibrate", str(tiny_checkpoint), "--normal", str(train_good), "--out", str(out)])
        == 3
    )
    assert "were used to train" in capsys.readouterr().err

    # too few held-out images (exit 3), with the numbers in the message
    few = tmp_path / "few"
    few.mkdir()
    for image in sorted(held_out.iterdir())[:5]:
        shutil.copy(image, few / image.name)
    assert main(["calibrate", str(tiny_checkpoint), "--normal", str(few), "--out", str(out)]) == 3
    assert "only 5 normal calibration scores" in capsys.readouterr().err


# --- absurd options and unusable outputs are refused before scoring (issue 10) --------


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--strategy", "sigma", "--k", "1e308"], "--k must be in (0, 100] (got 1e+308)"),
        (["--strategy", "sigma", "--k", "nan"], "--k must be in (0, 100] (got nan)"),
        (["--target-far", "inf"], "--target-far must be a false-alarm rate in (0, 0.5]"),
        (["--target-far", "0.9"], "--target-far must be a false-alarm rate in (0, 0.5]"),
        (["--strategy", "cost", "--cost-ratio", "-1"], "--cost-ratio must be in (0, 1e+06]"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
    ],
)
def test_absurd_options_exit_2(
    tiny_checkpoint: Path, held_out: Path, tmp_path: Path, capsys, flags: list[str], expected: str
) -> None:
    out = tmp_path / "calibration.json"
    args = ["calibrate", str(tiny_checkpoint), "--normal", str(held_out), "--out", str(out)]
    assert main([*args, *flags]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err and not out.exists()


def test_unwritable_out_is_refused_before_scoring(
    tiny_checkpoint: Path, held_out: Path, tmp_path: Path, capsys
) -> None:
    taken = tmp_path / "taken"
    taken.write_text("x")
    args = ["calibrate", str(tiny_checkpoint), "--normal", str(held_out)]
    assert main([*args, "--out", str(taken / "calibration.json")]) == 2
    assert main([*args, "--out", str(tmp_path)]) == 2
    assert main([*args, "--out", str(tmp_path / "c.json"), "--scores-out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a file, so no directory can be created" in err
    assert f"--out {tmp_path} is a directory" in err and "--scores-out" in err


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_non_finite_threshold_is_refused(tiny_checkpoint: Path) -> None:
    from flowedge.calibration.calibrate import CalibrationOptions, build_calibration
    from flowedge.core.errors import ConfigError

    card = ModelCard.load(tiny_checkpoint / "card.json")
    huge = np.linspace(-1e306, 1e306, 50)  # finite scores, overflowing std
    with pytest.raises(ConfigError, match="gives a threshold of inf"):
        build_calibration(huge, card, CalibrationOptions(strategy="sigma", k=100))
