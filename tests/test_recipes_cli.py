"""`flowedge train`, `calibrate` and `eval` with --recipes: one folder per recipe in, one
model (and calibration, and report) per recipe out, with one command each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from flowedge.cli import main
from flowedge.core.card import ModelCard
from flowedge.core.errors import EXIT_USAGE
from flowedge.modalities import series_synthetic as sim

SIGNALS = [f"torque_sensor_a_{a}" for a in range(1, 5)]
RATE = 10.0
PRODUCTS = {"light": 0.1, "heavy": 1.2}  # kg in the gripper


@pytest.fixture(scope="module")
def recipes_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(data set with one MVTec-like folder per product, held-out normal cycles per product,
    the config of a small PCA)."""
    root = tmp_path_factory.mktemp("recipes")
    for i, (name, kg) in enumerate(PRODUCTS.items()):
        regime = sim.Regime(payload_kg=kg)
        sim.write_mvtec(root / "data" / name, 12, 3, 3, seed=i, rate_hz=RATE, regime=regime)
        held_out = sim.write_mvtec(
            root / "held" / name, 0, 20, 0, seed=10 + i, rate_hz=RATE, regime=regime
        )
        assert (held_out / "test" / "good").is_dir()
    detector = {"kind": "pca", "signals": SIGNALS, "rate_hz": RATE, "n_components": 3}
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump({"detector": detector}))
    return root / "data", root / "held", config


def test_one_command_each_trains_calibrates_and_evaluates_every_recipe(
    tmp_path: Path, recipes_data: tuple[Path, Path, Path], capsys
) -> None:
    data, held, config = recipes_data
    models = tmp_path / "models"
    assert (
        main(["train", str(data), "--recipes", "--config", str(config), "--out", str(models)]) == 0
    )
    out = capsys.readouterr().out
    assert "recipe heavy: model pca-" in out and "recipe light: model pca-" in out
    assert "recipes:\n  models:\n    heavy: {path: " in out
    cards = {name: ModelCard.load(models / name / "card.json") for name in PRODUCTS}
    assert cards["heavy"].input.mean != cards["light"].input.mean  # each from its own cycles
    assert cards["light"].training["data"]["root"].endswith("light")

    assert (
        main(
            [
                "calibrate",
                str(models),
                "--recipes",
                "--normal",
                str(held),
                "--target-far",
                "0.1",
                "--no-progress",
            ]
        )
        == 0
    )
    for name in PRODUCTS:
        calibration = json.loads((models / name / "calibration.json").read_text())
        assert calibration["model_id"] == cards[name].model_id
        assert calibration["normal"]["n"] == 20

    report = tmp_path / "eval"
    assert (
        main(["eval", str(models), str(data), "--recipes", "--out", str(report), "--no-progress"])
        == 0
    )
    table = capsys.readouterr().out.split("recipe          image AUROC")[-1]
    assert "heavy" in table and "light" in table
    for name in PRODUCTS:
        overall = json.loads((report / name / "report.json").read_text())["metrics"]["overall"]
        assert (overall["n_good"], overall["n_defect"]) == (3, 3)


def test_recipe_folders_that_do_not_match_are_usage_errors(
    tmp_path: Path, recipes_data: tuple[Path, Path, Path], capsys
) -> None:
    data, held, config = recipes_data
    models = tmp_path / "models"
    (models / "light").mkdir(parents=True)
    (models / "other").mkdir()
    assert (
        main(["eval", str(models), str(data), "--recipes", "--out", str(tmp_path / "e")])
        == EXIT_USAGE
    )
    assert "no folder for recipe(s) other" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (
        main(["train", str(empty), "--recipes", "--config", str(config), "--out", str(models)])
        == EXIT_USAGE
    )
    assert "has no recipe folders" in capsys.readouterr().err
    code = main(
        ["calibrate", str(models), "--recipes", "--normal", str(held), "--update", "x.json"]
    )
    assert code == EXIT_USAGE and "leave out --recipes" in capsys.readouterr().err
