"""The calibrated distribution of normal scores: one survival function for thresholds,
normalisation and drift, so all three agree exactly.

``S(s)`` is the probability that a fresh *normal* sample scores above ``s``:

* inside the calibration sample: the order statistics at Weibull plotting positions,
  ``S(x_(i)) = (n + 1 - i) / (n + 1)`` (the exact expected tail probability of the i-th
  order statistic), interpolated linearly in ``log S`` between them;
* above the largest sample: the fitted generalized Pareto tail (:mod:`calibration.tail`)
  conditioned on exceeding the maximum, ``S(s) = S(x_(n)) * G(s) / G(x_(n))``; without a
  fitted tail, an exponential decay with the mean excess of the top decile (used only to
  keep the normalisation finite and monotone, never to pick a threshold);
* below the smallest sample: ``1 - (1 - S(x_(1))) * exp((s - x_(1)) / std)``.

numpy and scipy only: the station uses it without torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from flowedge.calibration.tail import GPDTail, fit_gpd_tail
from flowedge.core.errors import DataError

# The largest normalised score: -log10 of a tail probability of 1e-15, beyond anything a
# calibration sample can support; keeps +inf scores and bounded GPD tails finite.
NORMALISED_MAX = 15.0
# Calibration samples larger than this are stored as a quantile table (the top
# TABLE_TOP order statistics exactly, the body at evenly spaced positions).
TABLE_MAX = 10_000
TABLE_TOP = 1_000


def check_scores(scores: np.ndarray | list[float], what: str) -> np.ndarray:
    """Return the scores as a float64 vector, refusing NaN/Inf with a clear message."""
    values = np.asarray(scores, dtype=np.float64).ravel()
    bad = ~np.isfinite(values)
    if bad.any():
        raise DataError(
            f"{what}: {int(bad.sum())} of {values.size} scores are NaN or infinite "
            f"(first at index {int(np.flatnonzero(bad)[0])}); the model or its input is broken: "
            "check the images and re-export or retrain the model before calibrating"
        )
    return values


@dataclass(frozen=True)
class ScoreDistribution:
    """Survival table of the normal scores plus the optional fitted tail."""

    scores: np.ndarray  # strictly increasing table scores
    log_sf: np.ndarray  # natural log of S at those scores, strictly decreasing
    n: int  # size of the calibration sample the table came from
    mean: float
    std: float
    tail: GPDTail | None = None

    # ------------------------------------------------------------------ building
    @classmethod
    def from_sample(
        cls,
        sample: np.ndarray | list[float],
        tail_fraction: float = 0.1,
        min_exceedances: int = 30,
    ) -> ScoreDistribution:
        values = np.sort(check_scores(sample, "calibration sample"))
        if values.size < 2:
            raise DataError(f"calibration sample has {values.size} score(s); need at least 2")
        n = values.size
        survival = (n - np.arange(n, dtype=np.float64)) / (n + 1.0)  # S(x_(i)), i = 1..n
        keep = table_positions(n)
        scores, log_sf = _dedupe(values[keep], np.log(survival[keep]))
        if scores.size < 2:
            raise DataError(
                f"all {n} calibration scores are equal ({values[0]:.6g}): the model's output is "
                "constant, so no threshold can separate anything; check the model and the images"
            )
        tail = fit_gpd_tail(values, tail_fraction, min_exceedances)
        return cls(scores, log_sf, n, float(values.mean()), float(values.std(ddof=1)), tail)

    # ---------------------------------------------------------------- evaluating
    @property
    def min_sf(self) -> float:
        """The smallest tail probability the sample itself supports: 1/(n+1)."""
        return float(math.exp(self.log_sf[-1]))

    def _scale(self) -> float:
        return self.std if self.std > 0 else 1.0

    def _tail_log_sf(self, s: np.ndarray) -> np.ndarray:
        top = self.scores[-1]
        if self.tail is not None:
            return self.log_sf[-1] + self.tail.log_sf(s) - self.tail.log_sf(np.array([top]))[0]
        return self.log_sf[-1] - (s - top) / self._exp_scale()

    def _exp_scale(self) -> float:
        k = max(2, self.scores.size // 10)
        top = self.scores[-k:]
        excess = float(np.mean(top - top[0]))
        return excess if excess > 0 else self._scale()

    def log_sf_of(self, score: np.ndarray | float) -> np.ndarray:
        """Natural log of S at each score (NaN stays NaN)."""
        s = np.atleast_1d(np.asarray(score, dtype=np.float64))
        out = np.interp(s, self.scores, self.log_sf)
        low, high = s < self.scores[0], s > self.scores[-1]
        if low.any():
            p1 = math.exp(self.log_sf[0])
            out[low] = np.log1p(-(1.0 - p1) * np.exp((s[low] - self.scores[0]) / self._scale()))
        if high.any():
            out[high] = self._tail_log_sf(s[high])
        out[np.isnan(s)] = np.nan
        return out

    def sf(self, score: np.ndarray | float) -> np.ndarray:
        return np.exp(self.log_sf_of(score))

    def normalise(self, score: np.ndarray | float) -> np.ndarray:
        """``-log10 S(score)`` clipped to [0, NORMALISED_MAX]; monotone in the score."""
        value = -self.log_sf_of(score) / math.log(10.0)
        return np.clip(value, 0.0, NORMALISED_MAX)

    def isf(self, probability: float) -> float:
        """The score whose tail probability is ``probability`` (inverse of :meth:`sf`)."""
        if not 0.0 < probability < 1.0:
            raise ValueError(f"tail probability must be in (0, 1), got {probability}")
        logp = math.log(probability)
        if logp > self.log_sf[0]:
            p1 = math.exp(self.log_sf[0])
            return float(self.scores[0] + self._scale() * math.log((1 - probability) / (1 - p1)))
        if logp >= self.log_sf[-1] - 1e-9:  # within the sample, despite rounding
            return float(np.interp(logp, self.log_sf[::-1], self.scores[::-1]))
        if self.tail is None:
            return float(self.scores[-1] + (self.log_sf[-1] - logp) * self._exp_scale())
        top = float(self.scores[-1])
        target = logp - self.log_sf[-1] + float(self.tail.log_sf(np.array([top]))[0])
        return self.tail.isf_log(target)

    # ---------------------------------------------------------------- summaries
    def quantiles(self, levels: tuple[float, ...] = (0.5, 0.9, 0.95, 0.99, 0.999)) -> dict:
        """Score at each lower-tail level q (so S = 1 - q), as stored in the file for people."""
        return {f"{q:g}": self.isf(1.0 - q) for q in levels}

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "mean": self.mean,
            "std": self.std,
            "min": float(self.scores[0]),
            "max": float(self.scores[-1]),
            "quantiles": self.quantiles(),
            "table": {"score": self.scores.tolist(), "log_sf": self.log_sf.tolist()},
            "tail": None if self.tail is None else self.tail.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoreDistribution:
        table = data["table"]
        scores = np.asarray(table["score"], dtype=np.float64)
        log_sf = np.asarray(table["log_sf"], dtype=np.float64)
        if scores.size < 2 or scores.shape != log_sf.shape or not np.all(np.diff(scores) > 0):
            raise ValueError("score table must hold >= 2 strictly increasing scores")
        if not np.all(np.diff(log_sf) < 0) or log_sf[0] >= 0:
            raise ValueError("survival table must be strictly decreasing and below 1")
        tail = None if data.get("tail") is None else GPDTail.from_dict(data["tail"])
        return cls(scores, log_sf, int(data["n"]), float(data["mean"]), float(data["std"]), tail)


def table_positions(n: int) -> np.ndarray:
    """Indices of the order statistics kept in the file: all of them, or top + spaced body."""
    if n <= TABLE_MAX:
        return np.arange(n)
    body = np.linspace(0, n - TABLE_TOP - 1, TABLE_MAX - TABLE_TOP).round().astype(int)
    return np.unique(np.concatenate([body, np.arange(n - TABLE_TOP, n)]))


def _dedupe(scores: np.ndarray, log_sf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tied scores keep the smallest S (the fraction strictly above the tie)."""
    last = np.r_[np.diff(scores) > 0, True]
    return scores[last], log_sf[last]
