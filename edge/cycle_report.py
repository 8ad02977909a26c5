"""What a robot cycle's decision says beyond the score: when and which signals drove it.

From the anomaly map [signals, steps] the station already has: the time ranges
with the most map mass (per-step sum over signals; for MTS-Flow graphs the exact
per-step share of the NLL) and the signals with the most mass. For MTS-Flow the
graph's map is spread evenly over signals (see flows.detectors.mtsflow), so its
signal ranking is flat and ``top_signals`` is left empty rather than made up.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from flowedge.core.card import SeriesInput

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


def top_signals(amap: np.ndarray, signals: tuple[str, ...]) -> list[dict[str, Any]]:
    """The signals with the most map mass; none when the map does not tell signals apart."""
    mass = np.nansum(amap, axis=1)
    if np.allclose(mass, mass.mean(), rtol=1e-4):
        return []
    order = np.argsort(-mass, kind="stable")[:TOP_SIGNALS]
    return [{"signal": signals[i], "map_sum": float(mass[i])} for i in order]


def cycle_report(context: dict[str, Any], amap: np.ndarray | None, spec: Any) -> dict[str, Any]:
    """The ``cycle`` object of a decision: id and time range, plus drivers when scored."""
    report = dict(context)
    if amap is None or not isinstance(spec, SeriesInput):
        return report | {"top_signals": [], "top_time_ranges": []}
    values = np.asarray(amap, dtype=np.float64)
    return report | {
        "top_signals": top_signals(values, spec.signals),
        "top_time_ranges": top_time_ranges(
            values.sum(axis=0), float(context.get("start_s", 0.0)), spec.rate_hz
        ),
    }
