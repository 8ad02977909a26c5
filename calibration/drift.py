"""Drift alarms: is the station still seeing the normal distribution it was calibrated on?

One :class:`DriftMonitor` per sensor keeps a rolling window of recent raw scores and,
every ``check_every`` decisions once the window is full, runs two tests against the
calibration:

* alarm rate: are there more threshold crossings than the calibrated false-alarm rate
  allows? (one-sided exact binomial test; catches a rising share of anomalies *or* a
  shifted normal distribution);
* distribution: does the window still follow the calibrated normal score distribution?
  (Kolmogorov-Smirnov against the calibrated CDF, with the effective size
  ``n*m/(n+m)`` because the reference is itself a sample of ``m`` scores; catches drift
  in either direction, e.g. a lamp ageing, before it raises false alarms).

Both assume independent scores; consecutive parts on a line are often correlated, which
makes the tests somewhat eager. numpy/scipy only (no torch).
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from scipy import stats

from flowedge.calibration.calibfile import Calibration
from flowedge.calibration.config import DriftConfig
from flowedge.core.decision import is_anomalous


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class DriftReport:
    """The evidence of one drift check; ``drifted`` when any test fell below ``significance``."""

    drifted: bool
    reasons: list[str]
    model_id: str
    window: int
    window_start_utc: str
    window_end_utc: str
    checked_utc: str
    threshold: float
    crossings: int
    crossing_rate: float
    expected_far: float
    binomial_p: float  # P(>= crossings | calibrated false-alarm rate)
    ks_statistic: float
    ks_p: float
    reference_n: int
    window_median: float
    reference_median: float
    window_median_normalised: float
    significance: float
    skipped_nonfinite: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One line for logs and operators."""
        return (
            f"drift {'DETECTED' if self.drifted else 'none'} ({', '.join(self.reasons) or 'ok'}): "
            f"{self.crossings}/{self.window} above threshold ({self.crossing_rate:.2%} vs "
            f"{self.expected_far:.2%} calibrated, p={self.binomial_p:.2g}); KS D="
            f"{self.ks_statistic:.3f} p={self.ks_p:.2g}; median {self.window_median:.4g} vs "
            f"{self.reference_median:.4g}"
        )


def crossing_test(crossings: int, n: int, expected_far: float) -> float:
    """One-sided exact binomial p-value of at least ``crossings`` alarms in ``n`` normal samples."""
    p0 = min(max(expected_far, 1e-12), 1 - 1e-12)
    return float(stats.binomtest(crossings, n, p0, alternative="greater").pvalue)


def ks_test(window: np.ndarray, calibration: Calibration) -> tuple[float, float]:
    """KS statistic of the window against the calibrated CDF and its p-value (see module doc)."""
    values = np.sort(window)
    n = values.size
    cdf = 1.0 - calibration.distribution.sf(values)
    ranks = np.arange(1, n + 1) / n
    statistic = float(max(np.max(ranks - cdf), np.max(cdf - (ranks - 1.0 / n))))
    m = calibration.distribution.n
    effective = max(1, round(n * m / (n + m)))
    return statistic, float(stats.kstwo.sf(statistic, effective))


class DriftMonitor:
    """Rolling drift checks for one sensor; :meth:`update` is cheap between checks."""

    def __init__(self, calibration: Calibration, cfg: DriftConfig) -> None:
        self.calibration = calibration
        self.cfg = cfg
        self._scores: deque[float] = deque(maxlen=cfg.window)
        self._times: deque[float] = deque(maxlen=cfg.window)
        self._since_check = 0
        self.skipped_nonfinite = 0
        self.last_report: DriftReport | None = None  # the latest check, drifted or not

    def update(self, score: float, timestamp: float | None = None) -> DriftReport | None:
        """Add one raw score; return a report only when a check detects drift.

        NaN/Inf scores are not added (they would poison the tests) but counted in
        ``skipped_nonfinite`` and in every report; the runtime reports them as errors.
        """
        if not self.cfg.enabled:
            return None
        if not math.isfinite(score):
            self.skipped_nonfinite += 1
            return None
        self._scores.append(float(score))
        self._times.append(time.time() if timestamp is None else float(timestamp))
        self._since_check += 1
        if len(self._scores) < self.cfg.window or self._since_check < self.cfg.check_every:
            return None
        report = self.check()
        return report if report.drifted else None

    def check(self) -> DriftReport:
        """Run both tests on the current window now (needs at least 2 scores)."""
        if len(self._scores) < 2:
            raise ValueError("drift check needs at least 2 scores in the window")
        self._since_check = 0
        cal = self.calibration
        window = np.fromiter(self._scores, dtype=np.float64)
        crossings = int(np.count_nonzero(is_anomalous(window, cal.threshold)))
        binomial_p = crossing_test(crossings, window.size, cal.expected_far)
        ks_stat, ks_p = ks_test(window, cal)
        alpha = self.cfg.p_value
        reasons = [
            name for name, p in (("alarm_rate", binomial_p), ("distribution", ks_p)) if p < alpha
        ]
        median = float(np.median(window))
        report = DriftReport(
            drifted=bool(reasons),
            reasons=reasons,
            model_id=cal.model_id,
            window=int(window.size),
            window_start_utc=_utc(self._times[0]),
            window_end_utc=_utc(self._times[-1]),
            checked_utc=_utc(time.time()),
            threshold=cal.threshold,
            crossings=crossings,
            crossing_rate=crossings / window.size,
            expected_far=cal.expected_far,
            binomial_p=binomial_p,
            ks_statistic=ks_stat,
            ks_p=ks_p,
            reference_n=cal.distribution.n,
            window_median=median,
            reference_median=cal.distribution.isf(0.5),
            window_median_normalised=cal.normalise(median),
            significance=alpha,
            skipped_nonfinite=self.skipped_nonfinite,
        )
        self.last_report = report
        return report

    def reset(self) -> None:
        """Forget the window, e.g. after recalibration or a product change."""
        self._scores.clear()
        self._times.clear()
        self._since_check = 0
