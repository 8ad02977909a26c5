"""Threshold strategies: pure functions of numpy score arrays (however they were obtained).

Decision rule everywhere (:mod:`flowedge.core.decision`): ``score > threshold`` is an anomaly. With labelled anomalies the
candidates are the midpoints between consecutive distinct pooled scores (plus one below
and one above all), and ties in the objective go to the *highest* threshold, i.e. the
fewest false alarms.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from flowedge.calibration.distribution import ScoreDistribution
from flowedge.calibration.tail import exceedance_count
from flowedge.core.errors import CheckFailedError, ConfigError, DataError
from flowedge.core.metrics import separation_auroc

STRATEGIES = ("far", "sigma", "f1", "youden", "cost")
LABELLED = ("f1", "youden", "cost")
MIN_NORMAL = 20
MIN_ANOMALOUS = 3

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ThresholdResult:
    threshold: float
    strategy: str
    params: dict[str, Any]
    detail: dict[str, Any] = field(default_factory=dict)  # how it was chosen (method, metrics)


def check_sample_sizes(normal: np.ndarray, anomalous: np.ndarray | None, strategy: str) -> None:
    if normal.size < MIN_NORMAL:
        raise DataError(
            f"only {normal.size} normal calibration scores; need at least {MIN_NORMAL} "
            "(and about 1/target for a false-alarm target): add held-out normal images"
        )
    if strategy in LABELLED:
        if anomalous is None:
            raise ConfigError(
                f"strategy '{strategy}' needs labelled anomalies: pass --anomalous DIR"
            )
        if anomalous.size < MIN_ANOMALOUS:
            raise DataError(
                f"only {anomalous.size} anomalous scores; strategy '{strategy}' needs at least "
                f"{MIN_ANOMALOUS}: add defect images to the --anomalous folder"
            )


def check_separation(normal: np.ndarray, anomalous: np.ndarray, p_swapped: float = 0.01) -> float:
    """Refuse anomalies that score significantly *below* normal: almost always swapped folders.

    A one-sided Mann-Whitney test, not a bare AUROC < 0.5, so a model that barely
    separates (AUROC near 0.5 by chance) is warned about rather than refused.
    """
    value = separation_auroc(normal, anomalous)
    p_value = float(stats.mannwhitneyu(anomalous, normal, alternative="less").pvalue)
    if p_value < p_swapped:
        raise CheckFailedError(
            f"the anomalous images score lower than the normal ones (AUROC {value:.3f}, "
            f"one-sided p = {p_value:.2g}): the --normal and --anomalous folders are probably "
            "swapped, or the model does not work on this data; check the folders before calibrating"
        )
    if value < 0.6:
        log.warning(
            "the model barely separates anomalous from normal images (AUROC %.3f): "
            "label-based strategies will be unreliable",
            value,
        )
    return value


def far_threshold(
    dist: ScoreDistribution, target: float, tail_fraction: float, max_extrapolation: float
) -> ThresholdResult:
    """Threshold with a calibrated false-alarm rate of ``target`` on normal data.

    At or above 1/(N+1) the empirical quantile (interpolated order statistics); below, the
    generalized Pareto tail, down to 1/((N+1) * max_extrapolation) and only when it was
    fitted (enough exceedances); otherwise refuse: the data cannot support the rate.
    """
    if not 0.0 < target < 1.0:
        raise ConfigError(f"--target-far must be in (0, 1), got {target}")
    params = {"target_far": target}
    floor = dist.min_sf
    if target >= floor * (1 - 1e-9):  # 1/(N+1) itself, despite rounding
        return ThresholdResult(dist.isf(target), "far", params, {"method": "empirical"})
    needed = math.ceil(1.0 / target) - 1
    if dist.tail is None:
        have = exceedance_count(dist.n, tail_fraction)
        raise DataError(
            f"a false-alarm rate of {target:g} is below what {dist.n} normal samples show "
            f"(1/(N+1) = {floor:.3g}) and the tail fit needs more data ({have} exceedances in "
            f"the top {tail_fraction:.0%}; too few or degenerate): collect about {needed} "
            "normal samples, or ask for a higher --target-far"
        )
    lowest = floor / max_extrapolation
    if target < lowest:
        raise DataError(
            f"a false-alarm rate of {target:g} would extrapolate the tail fit more than "
            f"{max_extrapolation:g}x past the data ({dist.n} samples support down to "
            f"{lowest:.3g}): collect about {needed} normal samples, or ask for a higher rate"
        )
    detail = {"method": "gpd_tail", "tail": dist.tail.to_dict()}
    return ThresholdResult(dist.isf(target), "far", params, detail)


def sigma_threshold(normal: np.ndarray, k: float) -> ThresholdResult:
    """mean + k * std of the normal scores (ignores skew: report its real false-alarm rate)."""
    mean, std = float(normal.mean()), float(normal.std(ddof=1))
    return ThresholdResult(mean + k * std, "sigma", {"k": k}, {"mean": mean, "std": std})


def _candidates(normal: np.ndarray, anomalous: np.ndarray) -> np.ndarray:
    pooled = np.unique(np.concatenate([normal, anomalous]))
    gaps = np.diff(pooled)
    step = float(gaps.min()) if gaps.size else 1.0
    return np.r_[pooled[0] - step, (pooled[:-1] + pooled[1:]) / 2.0, pooled[-1] + step]


def _confusion(normal: np.ndarray, anomalous: np.ndarray, thresholds: np.ndarray):
    """(true positives, false positives) for each threshold under the one decision rule
    (:func:`flowedge.core.decision.is_anomalous`, ``score > t``): ``side="right"`` counts
    exactly the scores above ``t``, so a score at ``t`` is not an alarm."""
    tp = anomalous.size - np.searchsorted(np.sort(anomalous), thresholds, side="right")
    fp = normal.size - np.searchsorted(np.sort(normal), thresholds, side="right")
    return tp.astype(np.float64), fp.astype(np.float64)


def _best(thresholds: np.ndarray, objective: np.ndarray) -> int:
    """Index of the highest threshold among the maximisers."""
    return int(np.flatnonzero(objective >= objective.max() - 1e-12)[-1])


def labelled_threshold(
    normal: np.ndarray,
    anomalous: np.ndarray,
    strategy: str,
    cost_ratio: float = 10.0,
    prevalence: float | None = None,
) -> ThresholdResult:
    """F1-max, Youden J (TPR - FPR) or minimum expected cost over the candidates.

    cost: a missed defect costs ``cost_ratio`` false alarms; expected cost per part is
    ``cost_ratio * prevalence * FNR + (1 - prevalence) * FPR``, with ``prevalence`` the
    share of defects on the line (default: their share in the labelled folders).
    """
    thresholds = _candidates(normal, anomalous)
    tp, fp = _confusion(normal, anomalous, thresholds)
    tpr, fpr = tp / anomalous.size, fp / normal.size
    params: dict[str, Any] = {}
    if strategy == "f1":
        objective = 2 * tp / np.maximum(2 * tp + fp + (anomalous.size - tp), 1.0)
    elif strategy == "youden":
        objective = tpr - fpr
    elif strategy == "cost":
        if cost_ratio <= 0:
            raise ConfigError(f"--cost-ratio must be > 0, got {cost_ratio}")
        share = anomalous.size / (anomalous.size + normal.size)
        prior = share if prevalence is None else prevalence
        if not 0.0 < prior < 1.0:
            raise ConfigError(f"--prevalence must be in (0, 1), got {prior}")
        params = {"cost_ratio": cost_ratio, "prevalence": prior}
        objective = -(cost_ratio * prior * (1 - tpr) + (1 - prior) * fpr)
    else:
        raise ConfigError(f"unknown labelled strategy {strategy!r}; use one of {LABELLED}")
    best = _best(thresholds, objective)
    detail = {
        "objective": float(objective[best]),
        "recall": float(tpr[best]),
        "false_alarm_rate_on_normal": float(fpr[best]),
    }
    return ThresholdResult(float(thresholds[best]), strategy, params, detail)


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval for a rate seen as ``k`` events in ``n`` trials."""
    alpha = 1.0 - confidence
    low = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high
