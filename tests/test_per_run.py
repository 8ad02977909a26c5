"""Training per run (``flowedge train --per-run``): one model, each run standardised with its own
statistics as the station's re-baselining will; calibrate and eval score held-out runs the
same way (each run's first samples its baseline); the station refuses such a model without
re-baselining, and a modality that cannot re-baseline refuses the flag."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from flowedge.cli import main
from flowedge.core.card import ModelCard
from flowedge.core.errors import EXIT_USAGE, ConfigError
from flowedge.edge.loop.baseline import check_rebaseline
from flowedge.edge.models_config import RebaselineConfig
from flowedge.flows.config import PCAConfig
from flowedge.flows.data.series import prepare_series
from flowedge.modalities import series_synthetic as sim

SIGNALS = [f"torque_sensor_a_{a}" for a in range(1, 5)]
RATE = 10.0
RUNS = {"light": 0.1, "heavy": 1.2}  # kg in the gripper: the torques' level moves


@pytest.fixture(scope="module")
def runs_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, Path]:
    """(training runs, held-out normal runs, test runs with defects, the config of a PCA)."""
    root = tmp_path_factory.mktemp("runs")
    for i, (name, kg) in enumerate(RUNS.items()):
        regime = sim.Regime(payload_kg=kg)
        sim.write_mvtec(root / "train" / name, 12, 0, 0, seed=i, rate_hz=RATE, regime=regime)
        sim.write_mvtec(root / "held" / name, 0, 16, 0, seed=10 + i, rate_hz=RATE, regime=regime)
        sim.write_mvtec(root / "test" / name, 0, 8, 2, seed=20 + i, rate_hz=RATE, regime=regime)
    detector = {"kind": "pca", "signals": SIGNALS, "rate_hz": RATE, "n_components": 3}
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump({"detector": detector}))
    return root / "train", root / "held", root / "test", config


def train_per_run(train: Path, config: Path, model: Path) -> ModelCard:
    """``flowedge train TRAIN --per-run`` into ``model``; its card."""
    assert (
        main(["train", str(train), "--per-run", "--config", str(config), "--out", str(model)]) == 0
    )
    return ModelCard.load(model / "card.json")


def test_each_run_is_standardised_with_its_own_statistics() -> None:
    config = PCAConfig(signals=SIGNALS, rate_hz=RATE)
    by_run = {
        name: [c.table for c in sim.simulate_set(8, 0, i, RATE, regime=sim.Regime(payload_kg=kg))]
        for i, (name, kg) in enumerate(RUNS.items())
    }
    cycles = [cycle for run in by_run.values() for cycle in run]
    pooled, pooled_set = prepare_series(cycles, config)
    ready, per_run_set = prepare_series(cycles, config, by_run)
    assert ready.mean == pooled.mean and ready.std == pooled.std  # the card keeps the pooled ones
    # the runs' level difference is gone per run, and is what pooled standardisation keeps
    light, heavy = per_run_set.tensors[:8], per_run_set.tensors[8:]
    assert np.abs(light.mean(axis=(0, 2)) - heavy.mean(axis=(0, 2))).max() < 0.05
    light, heavy = pooled_set.tensors[:8], pooled_set.tensors[8:]
    assert np.abs(light.mean(axis=(0, 2)) - heavy.mean(axis=(0, 2))).max() > 0.5


def test_a_cycle_the_model_cannot_take_is_skipped_not_the_run(caplog) -> None:
    config = PCAConfig(signals=SIGNALS, rate_hz=RATE)
    by_run = {
        name: [c.table for c in sim.simulate_set(6, 0, i, RATE, regime=sim.Regime(payload_kg=kg))]
        for i, (name, kg) in enumerate(RUNS.items())
    }
    broken = by_run["light"][0]
    broken.columns.pop(SIGNALS[0])  # a log without one of the model's signals
    cycles = [cycle for run in by_run.values() for cycle in run]
    _, train_set = prepare_series(cycles, config, by_run)
    assert len(train_set.names) == 11 and broken.name in train_set.skipped
    assert any("skipping" in r.message for r in caplog.records)


def test_train_calibrate_and_eval_per_run(
    tmp_path: Path, runs_data: tuple[Path, Path, Path, Path], capsys
) -> None:
    train, held, test, config = runs_data
    model = tmp_path / "model"
    card = train_per_run(train, config, model)
    assert "rebaseline:" in capsys.readouterr().out  # says what the station needs
    assert card.trained_per_run == ["heavy", "light"]

    # without --per-run the scores would use the pooled statistics: refused, saying what to give
    normal = ["--normal", str(held), "--target-far", "0.2", "--no-progress"]
    assert main(["calibrate", str(model), *normal]) == EXIT_USAGE
    assert "--per-run N" in capsys.readouterr().err
    assert main(["calibrate", str(model), *normal, "--per-run", "4"]) == 0
    calibration = json.loads((model / "calibration.json").read_text())
    assert calibration["normal"]["n"] == 2 * (16 - 4)  # each run's first 4 are its baseline

    report = tmp_path / "eval"
    eval_args = ["eval", str(model), str(test), "--out", str(report), "--no-progress"]
    assert main(eval_args) == EXIT_USAGE
    assert main([*eval_args, "--per-run", "4"]) == 0
    data = json.loads((report / "report.json").read_text())
    good = [row for row in data["images"] if row["label"] == 0]
    assert len(good) == 2 * (8 - 4) and len(data["images"]) > len(good)
    assert not any(Path(row["path"]).stem in {"0000", "0001", "0002", "0003"} for row in good)


def test_per_run_needs_a_modality_that_re_baselines(tmp_path: Path, capsys) -> None:
    (tmp_path / "a" / "train" / "good").mkdir(parents=True)
    assert (
        main(
            [
                "train",
                str(tmp_path),
                "--per-run",
                "--detector",
                "gaussian",
                "--out",
                str(tmp_path / "m"),
            ]
        )
        == EXIT_USAGE
    )
    assert "image models cannot re-baseline" in capsys.readouterr().err


def test_calibrate_per_run_refuses_an_image_model_and_a_one_sample_baseline(
    tiny_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    from test_calibration_cli import normal_images

    runs = tmp_path / "runs"
    normal_images(runs / "a", 6, seed=5)
    args = ["calibrate", str(tiny_checkpoint), "--per-run", "3", "--normal", str(runs)]
    assert main([*args, "--out", str(tmp_path / "c.json")]) == EXIT_USAGE
    assert "image models cannot re-baseline" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:  # argparse: a baseline needs two samples
        main([*args[:3], "1", *args[4:]])
    assert usage.value.code == EXIT_USAGE
    assert "a baseline needs at least 2 samples" in capsys.readouterr().err


def test_the_station_refuses_a_per_run_model_without_re_baselining(
    tmp_path: Path, runs_data: tuple[Path, Path, Path, Path]
) -> None:
    train, _, _, config = runs_data
    model = tmp_path / "model"
    card = train_per_run(train, config, model)
    with pytest.raises(ConfigError, match="model: model pca-.* was trained per run"):
        check_rebaseline(None, card, "model")
    for missing in ({"on_start": False}, {"spread": False}):
        with pytest.raises(ConfigError, match="on_start and spread left true"):
            check_rebaseline(RebaselineConfig(samples=4, **missing), card, "recipes.models.a")
    check_rebaseline(RebaselineConfig(samples=4), card, "model")


def write_run(folder: Path, n: int, level_db: float, seed: int) -> None:
    """``n`` gear-motor clips recorded ``level_db`` louder (a booth's gain)."""
    import soundfile
    from test_rebaseline import RATE as AUDIO_RATE
    from test_rebaseline import clips

    from flowedge.modalities.audio_synthetic import Operating

    folder.mkdir(parents=True)
    for i, clip in enumerate(clips(n, Operating(level_db=level_db), seed)):
        soundfile.write(folder / f"clip_{i:02d}.wav", clip.samples, AUDIO_RATE, subtype="PCM_16")


def test_audio_runs_at_other_recording_levels(tmp_path: Path, capsys) -> None:
    from test_rebaseline import AUDIO

    levels = {"quiet": -12.0, "loud": 0.0}
    for i, (name, level) in enumerate(levels.items()):
        write_run(tmp_path / "train" / name, 6, level, seed=i)
        write_run(tmp_path / "held" / name, 12, level, seed=10 + i)
    write_run(tmp_path / "held" / "new_booth", 12, 9.0, seed=20)  # a level never trained on
    front_end = {k: v for k, v in AUDIO.__dict__.items() if k not in ("mean", "std")}
    front_end["kind"] = "audio"
    config = tmp_path / "config.yaml"
    detector = {"kind": "tensor_pca", "input": front_end, "n_components": 3}
    config.write_text(yaml.safe_dump({"detector": detector}))
    model = tmp_path / "model"
    args = ["train", str(tmp_path / "train"), "--per-run", "--config", str(config)]
    assert main([*args, "--out", str(model), "--no-progress"]) == 0
    card = ModelCard.load(model / "card.json")
    assert card.trained_per_run == ["loud", "quiet"]
    normal = ["--normal", str(tmp_path / "held"), "--target-far", "0.2", "--no-progress"]
    assert main(["calibrate", str(model), *normal, "--per-run", "3"]) == 0
    calibration = json.loads((model / "calibration.json").read_text())
    assert calibration["normal"]["n"] == 3 * (12 - 3)


def test_the_review_loop_takes_the_stations_recorded_scores(
    tmp_path: Path, runs_data: tuple[Path, Path, Path, Path], capsys
) -> None:
    from test_history_calibrate import model_decision, reviewed_history

    train, held, _, config = runs_data
    model = tmp_path / "model"
    card = train_per_run(train, config, model)
    scores = np.linspace(1.0, 4.0, 30)  # this model's false alarms, as the station scored them
    docs = [model_decision(card, seq, float(s), 0.5) for seq, s in enumerate(scores, start=1)]
    inputs: list[Path | None] = [None] * len(docs)
    other = sorted((held / "light" / "test" / "good").iterdir())[:3]  # another model's decisions
    from history_fakes import decision

    docs += [decision(100 + i, 5.0, 0.5) for i in range(len(other))]
    inputs += other
    path = reviewed_history(tmp_path / "history", docs, ["false_alarm"] * len(docs), inputs)
    out = tmp_path / "calibration.json"
    args = ["calibrate", str(model), "--history", str(path), "--target-far", "0.1"]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    sources = json.loads(out.read_text())["normal"]["sources"]["history"]
    assert (sources["recorded"], sources["rescored"], sources["without_score"]) == (30, 0, 3)
    assert "threshold   before 0.5 -> after" in capsys.readouterr().out
