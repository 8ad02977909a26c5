"""Peaks-over-threshold: a generalized Pareto fit to the largest normal scores.

Extreme-value theory says the excesses over a high threshold follow a GPD, so the tail
can be extrapolated somewhat past the largest calibration score; that is what makes a
false-alarm target below 1/N defensible at all (and only with enough exceedances).
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GPDTail:
    """Excesses ``s - u`` over ``u`` are GPD(shape ``xi``, scale ``sigma``)."""

    u: float
    xi: float
    sigma: float
    n_exceed: int

    def log_sf(self, s: np.ndarray) -> np.ndarray:
        """log P(excess > s - u | excess > 0); -inf past a bounded tail's end point."""
        y = np.maximum(np.asarray(s, dtype=np.float64) - self.u, 0.0) / self.sigma
        if abs(self.xi) < 1e-9:
            return -y
        with np.errstate(divide="ignore", invalid="ignore"):
            arg = 1.0 + self.xi * y
            return np.where(arg > 0, -np.log(np.where(arg > 0, arg, 1.0)) / self.xi, -np.inf)

    def isf_log(self, log_q: float) -> float:
        """The score whose conditional log tail probability is ``log_q`` (<= 0)."""
        if abs(self.xi) < 1e-9:
            return self.u - self.sigma * log_q
        return self.u + self.sigma / self.xi * math.expm1(-self.xi * log_q)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GPDTail:
        tail = cls(float(data["u"]), float(data["xi"]), float(data["sigma"]), int(data["n_exceed"]))
        if not (math.isfinite(tail.u) and math.isfinite(tail.xi) and tail.sigma > 0):
            raise ValueError(f"invalid GPD tail {data}")
        return tail


def exceedance_count(n: int, tail_fraction: float) -> int:
    """How many of ``n`` samples lie above the tail threshold."""
    return int(math.floor(n * tail_fraction))


def fit_gpd_tail(
    sorted_scores: np.ndarray, tail_fraction: float, min_exceedances: int
) -> GPDTail | None:
    """Fit a GPD to the top ``tail_fraction`` of the sorted scores; None when unsupported.

    Unsupported: fewer than ``min_exceedances`` exceedances, all excesses equal, or a
    fit that does not converge to finite parameters. The shape is kept >= 0 (see below).
    """
    n = sorted_scores.size
    k = exceedance_count(n, tail_fraction)
    if k < max(min_exceedances, 3) or k >= n:
        return None
    u = float(sorted_scores[n - k - 1])
    excess = sorted_scores[n - k :] - u
    if not np.ptp(excess) > 0:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            xi, _, sigma = stats.genpareto.fit(excess, floc=0.0)
    except (ValueError, RuntimeError, FloatingPointError) as exc:
        log.warning("GPD tail fit failed on %d exceedances: %s", k, exc)
        return None
    if not (math.isfinite(xi) and math.isfinite(sigma) and sigma > 0):
        return None
    if xi < 0:
        # A bounded tail fitted on a few dozen exceedances is more often noise than a real end
        # point, and it would promise fewer false alarms than the line gives: use the
        # exponential tail (xi = 0, maximum likelihood scale = mean excess) instead.
        xi, sigma = 0.0, float(excess.mean())
    return GPDTail(u, float(xi), float(sigma), k)
