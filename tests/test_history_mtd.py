"""The review loop on real data (MTD, read in place): a station whose threshold is far too low
flags every good tile; a reviewer marks the false alarms from the history; ``flowedge
calibrate --history`` re-fits the threshold; a SIGHUP reload applies it; on good tiles the
model never saw, the station's false-alarm rate is back at the target.

Statistical tolerance (distribution-free): with n reviewed normal scores of which j lie
above the re-fitted threshold, the threshold's true false-alarm rate F lies between the
tail probabilities of two neighbouring order statistics, Beta(j, n-j+1) and
Beta(j+1, n-j); the alarms K among m unseen good tiles are Binomial(m, F). So K lies
between the 0.05 % quantile of BetaBinomial(m, j, n-j+1) and the 99.95 % quantile of
BetaBinomial(m, j+1, n-j) with probability >= 99.9 %: for n = 300, target 10 %
(j = 30) and m = 400, 15 to 76 false alarms (3.8 % to 19 %). Splits and training are
seeded, so the run is the same every time.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from runtime_fakes import wait_for_first_listing, wait_until  # noqa: E402

import flowedge.history as history  # noqa: E402
from flowedge.calibration.history.store import HistoryDB  # noqa: E402
from flowedge.cli import main  # noqa: E402

N_TRAIN, N_REVIEWED, N_UNSEEN, PER_DEFECT = 40, 300, 400, 4
TARGET = 0.1


def link(files: list[Path], folder: Path, prefix: str) -> None:
    """The dataset read in place: symbolic links, named so the reviewer knows the truth."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in files:
        (folder / f"{prefix}_{path.name}").symlink_to(path)


def tolerance(n: int, above: int, m: int) -> tuple[int, int]:
    """The 99.9 % range of alarms among ``m`` unseen normal samples (module docstring)."""
    from scipy.stats import betabinom

    low = int(betabinom(m, above, n - above + 1).ppf(0.0005))
    high = int(betabinom(m, above + 1, n - above).ppf(0.9995))
    return low, high


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_reviewed_false_alarms_bring_the_false_alarm_rate_back_to_target(
    mtd_root: Path, tmp_path: Path, one_torch_thread: None, capsys
) -> None:
    from conftest import tiny_detector_config, tiny_training_config

    from flowedge.backends import open_backend
    from flowedge.edge.cmd_run import Station
    from flowedge.edge.config import load_config
    from flowedge.flows.train import train

    good = sorted((mtd_root / "train" / "good").iterdir())
    order = np.random.default_rng(0).permutation(len(good))
    chosen = [good[i] for i in order]
    trained = chosen[:N_TRAIN]
    reviewed = chosen[N_TRAIN : N_TRAIN + N_REVIEWED]
    unseen = chosen[N_TRAIN + N_REVIEWED : N_TRAIN + N_REVIEWED + N_UNSEEN]
    defects = [
        path
        for folder in sorted((mtd_root / "test").iterdir())
        if folder.name != "good"
        for path in sorted(folder.iterdir())[:PER_DEFECT]
    ]
    link(trained, tmp_path / "train" / "train" / "good", "good")
    model = tmp_path / "model"
    train(
        tiny_detector_config(),
        tiny_training_config(),
        tmp_path / "train",
        model,
        show_progress=False,
    )

    config = tmp_path / "config.yaml"
    settings = {
        "site": "plant",
        "station": "line1",
        "model": {"path": str(model), "threshold": 0.0},  # far too low: every tile an alarm
        "sources": [{"name": "cam1", "kind": "watch", "path": str(tmp_path / "line")}],
        "pipeline": {
            "heatmaps": "none",
            "evidence": {"inputs": "anomalies", "dir": str(tmp_path / "evidence")},
        },
        "mqtt": {"enabled": False},
        "sinks": [{"kind": "history", "path": str(tmp_path / "history"), "min_free_mb": 0}],
        "metrics": {"enabled": False},
        "spool": {"path": str(tmp_path / "spool.sqlite")},
    }
    config.write_text(yaml.safe_dump(settings))
    (tmp_path / "line").mkdir()
    station = Station(config, load_config(config), None, open_backend(model, "torch", "cpu"))
    station.start()
    sink = station.sinks[0]
    wait_for_first_listing(station, "cam1")

    def decided(count: int) -> None:
        wait_until(
            lambda: station.pipeline.counts.snapshot()["decisions"] >= count, 300, "decisions"
        )
        assert sink.flush(60)

    # phase 1: the line runs with the bad threshold; a reviewer works through the alarms
    link(reviewed, tmp_path / "line", "good")
    link(defects, tmp_path / "line", "defect")
    decided(N_REVIEWED + len(defects))
    alarms = history.query(tmp_path / "history", decision="ANOMALY")
    assert len(alarms) == N_REVIEWED + len(defects)  # 100 % false alarms on good tiles
    assert all(row.input_path and Path(row.input_path).is_file() for row in alarms)
    with HistoryDB(tmp_path / "history") as db:
        for row in alarms:
            truth = "false_alarm" if row.part_id.startswith("good_") else "confirmed_anomaly"
            history.review(db, truth, "qa-inspector", source=row.source, seq=row.seq)

    # re-fit from the reviewed history, apply with a reload (no restart)
    calibration = tmp_path / "calibration.json"
    args = ["calibrate", str(model), "--history", str(tmp_path / "history")]
    assert main([*args, "--target-far", str(TARGET), "--out", str(calibration)]) == 0
    report = capsys.readouterr().out
    with capsys.disabled():
        print(report)
    assert "threshold   before 0 -> after" in report
    settings["model"] = {"path": str(model), "calibration": str(calibration)}
    config.write_text(yaml.safe_dump(settings))
    station.reload()
    threshold = station.pipeline.policy.threshold
    assert threshold > 0.0
    scores = np.array([row.score for row in alarms if row.part_id.startswith("good_")])
    above = int(np.count_nonzero(scores > threshold))
    assert abs(above - TARGET * (N_REVIEWED + 1)) <= 1  # the empirical quantile

    # phase 2: good tiles the model never saw nor calibrated on
    link(unseen, tmp_path / "line", "unseen")
    decided(N_REVIEWED + len(defects) + N_UNSEEN)
    station.pipeline.stop()
    station.shutdown("test over", wait_for_delivery=False, interrupted=threading.Event())
    later = [r for r in history.query(tmp_path / "history") if r.part_id.startswith("unseen_")]
    assert len(later) == N_UNSEEN and {r.threshold for r in later} == {threshold}
    false_alarms = sum(r.decision == "ANOMALY" for r in later)
    low, high = tolerance(N_REVIEWED, above, N_UNSEEN)
    print(
        f"re-fitted threshold {threshold:.6g}: {false_alarms}/{N_UNSEEN} false alarms on unseen "
        f"good tiles (target {TARGET:.0%}, 99.9 % range {low}-{high})"
    )
    assert low <= false_alarms <= high
    seqs = [r.seq for r in history.query(tmp_path / "history")]
    assert seqs == list(range(1, len(seqs) + 1))  # nothing lost across the reload
