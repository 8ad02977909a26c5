"""Threshold strategies, the calibrated distribution and calibration.json, on generated scores."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from flowedge.calibration.calibfile import load_calibration, read_calibration, save_calibration
from flowedge.calibration.calibrate import CalibrationOptions, build_calibration, update_calibration
from flowedge.calibration.distribution import NORMALISED_MAX, ScoreDistribution
from flowedge.calibration.thresholds import far_threshold, labelled_threshold, sigma_threshold
from flowedge.core.card import ImageInput, ModelCard, ScoreSpec
from flowedge.core.errors import CheckFailedError, ConfigError, DataError, ModelMismatchError

FAST = CalibrationOptions(bootstrap=40)


def make_card(sha: str = "ab" * 32) -> ModelCard:
    return ModelCard("csflow", {}, {}, ImageInput(), ScoreSpec("mean_z2"), weights_sha256=sha)


@pytest.mark.parametrize(
    "law", [stats.gamma(2.0, scale=1.0), stats.lognorm(0.5, scale=3.0)], ids=["gamma", "lognormal"]
)
def test_far_target_met_on_fresh_normal_data(law) -> None:
    rng = np.random.default_rng(1)
    data = build_calibration(law.rvs(2000, random_state=rng), make_card(), FAST)
    far = data["expected_far"]
    assert data["strategy"]["detail"]["method"] == "empirical"
    assert far["method"] == "clopper-pearson"
    assert far["low"] < 0.01 < far["high"]
    fresh = law.rvs(200_000, random_state=rng)
    achieved = float(np.mean(fresh > data["threshold"]))
    assert far["low"] <= achieved <= far["high"]
    assert far["low"] <= float(law.sf(data["threshold"])) <= far["high"]


def test_gpd_tail_below_one_over_n() -> None:
    law = stats.gamma(2.0)
    sample = law.rvs(1000, random_state=np.random.default_rng(2))
    data = build_calibration(sample, make_card(), replace(FAST, target_far=1e-4))
    assert data["strategy"]["detail"]["method"] == "gpd_tail"
    assert data["threshold"] > sample.max()
    far = data["expected_far"]
    assert far["method"].startswith("bootstrap")
    assert far["low"] <= float(law.sf(data["threshold"])) <= far["high"]
    assert data["normalised_threshold"] == pytest.approx(4.0)


def test_refuses_rates_the_data_cannot_support() -> None:
    small = stats.gamma(2.0).rvs(100, random_state=np.random.default_rng(3))
    with pytest.raises(DataError, match="below what 100 normal samples show"):
        build_calibration(small, make_card(), replace(FAST, target_far=1e-3))
    large = stats.gamma(2.0).rvs(1000, random_state=np.random.default_rng(3))
    with pytest.raises(DataError, match="extrapolate"):
        build_calibration(large, make_card(), replace(FAST, target_far=1e-7))


def test_empirical_quantile_by_hand() -> None:
    dist = ScoreDistribution.from_sample(np.arange(1.0, 100.0))  # n = 99: S(x_(i)) = (100-i)/100
    assert far_threshold(dist, 0.01, 0.1, 100).threshold == pytest.approx(99.0)
    assert far_threshold(dist, 0.05, 0.1, 100).threshold == pytest.approx(95.0)
    between = 98.0 + math.log(0.02 / 0.015) / math.log(2.0)  # log-linear between 98 and 99
    assert far_threshold(dist, 0.015, 0.1, 100).threshold == pytest.approx(between)


def test_sigma_by_hand() -> None:
    normal = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert sigma_threshold(normal, 2.0).threshold == pytest.approx(3.0 + 2.0 * math.sqrt(2.5))


@pytest.mark.parametrize(
    ("strategy", "kwargs", "expected"),
    [
        ("f1", {}, 3.25),
        ("youden", {}, 3.25),
        ("cost", {"cost_ratio": 1.0, "prevalence": 0.5}, 3.25),
        ("cost", {"cost_ratio": 0.1, "prevalence": 0.5}, 4.5),
    ],
)
def test_labelled_strategies_by_hand(strategy: str, kwargs: dict, expected: float) -> None:
    normal, anomalous = np.array([1.0, 2.0, 3.0, 4.0]), np.array([3.5, 5.0, 6.0])
    assert labelled_threshold(normal, anomalous, strategy, **kwargs).threshold == expected


def test_normalise_monotone_and_target_at_threshold(tmp_path) -> None:
    sample = stats.gamma(2.0).rvs(1000, random_state=np.random.default_rng(4))
    cal = save_calibration(build_calibration(sample, make_card(), FAST), tmp_path / "c.json")
    assert cal.normalise(cal.threshold) == pytest.approx(2.0)
    grid = np.linspace(-5.0, 40.0, 5000)
    values = [cal.normalise(s) for s in grid]
    assert np.all(np.diff(values) >= 0) and values[0] >= 0.0
    assert cal.normalise(math.inf) == NORMALISED_MAX and math.isnan(cal.normalise(math.nan))
    sigma = save_calibration(
        build_calibration(sample, make_card(), replace(FAST, strategy="sigma")), tmp_path / "s.json"
    )
    assert sigma.normalise(sigma.threshold) == pytest.approx(-math.log10(sigma.expected_far))


def test_ties_are_handled() -> None:
    sample = np.random.default_rng(5).integers(0, 20, 500).astype(float)
    dist = ScoreDistribution.from_sample(sample)
    assert np.all(np.diff(dist.scores) > 0)
    threshold = dist.isf(0.01)
    assert dist.sf(threshold)[0] == pytest.approx(0.01)


def test_calibration_file_round_trip_and_binding(tmp_path) -> None:
    sample = stats.gamma(2.0).rvs(500, random_state=np.random.default_rng(6))
    path = tmp_path / "calibration.json"
    save_calibration(build_calibration(sample, make_card(), FAST), path)
    cal = load_calibration(path, make_card())
    assert json.loads(path.read_text())["threshold"] == cal.threshold
    other = make_card("cd" * 32)
    with pytest.raises(ModelMismatchError, match="belongs to model csflow-abababababab"):
        load_calibration(path, other)
    with pytest.raises(ConfigError, match="not found"):
        load_calibration(tmp_path / "missing.json", make_card())
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ModelMismatchError, match="not valid JSON"):
        read_calibration(tmp_path / "bad.json")
    data = json.loads(path.read_text())
    del data["normal"]
    (tmp_path / "partial.json").write_text(json.dumps(data))
    with pytest.raises(ModelMismatchError, match="malformed"):
        read_calibration(tmp_path / "partial.json")


def test_bad_input_refused() -> None:
    rng = np.random.default_rng(7)
    normal = rng.normal(0.0, 1.0, 200)
    with pytest.raises(CheckFailedError, match="probably swapped"):
        build_calibration(normal + 5.0, make_card(), replace(FAST, strategy="f1"), anomalous=normal)
    with pytest.raises(DataError, match="NaN or infinite"):
        build_calibration(np.r_[normal, np.nan], make_card(), FAST)
    with pytest.raises(DataError, match="only 10 normal"):
        build_calibration(normal[:10], make_card(), FAST)
    with pytest.raises(DataError, match="all 50 calibration scores are equal"):
        build_calibration(np.ones(50), make_card(), FAST)
    with pytest.raises(ConfigError, match="needs labelled anomalies"):
        build_calibration(normal, make_card(), replace(FAST, strategy="youden"))


def test_anomalous_summary_reports_recall() -> None:
    rng = np.random.default_rng(8)
    normal, anomalous = rng.normal(0.0, 1.0, 500), rng.normal(4.0, 1.0, 50)
    data = build_calibration(normal, make_card(), FAST, anomalous=anomalous)
    recall = data["anomalous"]["recall"]
    assert recall["low"] <= recall["value"] <= recall["high"]
    assert recall["value"] == np.mean(anomalous > data["threshold"])
    assert data["anomalous"]["auroc_vs_normal"] > 0.95


def test_update_merge_and_replace() -> None:
    rng = np.random.default_rng(9)
    first = build_calibration(rng.gamma(2.0, size=300), make_card(), FAST)
    merged = update_calibration(first, rng.gamma(2.0, size=200), make_card(), FAST, "merge")
    assert merged["normal"]["n"] == 500
    assert [h["action"] for h in merged["history"]] == ["calibrate", "update (merge)"]
    replaced = update_calibration(merged, rng.gamma(3.0, size=250), make_card(), FAST, "replace")
    assert replaced["normal"]["n"] == 250 and len(replaced["history"]) == 3
    assert replaced["threshold"] > first["threshold"]


def test_a_score_at_the_threshold_is_not_a_false_alarm_nor_a_catch() -> None:
    """Calibration counts with the station's rule: a score equal to the threshold is OK."""
    from flowedge.calibration.calibrate import anomalous_summary, far_estimate

    normal = np.arange(1.0, 101.0)  # 100 distinct normal scores
    dist = ScoreDistribution.from_sample(normal, FAST.tail_fraction, FAST.min_exceedances)
    far = far_estimate(normal, dist, 90.0, FAST)
    assert far["in_sample_alarms"] == 10  # 91..100; the normal score 90 itself is no alarm
    anomalous = np.array([90.0, 95.0, 99.0])
    assert anomalous_summary(normal, anomalous, 90.0, 0.95)["recall"]["caught"] == 2
