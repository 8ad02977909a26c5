"""`flowedge train` and `flowedge eval` on robot-cycle logs: routed by the detector's modality."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from flowedge.cli import main
from flowedge.core.card import ModelCard
from flowedge.core.errors import BadInputError
from flowedge.modalities import series_synthetic as sim
from flowedge.modalities.series_io import SignalTable, read_log, write_csv

SIGNALS = [f"torque_sensor_a_{a}" for a in range(1, 5)]
RATE = 10.0


def _config(path: Path, detector: dict) -> Path:
    training = {"epochs": 3, "batch_size": 8, "lr": 8e-4, "adam_eps": 1e-8}
    path.write_text(yaml.safe_dump({"detector": detector, "training": training}))
    return path


@pytest.fixture(scope="module")
def cycle_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One CSV per cycle: train/good, test/good and test/<anomaly type>, as the simulator writes."""
    return sim.write_mvtec(tmp_path_factory.mktemp("cycles"), 16, 4, 4, seed=0, rate_hz=RATE)


def test_train_and_eval_mtsflow_on_cycle_files(tmp_path: Path, cycle_folder: Path, capsys) -> None:
    detector = {"kind": "mtsflow", "signals": SIGNALS, "rate_hz": RATE, "n_blocks": 2}
    config = _config(tmp_path / "config.yaml", detector)
    checkpoint = tmp_path / "model"

    assert (
        main(["train", str(cycle_folder), "--config", str(config), "--out", str(checkpoint)]) == 0
    )
    assert "trained on 16 cycles" in capsys.readouterr().out
    card = ModelCard.load(checkpoint / "card.json")
    assert card.input.kind == "series"
    assert card.input.signals == tuple(SIGNALS)
    assert len(card.input.mean) == len(SIGNALS)

    report_dir = tmp_path / "eval"
    assert main(["eval", str(checkpoint), str(cycle_folder), "--out", str(report_dir)]) == 0
    report = json.loads((report_dir / "report.json").read_text())
    overall = report["metrics"]["overall"]
    assert (overall["n_good"], overall["n_defect"]) == (4, 4)
    assert 0.0 <= overall["image_auroc"] <= 1.0


def _one_log(cycles: list[sim.SimulatedCycle], path: Path) -> Path:
    """The cycles back to back in one log with a cycle counter, as a controller writes it."""
    columns: dict[str, list[np.ndarray]] = {}
    times, start = [], 0.0
    for number, cycle in enumerate(cycles):
        table = cycle.table
        times.append(start + table.times())
        start = float(times[-1][-1]) + 1.0 / RATE
        for name, values in {**table.columns, "cycle": np.full(len(table), number)}.items():
            columns.setdefault(name, []).append(values)
    joined = {name: np.concatenate(parts) for name, parts in columns.items()}
    write_csv(SignalTable("log", joined, time_s=np.concatenate(times)), path)
    return path


def _segmented_pca(tmp_path: Path, capsys) -> Path:
    """PCA trained on one long log of 12 cycles, cut by its cycle counter."""
    folder = tmp_path / "logs"
    folder.mkdir()
    _one_log(sim.simulate_set(12, 0, seed=3, rate_hz=RATE), folder / "shift.csv")
    detector = {
        "kind": "pca",
        "signals": SIGNALS,
        "rate_hz": RATE,
        "n_components": 4,
        "log": {"meta_columns": ["cycle"]},
        "segment": {"mode": "cycle_id", "column": "cycle"},
    }
    config = _config(tmp_path / "config.yaml", detector)
    checkpoint = tmp_path / "m"
    assert main(["train", str(folder), "--config", str(config), "--out", str(checkpoint)]) == 0
    assert "trained on 12 cycles" in capsys.readouterr().out
    return checkpoint


def test_train_cuts_a_long_log_with_the_configured_segmenter(tmp_path: Path, capsys) -> None:
    _segmented_pca(tmp_path, capsys)


def test_eval_and_calibration_cut_test_logs_with_the_cards_segmenter(
    tmp_path: Path, capsys
) -> None:
    from flowedge.calibration.scoring import open_model, score_folders

    checkpoint = _segmented_pca(tmp_path, capsys)
    root = tmp_path / "test"
    for folder, cycles in {
        "good": sim.simulate_set(3, 0, seed=4, rate_hz=RATE),
        "collision": sim.simulate_set(0, 2, seed=5, rate_hz=RATE, kinds=("collision_cable",)),
    }.items():
        (root / folder).mkdir(parents=True)
        _one_log(cycles, root / folder / "log.csv")

    report_dir = tmp_path / "eval"
    assert main(["eval", str(checkpoint), str(root), "--out", str(report_dir)]) == 0
    report = json.loads((report_dir / "report.json").read_text())
    overall = report["metrics"]["overall"]
    assert (overall["n_good"], overall["n_defect"]) == (3, 2)  # per cycle, not per file
    assert [(Path(e["path"]).parent.name, e["part"]) for e in report["images"]] == [
        ("collision", 0),
        ("collision", 1),
        ("good", 0),
        ("good", 1),
        ("good", 2),
    ]
    assert any("log#" in Path(p).name for p in report["files"]["heatmaps"])

    infer, card, close = open_model(checkpoint, "torch", "cpu")
    scored = score_folders([root / "good"], infer, card, show_progress=False)
    close()
    assert len(scored.scores) == 3
    good_scores = [e["score"] for e in report["images"] if e["label"] == 0]
    np.testing.assert_allclose(scored.scores, good_scores, rtol=1e-5)


def test_a_series_detector_without_signals_is_a_config_error(tmp_path: Path, capsys) -> None:
    config = _config(tmp_path / "config.yaml", {"kind": "mtsflow"})
    code = main(["train", str(tmp_path), "--config", str(config), "--out", str(tmp_path / "m")])
    assert code == 2
    assert "signals" in capsys.readouterr().err


def _as_controller_export(root: Path) -> None:
    """Rewrite every cycle file as ``;``-separated with decimal commas and a ``Zeit`` column,
    a time column that no detection rule recognises."""
    for path in root.rglob("*.csv"):
        write_csv(read_log(path), path, decimal=",")
        header, body = path.read_text().split("\n", 1)
        path.write_text(header.replace("time;", "Zeit;", 1) + "\n" + body)


def test_eval_reads_test_files_with_the_cards_log_format(tmp_path: Path, capsys) -> None:
    root = sim.write_mvtec(tmp_path / "cycles", 12, 3, 3, seed=1, rate_hz=RATE)
    _as_controller_export(root)
    sample = next((root / "test" / "good").glob("*.csv"))
    with pytest.raises(BadInputError, match="no time column"):  # detection alone cannot
        read_log(sample).times()
    detector = {
        "kind": "pca",
        "signals": SIGNALS,
        "rate_hz": RATE,
        "n_components": 4,
        "log": {"separator": ";", "decimal": ",", "time_column": "Zeit"},
    }
    config = _config(tmp_path / "config.yaml", detector)
    checkpoint = tmp_path / "model"
    assert main(["train", str(root), "--config", str(config), "--out", str(checkpoint)]) == 0

    report_dir = tmp_path / "eval"
    assert main(["eval", str(checkpoint), str(root), "--out", str(report_dir)]) == 0
    report = json.loads((report_dir / "report.json").read_text())
    assert report["data"]["n_skipped"] == 0
    overall = report["metrics"]["overall"]
    assert (overall["n_good"], overall["n_defect"]) == (3, 3)
