"""``flowedge predict`` on what users give it: odd file names, and logs the model cuts into cycles."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest

from flowedge.cli import main
from flowedge.modalities import series_synthetic as sim


def test_a_file_name_that_is_not_utf8_is_scored_and_written_escaped(
    tiny_checkpoint: Path, synthetic_dataset: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    good = sorted((synthetic_dataset / "test" / "good").glob("*.png"))
    odd = folder / os.fsdecode(b"part\xff-7.png")  # a Latin-1 name on a UTF-8 file system
    shutil.copy(good[0], odd)
    shutil.copy(good[1], folder / "zz.png")
    out = tmp_path / "scores.csv"
    assert main(["predict", str(tiny_checkpoint), str(folder), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [Path(r["file"]).name for r in rows] == ["part\\xff-7.png", "zz.png"]
    assert all(r["score"] and not r["error"] for r in rows)


SIGNALS = [f"torque_sensor_a_{a}" for a in range(1, 5)]
RATE = 10.0


def controller_log(cycles: list, path: Path) -> Path:
    """Cycles back to back as a controller exports them: ``;``-separated, an ISO ``datetime``
    column (which no detection rule recognises) and a cycle counter."""
    from datetime import datetime, timedelta

    start = datetime(2024, 5, 1, 6, 0)  # naive: read as UTC
    lines = [";".join(["datetime", "cycle", *SIGNALS])]
    row = 0
    for number, cycle in enumerate(cycles):
        table = cycle.table
        for i in range(len(table)):
            stamp = (start + timedelta(seconds=row / RATE)).strftime("%Y-%m-%dT%H:%M:%S.%f")
            values = [f"{table.columns[s][i]:.6f}" for s in SIGNALS]
            lines.append(";".join([stamp, str(number), *values]))
            row += 1
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def series_model_at(root: Path, export: bool = True) -> tuple[Path, Path]:
    """(checkpoint, ONNX graph) of a PCA trained on a controller log of 12 cycles in
    ``root/logs``, cut by its cycle counter."""
    import yaml

    from flowedge.export.checked import ExportRequest, run_export

    (root / "logs").mkdir()
    controller_log(sim.simulate_set(12, 0, seed=3, rate_hz=RATE), root / "logs" / "shift.csv")
    detector = {
        "kind": "pca",
        "signals": SIGNALS,
        "rate_hz": RATE,
        "n_components": 4,
        "log": {"separator": ";", "time_column": "datetime", "meta_columns": ["cycle"]},
        "segment": {"mode": "cycle_id", "column": "cycle"},
    }
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump({"detector": detector}), encoding="utf-8")
    checkpoint = root / "model"
    argv = ["train", str(root / "logs"), "--config", str(config), "--out", str(checkpoint)]
    assert main(argv) == 0
    if export:
        run_export(ExportRequest(checkpoint, root / "model.onnx"))
    return checkpoint, root / "model.onnx"


@pytest.fixture(scope="module")
def series_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return series_model_at(tmp_path_factory.mktemp("controller"))


@pytest.mark.parametrize("model_file", ["checkpoint", "onnx"])
def test_predict_reads_and_cuts_logs_as_the_card_says(
    series_model: tuple[Path, Path], model_file: str, tmp_path: Path
) -> None:
    model = series_model[0] if model_file == "checkpoint" else series_model[1]
    logs = tmp_path / "logs"
    logs.mkdir()
    controller_log(sim.simulate_set(3, 0, seed=4, rate_hz=RATE), logs / "good.csv")
    controller_log(sim.simulate_set(0, 1, seed=5, rate_hz=RATE)[:2], logs / "odd.csv")
    (logs / "broken.csv").write_text("datetime;cycle\nnot a time;x\n", encoding="utf-8")
    out = tmp_path / "scores.csv"
    assert main(["predict", str(model), str(logs), "--out", str(out), "--threshold", "1e9"]) == 0
    rows = {Path(r["file"]).name: r for r in csv.DictReader(out.open(encoding="utf-8"))}
    assert sorted(rows) == [
        "broken.csv",
        "good.csv#0",
        "good.csv#1",
        "good.csv#2",
        "odd.csv#0",
        "odd.csv#1",
    ]
    assert rows["broken.csv"]["decision"] == "ERROR" and "broken.csv" in rows["broken.csv"]["error"]
    scored = [r for name, r in rows.items() if name != "broken.csv"]
    assert all(r["decision"] == "OK" and r["score"] and not r["error"] for r in scored)


def test_predict_scores_each_cycle_as_eval_does(
    series_model: tuple[Path, Path], tmp_path: Path
) -> None:
    import json

    root = tmp_path / "test"
    cycles = sim.simulate_set(3, 2, seed=4, rate_hz=RATE, kinds=("collision_cable",))
    for folder, part in (("good", cycles[:3]), ("collision", cycles[3:])):
        (root / folder).mkdir(parents=True)
        controller_log(part, root / folder / "log.csv")
    checkpoint, graph = series_model
    assert main(["eval", str(checkpoint), str(root), "--out", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text(encoding="utf-8"))
    by_eval = {f"{e['path']}#{e['part']}": e["score"] for e in report["images"]}
    out = tmp_path / "scores.csv"
    assert main(["predict", str(graph), str(root), "--out", str(out)]) == 0
    by_predict = {r["file"]: float(r["score"]) for r in csv.DictReader(out.open(encoding="utf-8"))}
    assert sorted(by_predict) == sorted(by_eval)
    for name, score in by_eval.items():
        assert by_predict[name] == pytest.approx(score, rel=1e-4)
