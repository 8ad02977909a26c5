"""Re-baselining: a changeover's first samples re-estimate the model's input standardisation.

When normal changes with the operating point (a recipe, a setpoint), the model's weights
can stay while the statistics its inputs are standardised with follow the line: each
modality that supports it estimates them from the first samples after the changeover
(:meth:`flowedge.modalities.base.Modality.rebaseline`). A baseline that lies far outside
what training saw is refused, so a changeover into a broken state (a dead sensor, a wrong
unit, a machine that never came up) does not become the new normal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MIN_SAMPLES = 2  # a spread needs two samples


class BaselineRefused(ValueError):
    """The samples of a baseline are not a plausible normal to standardise with."""


@dataclass(frozen=True)
class BaselineRules:
    """What a baseline re-estimates and how far it may lie from the training statistics."""

    max_shift: float = 3.0  # |new mean - training mean| in training standard deviations
    # the new spread at most this factor above or below training's: a short window of one run
    # spreads less than training over many (a slow signal, offsets between runs); a dead
    # sensor or a wrong unit is off by orders of magnitude
    max_scale: float = 10.0
    # False: the level (mean) only, the training spread stays: for slow signals (temperatures)
    # whose spread the few samples of a baseline cannot show
    spread: bool = True


def baseline_statistics(
    names: Sequence[str],
    mean: np.ndarray,
    std: np.ndarray,
    trained_mean: Sequence[float],
    trained_std: Sequence[float],
    rules: BaselineRules,
    what: str,
) -> tuple[np.ndarray, np.ndarray]:
    """The (mean, std) to standardise with: the baseline's (its std only with
    ``rules.spread``); BaselineRefused naming each channel whose level, or spread when it is
    re-estimated, moved past ``rules``."""
    trained_std_ = np.asarray(trained_std, dtype=np.float64)
    shift = np.abs(mean - np.asarray(trained_mean)) / trained_std_
    scale = std / trained_std_ if rules.spread else np.ones_like(shift)
    problems = []
    for name, moved, ratio in zip(names, shift, scale, strict=True):
        if moved > rules.max_shift:
            problems.append(f"{name} level moved {moved:.1f} training std")
        if not 1.0 / rules.max_scale <= ratio <= rules.max_scale:
            problems.append(f"{name} spread x{ratio:.3g} of training's")
    if problems:
        shown = "; ".join(problems[:5]) + (
            f"; {len(problems) - 5} more" if len(problems) > 5 else ""
        )
        raise BaselineRefused(
            f"{what} lies outside what training saw ({shown}; allowed: level within "
            f"{rules.max_shift:g} std, spread within x{1 / rules.max_scale:.3g}..x"
            f"{rules.max_scale:g}); the line may have changed over into a broken state: "
            "inspect it; the model's own standardisation stays in force"
        )
    return mean, (std if rules.spread else trained_std_)


def require_samples(count: int, what: str) -> None:
    if count < MIN_SAMPLES:
        raise BaselineRefused(f"{what}: {count} usable sample(s); a baseline needs {MIN_SAMPLES}")
