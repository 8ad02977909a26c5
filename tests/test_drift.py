"""Drift monitoring: flagged when the score distribution shifts, quiet when it does not."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from flowedge.calibration.calibfile import Calibration, save_calibration
from flowedge.calibration.calibrate import CalibrationOptions, build_calibration
from flowedge.calibration.config import DriftConfig
from flowedge.calibration.drift import DriftMonitor
from flowedge.core.card import ImageInput, ModelCard, ScoreSpec

CFG = DriftConfig(window=300, check_every=50, p_value=0.001)


@pytest.fixture(scope="module")
def calibration(tmp_path_factory: pytest.TempPathFactory) -> Calibration:
    card = ModelCard("csflow", {}, {}, ImageInput(), ScoreSpec("mean_z2"), weights_sha256="ab" * 32)
    sample = np.random.default_rng(0).gamma(2.0, 1.0, 2000)
    data = build_calibration(sample, card, CalibrationOptions(target_far=0.01))
    return save_calibration(data, tmp_path_factory.mktemp("cal") / "calibration.json")


def feed(monitor: DriftMonitor, scores: np.ndarray) -> list:
    return [
        r
        for r in (monitor.update(float(s), timestamp=1.7e9 + i) for i, s in enumerate(scores))
        if r
    ]


def test_quiet_without_drift(calibration: Calibration) -> None:
    monitor = DriftMonitor(calibration, CFG)
    assert feed(monitor, np.random.default_rng(1).gamma(2.0, 1.0, 3000)) == []
    last = monitor.last_report
    assert last is not None and not last.drifted and last.window == CFG.window


def test_flags_a_shifted_distribution(calibration: Calibration) -> None:
    monitor = DriftMonitor(calibration, CFG)
    rng = np.random.default_rng(2)
    assert feed(monitor, rng.gamma(2.0, 1.0, 300)) == []
    reports = feed(monitor, rng.gamma(2.0, 1.4, 600))
    assert reports and "distribution" in reports[-1].reasons
    evidence = json.loads(json.dumps(reports[-1].to_dict()))  # plain JSON for MQTT
    for key in ("window", "crossing_rate", "expected_far", "binomial_p", "ks_p", "window_end_utc"):
        assert key in evidence
    assert evidence["window_median"] > evidence["reference_median"]


def test_flags_a_rising_alarm_rate(calibration: Calibration) -> None:
    monitor = DriftMonitor(calibration, CFG)
    rng = np.random.default_rng(3)
    normal = rng.gamma(2.0, 1.0, 600)
    normal[rng.random(600) < 0.06] = calibration.threshold * 1.5  # 6 % anomalies vs 1 % calibrated
    reports = feed(monitor, normal)
    assert reports and "alarm_rate" in reports[-1].reasons
    assert reports[-1].crossing_rate > 0.03 and reports[-1].binomial_p < CFG.p_value


def test_flags_a_downward_shift(calibration: Calibration) -> None:
    monitor = DriftMonitor(calibration, CFG)
    reports = feed(monitor, np.random.default_rng(4).gamma(2.0, 0.6, 600))
    assert reports and reports[-1].reasons == ["distribution"]


def test_nonfinite_scores_counted_not_used(calibration: Calibration) -> None:
    monitor = DriftMonitor(calibration, CFG)
    assert monitor.update(float("nan")) is None and monitor.skipped_nonfinite == 1
    feed(monitor, np.random.default_rng(5).gamma(2.0, 1.0, 300))
    assert monitor.last_report is not None and monitor.last_report.skipped_nonfinite == 1


def test_disabled_monitor_never_reports(calibration: Calibration) -> None:
    monitor = DriftMonitor(calibration, DriftConfig(enabled=False, window=20, check_every=1))
    assert feed(monitor, np.full(100, 100.0)) == [] and monitor.last_report is None


def test_station_modules_do_not_import_torch() -> None:
    code = (
        "import sys, calibration.calibfile, calibration.drift, calibration.int8; "
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_a_score_at_the_threshold_is_not_a_crossing(calibration: Calibration) -> None:
    monitor = DriftMonitor(calibration, CFG)
    for score in (calibration.threshold, calibration.threshold, calibration.threshold * 2):
        monitor.update(score)
    assert monitor.check().crossings == 1
