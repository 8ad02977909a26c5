"""What a robot cycle's decision says beyond the score: when and which signals drove it.

From the anomaly map [signals, steps] the station already has: the time ranges
with the most map mass (per-step sum over signals; for MTS-Flow graphs the exact
per-step share of the NLL) and the signals with the most mass. An MTS-Flow graph's
map is spread evenly over signals (see flows.detectors.mtsflow), so for its
anomalous cycles the signals come from occlusion (:func:`occlusion_drops`: the score
drop when a signal is set to its training mean); its normal cycles name none rather
than a made-up ranking.

Occlusion uses forward passes only, since an exported graph cannot backpropagate: the
station's model scores a batch holding the cycle S times, copy i with signal i replaced
by its training mean (0 after the per-signal standardisation, which is also the padding
value); the score drop of copy i is how much of the anomaly signal i carries. It costs S
extra cycles of inference per anomalous cycle (docs/robot.md measures it), nothing for
normal cycles.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flowedge.core.card import SeriesInput
from flowedge.modalities.base import ScoreBatch

TOP_RANGES = 3
TOP_SIGNALS = 3
RANGE_FRACTION = 0.05  # a reported range is this share of the model length around a peak


def top_time_ranges(profile: np.ndarray, start_s: float, rate_hz: float) -> list[dict[str, float]]:
    """Up to TOP_RANGES non-overlapping ranges around the profile's highest peaks."""
    remaining = np.asarray(profile, dtype=np.float64).copy()
    half = max(1, round(RANGE_FRACTION * len(remaining) / 2))
    ranges = []
    for _ in range(TOP_RANGES):
        if not np.isfinite(remaining).any() or np.nanmax(remaining) == -np.inf:
            break
        peak = int(np.nanargmax(remaining))
        lo, hi = max(0, peak - half), min(len(remaining), peak + half + 1)
        share = float(np.nansum(profile[lo:hi]))
        ranges.append(
            {"start_s": start_s + lo / rate_hz, "end_s": start_s + hi / rate_hz, "map_sum": share}
        )
        remaining[lo:hi] = -np.inf
    return ranges


def names_signals(amap: np.ndarray) -> bool:
    """Whether the map tells signals apart (an MTS-Flow graph's does not)."""
    mass = np.nansum(np.asarray(amap, dtype=np.float64), axis=1)
    return not np.allclose(mass, mass.mean(), rtol=1e-4)


def occlusion_drops(
    score_batch: ScoreBatch, cycle: np.ndarray, score: float, max_batch: int
) -> np.ndarray:
    """Score drop per signal [S] when that signal is set to its training mean (0).

    ``cycle`` is the preprocessed tensor [S, T] that scored ``score``; ``score_batch`` scores
    batches of at most ``max_batch`` cycles. A positive drop means the signal drove it.
    """
    signals = cycle.shape[0]
    drops = np.empty(signals, dtype=np.float64)
    for lo in range(0, signals, max_batch):
        chosen = np.arange(lo, min(signals, lo + max_batch))
        batch = np.repeat(cycle[None], len(chosen), axis=0)
        batch[np.arange(len(chosen)), chosen] = 0.0
        drops[chosen] = score - np.asarray(score_batch(batch), dtype=np.float64)
    return drops


def explain_cycle(
    cycle: np.ndarray,
    amap: np.ndarray,
    score: float,
    score_batch: ScoreBatch,
    max_batch: int,
) -> np.ndarray | None:
    """The occlusion drops of an anomalous cycle whose map cannot name signals; None when
    the map names them itself (nothing to measure)."""
    if names_signals(amap):
        return None
    return occlusion_drops(score_batch, cycle, score, max_batch)


def top_signals(
    amap: np.ndarray, drops: np.ndarray | None, signals: tuple[str, ...]
) -> list[dict[str, Any]]:
    """The signals whose occlusion lowers the score most (when measured), else those with
    the most map mass; none when neither tells signals apart."""
    if drops is not None:
        order = np.argsort(-drops, kind="stable")[:TOP_SIGNALS]
        return [
            {"signal": signals[i], "score_drop": float(drops[i])} for i in order if drops[i] > 0
        ]
    if not names_signals(amap):
        return []
    mass = np.nansum(amap, axis=1)
    order = np.argsort(-mass, kind="stable")[:TOP_SIGNALS]
    return [{"signal": signals[i], "map_sum": float(mass[i])} for i in order]


def cycle_report(
    context: dict[str, Any], amap: np.ndarray | None, drops: np.ndarray | None, spec: Any
) -> dict[str, Any]:
    """The ``cycle`` object of a decision: id and time range, plus drivers when scored
    (``drops``: the occlusion score drops per signal, when they were measured)."""
    report = dict(context)
    if amap is None or not isinstance(spec, SeriesInput):
        return report | {"top_signals": [], "top_time_ranges": []}
    values = np.asarray(amap, dtype=np.float64)
    return report | {
        "top_signals": top_signals(values, drops, spec.signals),
        "top_time_ranges": top_time_ranges(
            values.sum(axis=0), float(context.get("start_s", 0.0)), spec.rate_hz
        ),
    }
