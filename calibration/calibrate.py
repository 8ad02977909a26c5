"""Build the content of calibration.json from score arrays (no model, no torch).

Keeps the threshold maths independent of how the scores were obtained: the command
(:mod:`calibration.cmd`) scores images and hands numpy arrays to :func:`build_calibration`
and :func:`update_calibration`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from flowedge import __version__
from flowedge.calibration.calibfile import CALIBRATION_FORMAT
from flowedge.calibration.distribution import ScoreDistribution, check_scores, table_positions
from flowedge.calibration.thresholds import (
    LABELLED,
    STRATEGIES,
    ThresholdResult,
    check_sample_sizes,
    check_separation,
    clopper_pearson,
    far_threshold,
    labelled_threshold,
    sigma_threshold,
)
from flowedge.core.card import ModelCard
from flowedge.core.decision import is_anomalous
from flowedge.core.errors import ConfigError, DataError
from flowedge.core.metrics import separation_auroc

log = logging.getLogger(__name__)


MAX_TARGET_FAR = 0.5  # above, most normal parts would raise an alarm
MAX_SIGMA_K = 100.0  # further out than any score distribution worth calibrating
MAX_COST_RATIO = 1e6
MAX_BOOTSTRAP = 100_000


@dataclass(frozen=True)
class CalibrationOptions:
    """How the threshold is chosen; values that cannot give a usable threshold are refused."""

    strategy: str = "far"
    target_far: float = 0.01
    k: float = 3.0
    cost_ratio: float = 10.0
    prevalence: float | None = None
    tail_fraction: float = 0.1  # share of the largest normal scores the GPD tail is fitted to
    min_exceedances: int = 30  # fewer exceedances: no tail fit, no target below 1/(N+1)
    max_extrapolation: float = 10.0  # lowest target: 1/((N+1) * this)
    confidence: float = 0.95
    bootstrap: int = 200  # resamples for the tail interval
    seed: int = 0

    def __post_init__(self) -> None:
        # written so that NaN fails every rule (every comparison with NaN is false)
        rules = [
            (
                "--target-far",
                self.target_far,
                0 < self.target_far <= MAX_TARGET_FAR,
                f"a false-alarm rate in (0, {MAX_TARGET_FAR}]",
            ),
            ("--k", self.k, 0 < self.k <= MAX_SIGMA_K, f"in (0, {MAX_SIGMA_K:g}]"),
            (
                "--cost-ratio",
                self.cost_ratio,
                0 < self.cost_ratio <= MAX_COST_RATIO,
                f"in (0, {MAX_COST_RATIO:g}]",
            ),
            (
                "--prevalence",
                self.prevalence,
                self.prevalence is None or 0 < self.prevalence < 1,
                "in (0, 1)",
            ),
            (
                "--bootstrap",
                self.bootstrap,
                0 <= self.bootstrap <= MAX_BOOTSTRAP,
                f"in [0, {MAX_BOOTSTRAP}]",
            ),
        ]
        problems = [
            f"{flag} must be {rule} (got {value})" for flag, value, ok, rule in rules if not ok
        ]
        if problems:
            raise ConfigError("; ".join(problems))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def choose_threshold(
    normal: np.ndarray,
    anomalous: np.ndarray | None,
    dist: ScoreDistribution,
    opts: CalibrationOptions,
) -> ThresholdResult:
    """Apply the strategy to checked scores (see :func:`build_calibration`)."""
    if opts.strategy == "far":
        return far_threshold(dist, opts.target_far, opts.tail_fraction, opts.max_extrapolation)
    if opts.strategy == "sigma":
        return sigma_threshold(normal, opts.k)
    assert anomalous is not None  # check_sample_sizes refuses labelled strategies without
    return labelled_threshold(normal, anomalous, opts.strategy, opts.cost_ratio, opts.prevalence)


def far_estimate(
    normal: np.ndarray, dist: ScoreDistribution, threshold: float, opts: CalibrationOptions
) -> dict[str, Any]:
    """Expected false-alarm rate of ``threshold`` with a confidence interval.

    Value: the calibrated ``S(threshold)`` (the same function as the normalisation).
    Interval: Clopper-Pearson on the normal samples above the threshold while it lies
    inside the sample; past the largest sample, a bootstrap over the whole fit (resample,
    refit the tail, re-evaluate ``S``) when a tail was fitted.
    """
    value = float(dist.sf(threshold)[0])
    above = int(np.count_nonzero(is_anomalous(normal, threshold)))
    result = {"value": value, "confidence": opts.confidence, "in_sample_alarms": above}
    if threshold <= normal.max() or dist.tail is None:
        low, high = clopper_pearson(above, normal.size, opts.confidence)
        method = "clopper-pearson"
        if threshold > normal.max():
            method += " (no normal sample above; value extrapolated without a tail fit)"
    else:
        low, high = _bootstrap_interval(normal, threshold, opts)
        method = f"bootstrap ({opts.bootstrap} resamples, GPD tail refitted)"
    return {**result, "low": low, "high": high, "method": method}


def _bootstrap_interval(
    normal: np.ndarray, threshold: float, opts: CalibrationOptions
) -> tuple[float, float]:
    rng = np.random.default_rng(opts.seed)
    values = []
    for _ in range(opts.bootstrap):
        resample = rng.choice(normal, size=normal.size, replace=True)
        fit = ScoreDistribution.from_sample(resample, opts.tail_fraction, opts.min_exceedances)
        values.append(float(fit.sf(threshold)[0]))
    alpha = 1.0 - opts.confidence
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def anomalous_summary(
    normal: np.ndarray, anomalous: np.ndarray, threshold: float, confidence: float
) -> dict[str, Any]:
    caught = int(np.count_nonzero(is_anomalous(anomalous, threshold)))
    low, high = clopper_pearson(caught, anomalous.size, confidence)
    return {
        "n": int(anomalous.size),
        "mean": float(anomalous.mean()),
        "min": float(anomalous.min()),
        "median": float(np.median(anomalous)),
        "max": float(anomalous.max()),
        "auroc_vs_normal": separation_auroc(normal, anomalous),
        "recall": {"value": caught / anomalous.size, "low": low, "high": high, "caught": caught},
        "scores": np.sort(anomalous).tolist(),
    }


def build_calibration(
    normal: np.ndarray,
    card: ModelCard,
    opts: CalibrationOptions,
    anomalous: np.ndarray | None = None,
    sources: dict[str, Any] | None = None,
    history: list[dict[str, Any]] | None = None,
    action: str = "calibrate",
) -> dict[str, Any]:
    """The calibration file content for ``card``'s weights (validated by the caller's save)."""
    if not card.score.higher_is_anomalous:
        raise ConfigError(
            f"model {card.model_id}: its score is lower-is-anomalous; calibration assumes "
            "'score > threshold' is an anomaly"
        )
    if opts.strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {opts.strategy!r}; use one of {', '.join(STRATEGIES)}")
    normal = check_scores(normal, "normal calibration scores")
    if anomalous is not None:
        anomalous = check_scores(anomalous, "anomalous calibration scores")
    check_sample_sizes(normal, anomalous, opts.strategy)
    if anomalous is not None and anomalous.size:
        check_separation(normal, anomalous)
    dist = ScoreDistribution.from_sample(normal, opts.tail_fraction, opts.min_exceedances)
    chosen = choose_threshold(normal, anomalous, dist, opts)
    if not math.isfinite(chosen.threshold):
        raise ConfigError(
            f"strategy '{chosen.strategy}' with {chosen.params} gives a threshold of "
            f"{chosen.threshold} for these scores (mean {dist.mean:.6g}, std {dist.std:.6g}): "
            "not a usable decision threshold; choose a smaller --k or another --strategy"
        )
    far = far_estimate(normal, dist, chosen.threshold, opts)
    if far["value"] > 0.2:
        log.warning(
            "threshold %.6g flags %.1f%% of normal parts", chosen.threshold, 100 * far["value"]
        )
    sorted_normal = np.sort(normal)
    entry = {
        "utc": _now(),
        "action": action,
        "strategy": chosen.strategy,
        "threshold": chosen.threshold,
        "n_normal": int(normal.size),
        "sources": sources or {},
    }
    return {
        "calibration_format": CALIBRATION_FORMAT,
        "model_id": card.model_id,
        "weights_sha256": card.weights_sha256,
        "detector": card.detector,
        "score_kind": card.score.kind,
        "flowedge_version": __version__,
        "created_utc": entry["utc"],
        "threshold": chosen.threshold,
        "normalised_threshold": float(dist.normalise(chosen.threshold)[0]),
        "strategy": {"name": chosen.strategy, "params": chosen.params, "detail": chosen.detail},
        "options": asdict(opts),
        "expected_far": far,
        "normal": {**dist.to_dict(), "sources": sources or {}},
        "normal_sample": sorted_normal[table_positions(sorted_normal.size)].tolist(),
        "anomalous": None
        if anomalous is None or not anomalous.size
        else anomalous_summary(normal, anomalous, chosen.threshold, opts.confidence),
        "history": [*(history or []), entry],
    }


def update_calibration(
    previous: dict[str, Any],
    new_normal: np.ndarray,
    card: ModelCard,
    opts: CalibrationOptions,
    mode: str,
    anomalous: np.ndarray | None = None,
    sources: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Recalibrate from newly collected normal scores without retraining.

    ``merge`` pools the stored normal sample with the new scores (the line is unchanged,
    more data tightens the estimate); ``replace`` uses only the new scores (the line
    changed: new lamp, new batch of material). Labelled anomalies are kept from the
    previous file unless new ones are given. The history records every step.
    """
    if mode not in ("merge", "replace"):
        raise ConfigError(f"update mode must be merge or replace, got {mode!r}")
    new_normal = check_scores(new_normal, "new normal calibration scores")
    if mode == "merge":
        stored = np.asarray(previous.get("normal_sample", []), dtype=np.float64)
        if stored.size != int(previous["normal"]["n"]):
            raise DataError(
                f"the previous calibration stores a {stored.size}-value summary of its "
                f"{previous['normal']['n']} normal scores, not the sample: merging would "
                "bias it; use --replace with all the normal data"
            )
        new_normal = np.concatenate([stored, new_normal])
    if anomalous is None and previous.get("anomalous"):
        anomalous = np.asarray(previous["anomalous"]["scores"], dtype=np.float64)
    if opts.strategy in LABELLED and anomalous is None:
        raise ConfigError(f"strategy '{opts.strategy}' needs --anomalous DIR (none stored)")
    return build_calibration(
        new_normal,
        card,
        opts,
        anomalous,
        sources,
        history=previous.get("history", []),
        action=f"update ({mode})",
    )
