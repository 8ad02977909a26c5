"""One cycle -> the model's (signals, steps) tensor, with the repair rules for imperfect logs.

Order: pick the card's signals -> check the time stamps -> repair short NaN gaps ->
resample to the model rate (anti-aliased) -> standardise with the training
statistics -> pad or crop to the model length.

Rules (a rejected cycle is a :class:`BadInputError` naming the cycle; the station
answers it ERROR and publishes an event, training skips it):

* a signal the model needs is missing: rejected (the logger must write it);
* time stamps that repeat or go backwards: rejected (sort the log, fix the clock);
* a sampling interval more than ``GAP_FACTOR`` times longer or shorter than the
  cycle's median interval (a stalled logger, a rate change inside the cycle):
  rejected; a rate change *between* cycles is absorbed by resampling each cycle
  from its own rate;
* NaN: runs of up to ``MAX_REPAIR_ROWS`` rows are interpolated linearly from their
  neighbours (dropped fieldbus telegrams); longer runs, or a signal that is NaN
  throughout, reject the cycle;
* length: cycles are padded at the end with zeros in standardised units (the
  training mean, as the voraus-AD code does) or cropped at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from fractions import Fraction

import numpy as np
from scipy.signal import resample_poly

from flowedge.core.card import SeriesInput
from flowedge.core.errors import BadInputError
from flowedge.modalities.baseline import BaselineRules, baseline_statistics, require_samples
from flowedge.modalities.series_io import SignalTable

GAP_FACTOR = 3.0
MAX_REPAIR_ROWS = 2
RATE_TOLERANCE = 0.01  # source and model rates this close: interpolate only, no filter
_MAX_RATIO_TERMS = 64  # rational approximation of the rate ratio for the polyphase filter
_FLAT_STD = 1e-8  # a constant training signal keeps unit scale (as sklearn's StandardScaler)


def signal_matrix(cycle: SignalTable, signals: tuple[str, ...]) -> np.ndarray:
    """The named signals as float64 [S, N]; BadInputError naming the missing ones."""
    missing = [s for s in signals if s not in cycle.columns]
    if missing:
        raise BadInputError(
            f"cycle {cycle.name}: signal(s) {', '.join(missing)} missing; the model needs "
            "them: make the logger write them, or train a model on the signals it writes"
        )
    return np.stack([np.asarray(cycle.columns[s], dtype=np.float64) for s in signals])


def check_times(cycle: SignalTable) -> tuple[np.ndarray, float]:
    """The cycle's time stamps and its median sampling rate, after the interval rules."""
    times = cycle.times()
    if len(times) < 2:
        raise BadInputError(f"cycle {cycle.name}: {len(times)} row(s); a cycle needs at least 2")
    if not np.isfinite(times).all():
        row = int(np.flatnonzero(~np.isfinite(times))[0])
        raise BadInputError(
            f"cycle {cycle.name}: time stamp missing at row {cycle.first_row + row + 1}; "
            "the logger wrote an incomplete row"
        )
    steps = np.diff(times)
    if (steps <= 0).any():
        row = int(np.flatnonzero(steps <= 0)[0]) + 1
        raise BadInputError(
            f"cycle {cycle.name}: time goes backwards or repeats at row "
            f"{cycle.first_row + row + 1} (t={times[row]:.6g} s after {times[row - 1]:.6g} s); "
            "sort the log by time or fix the logger's clock"
        )
    median = float(np.median(steps))
    odd = np.flatnonzero((steps > GAP_FACTOR * median) | (steps < median / GAP_FACTOR))
    if len(odd):
        at = int(odd[0])
        raise BadInputError(
            f"cycle {cycle.name}: sampling interval {steps[at]:.4g} s at t={times[at]:.6g} s "
            f"against a median of {median:.4g} s (a stalled logger or a rate change inside the "
            f"cycle); the cycle is rejected: fix the logger or its rate"
        )
    return times, 1.0 / median


def repair_nan(values: np.ndarray, cycle: SignalTable, signals: tuple[str, ...]) -> np.ndarray:
    """Interpolate NaN runs of at most MAX_REPAIR_ROWS rows; BadInputError for longer ones."""
    bad = ~np.isfinite(values)
    if not bad.any():
        return values
    repaired = values.copy()
    index = np.arange(values.shape[1])
    for row in np.flatnonzero(bad.any(axis=1)):
        holes = bad[row]
        longest, run = 0, 0
        for hole in holes:
            run = run + 1 if hole else 0
            longest = max(longest, run)
        if longest > MAX_REPAIR_ROWS or holes.all():
            raise BadInputError(
                f"cycle {cycle.name}: signal {signals[row]} has {int(holes.sum())} NaN value(s), "
                f"up to {longest} in a row (only runs of {MAX_REPAIR_ROWS} are repaired); "
                "the cycle is rejected: check the sensor and the logger"
            )
        repaired[row, holes] = np.interp(index[holes], index[~holes], values[row, ~holes])
    return repaired


def resample(
    values: np.ndarray, times: np.ndarray, source_hz: float, target_hz: float
) -> np.ndarray:
    """[S, N] samples at ``times`` -> [S, M] at ``target_hz`` from the first time stamp.

    Jittered stamps are first interpolated onto a uniform grid at the source rate;
    a rate change then goes through a polyphase filter (Kaiser-windowed FIR low-pass
    below the lower rate's Nyquist frequency), so downsampling does not alias.
    """
    duration = float(times[-1] - times[0])
    if abs(source_hz / target_hz - 1.0) <= RATE_TOLERANCE:
        grid = times[0] + np.arange(int(np.floor(duration * target_hz + 1e-9)) + 1) / target_hz
        return np.stack([np.interp(grid, times, row) for row in values])
    uniform = times[0] + np.arange(int(np.floor(duration * source_hz + 1e-9)) + 1) / source_hz
    regular = np.stack([np.interp(uniform, times, row) for row in values])
    ratio = Fraction(target_hz / source_hz).limit_denominator(_MAX_RATIO_TERMS)
    out = resample_poly(regular, ratio.numerator, ratio.denominator, axis=1, padtype="line")
    steps = int(np.floor(duration * target_hz + 1e-9)) + 1
    return out[:, :steps]


def at_model_rate(cycle: SignalTable, spec: SeriesInput) -> np.ndarray:
    """The cycle's signals at the model rate, not yet standardised: [S, N] float64."""
    values = signal_matrix(cycle, spec.signals)
    times, source_hz = check_times(cycle)
    values = repair_nan(values, cycle, spec.signals)
    return resample(values, times, source_hz, spec.rate_hz)


def fit_length(values: np.ndarray, length: int) -> np.ndarray:
    """Pad at the end with zeros (the training mean after standardising) or crop the end."""
    if values.shape[1] >= length:
        return values[:, :length]
    return np.pad(values, ((0, 0), (0, length - values.shape[1])))


def to_tensor(cycle: SignalTable, spec: SeriesInput) -> np.ndarray:
    """One cycle -> float32 [signals, length] as the model was trained on."""
    values = at_model_rate(cycle, spec)
    mean = np.asarray(spec.mean)[:, None]
    std = np.asarray(spec.std)[:, None]
    return fit_length((values - mean) / std, spec.length).astype(np.float32)


def raw_statistics(resampled: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-signal mean and std over all time steps of cycles at the model rate."""
    stacked = np.concatenate(list(resampled), axis=1)
    return stacked.mean(axis=1), stacked.std(axis=1)


def _usable_std(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return np.where(std > _FLAT_STD * np.maximum(1.0, np.abs(mean)), std, 1.0)


def signal_statistics(resampled: Sequence[np.ndarray]) -> tuple[list[float], list[float]]:
    """Per-signal mean and std over all time steps of the training cycles (before padding)."""
    mean, std = raw_statistics(resampled)
    return mean.tolist(), _usable_std(mean, std).tolist()


def rebaselined(
    cycles: Sequence[SignalTable], spec: SeriesInput, rules: BaselineRules
) -> SeriesInput:
    """``spec`` standardising with the per-signal mean (and std, ``rules.spread``) of
    ``cycles`` (a changeover's first cycles); BaselineRefused when a signal lies outside
    ``rules`` around the training statistics (a flat signal whose training was flat too
    passes)."""
    what = f"baseline of {len(cycles)} cycle(s)"
    require_samples(len(cycles), what)
    mean, std = raw_statistics([at_model_rate(cycle, spec) for cycle in cycles])
    usable = _usable_std(mean, std)
    flat = (usable == 1.0) & (np.asarray(spec.std) == 1.0)  # flat in training and now: fine
    mean, std = baseline_statistics(
        spec.signals, mean, np.where(flat, 1.0, std), spec.mean, spec.std, rules, what
    )
    std = _usable_std(mean, std) if rules.spread else std
    return replace(spec, mean=tuple(mean.tolist()), std=tuple(np.asarray(std).tolist()))
