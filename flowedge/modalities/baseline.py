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
class BaselineBounds:
    """How far a baseline may lie from the training statistics before it is refused."""

    max_shift: float = 3.0  # |new mean - training mean| in training standard deviations
    max_scale: float = 3.0  # the new spread at most this factor above or below training's


def check_baseline(
    names: Sequence[str],
    mean: Sequence[float],
    std: Sequence[float],
    trained_mean: Sequence[float],
    trained_std: Sequence[float],
    bounds: BaselineBounds,
    what: str,
) -> None:
    """BaselineRefused naming each channel whose level or spread moved past ``bounds``."""
    shift = np.abs(np.asarray(mean) - np.asarray(trained_mean)) / np.asarray(trained_std)
    scale = np.asarray(std) / np.asarray(trained_std)
    problems = []
    for name, moved, ratio in zip(names, shift, scale, strict=True):
        if moved > bounds.max_shift:
            problems.append(f"{name} level moved {moved:.1f} training std")
        if not 1.0 / bounds.max_scale <= ratio <= bounds.max_scale:
            problems.append(f"{name} spread x{ratio:.3g} of training's")
    if problems:
        shown = "; ".join(problems[:5]) + (
            f"; {len(problems) - 5} more" if len(problems) > 5 else ""
        )
        raise BaselineRefused(
            f"{what} lies outside what training saw ({shown}; allowed: level within "
            f"{bounds.max_shift:g} std, spread within x{1 / bounds.max_scale:.3g}..x"
            f"{bounds.max_scale:g}); the line may have changed over into a broken state: "
            "inspect it; the model's own standardisation stays in force"
        )


def require_samples(count: int, what: str) -> None:
    if count < MIN_SAMPLES:
        raise BaselineRefused(f"{what}: {count} usable sample(s); a baseline needs {MIN_SAMPLES}")
