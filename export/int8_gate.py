"""The accuracy gate every INT8 model must pass: AUROC and decisions as in fp32.

Post-training quantisation moves every score a little; what matters on the line is
whether anomalies still rank above normal parts and whether a part's decision at the
threshold changes. So an INT8 model is accepted only when, on a labelled validation
split (normal and defect samples the quantiser never saw),

* its image AUROC is at most ``max_auroc_drop`` (default 0.005) below the fp32 model's, and
* at most ``max_flip_rate`` (default 1 %) of the validation samples change decision
  against the fp32 model's at the calibration threshold (for a model exported without
  ``--calibration``: at each of parity's quantile thresholds, the worst one counting).

Otherwise it is refused with these numbers (exit 4). Pure numpy: the bench and
``flowedge export`` share it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from flowedge.core.decision import is_anomalous
from flowedge.core.errors import ModelMismatchError
from flowedge.core.metrics import auroc
from flowedge.export.parity import quantile_thresholds


@dataclass(frozen=True)
class Int8Bounds:
    max_auroc_drop: float = 0.005
    max_flip_rate: float = 0.01

    def max_flips(self, n_samples: int) -> int:
        return math.floor(self.max_flip_rate * n_samples + 1e-9)


@dataclass(frozen=True)
class Int8Request:
    """What ``--int8`` asks for: the validation split, the quantiser's samples, the bounds."""

    validation: Path  # labelled: good/ beside defect folders (MVTec test layout)
    samples: Path | None = None  # normal samples for the quantiser; None: the training data
    count: int = 32  # normal samples the quantiser sees, picked across the folder
    bounds: Int8Bounds = field(default_factory=Int8Bounds)


@dataclass
class Int8Report:
    n_samples: int
    n_anomalous: int
    auroc_fp32: float
    auroc_int8: float
    flips: int  # at the worst threshold
    max_flips: int
    thresholds: list[float]
    threshold_source: str  # "calibration" or "quantiles"
    max_auroc_drop: float

    @property
    def auroc_drop(self) -> float:
        return self.auroc_fp32 - self.auroc_int8

    @property
    def passed(self) -> bool:
        return self.auroc_drop <= self.max_auroc_drop + 1e-12 and self.flips <= self.max_flips

    def summary(self) -> str:
        return (
            f"INT8 on {self.n_samples} validation samples ({self.n_anomalous} anomalous): "
            f"AUROC {self.auroc_fp32:.4f} fp32 -> {self.auroc_int8:.4f} INT8 (drop "
            f"{self.auroc_drop:+.4f}, bound {self.max_auroc_drop}), {self.flips} decision flip(s) "
            f"at the {self.threshold_source} threshold(s) (bound {self.max_flips})"
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "auroc_drop": self.auroc_drop, "passed": self.passed}


def decision_flips(
    ref: np.ndarray, got: np.ndarray, threshold: float, higher_is_anomalous: bool = True
) -> int:
    """Samples whose decision (the station's rule) differs between the two score arrays."""
    sign = 1.0 if higher_is_anomalous else -1.0
    before = is_anomalous(sign * ref, sign * threshold)
    after = is_anomalous(sign * got, sign * threshold)
    return int(np.count_nonzero(before != after))


def int8_report(
    labels: np.ndarray,
    fp32_scores: np.ndarray,
    int8_scores: np.ndarray,
    threshold: float | None,
    bounds: Int8Bounds = Int8Bounds(),
    higher_is_anomalous: bool = True,
) -> Int8Report:
    """Compare the INT8 model's validation scores with the fp32 model's (module docstring)."""
    labels = np.asarray(labels).astype(bool)
    ref = np.asarray(fp32_scores, dtype=np.float64)
    got = np.asarray(int8_scores, dtype=np.float64)
    thresholds = [threshold] if threshold is not None else quantile_thresholds(ref)
    sign = 1.0 if higher_is_anomalous else -1.0
    finite = bool(np.isfinite(got).all())  # a non-finite score: AUROC 0, refused
    return Int8Report(
        n_samples=len(labels),
        n_anomalous=int(labels.sum()),
        auroc_fp32=auroc(labels, sign * ref),
        auroc_int8=auroc(labels, sign * got) if finite else 0.0,
        flips=max(decision_flips(ref, got, t, higher_is_anomalous) for t in thresholds),
        max_flips=bounds.max_flips(len(labels)),
        thresholds=[float(t) for t in thresholds],
        threshold_source="calibration" if threshold is not None else "quantiles",
        max_auroc_drop=bounds.max_auroc_drop,
    )


def require_passed(report: Int8Report, target: str) -> None:
    """Refuse (exit 4) an INT8 model outside the bounds, with its numbers and what to do."""
    if report.passed:
        return
    raise ModelMismatchError(
        f"INT8 model refused, {target} not written: {report.summary()}. Keep the fp32 model "
        "(export without --int8), or calibrate the quantiser on more, representative normal "
        "samples (--int8-samples); widen --max-auroc-drop / --max-flip-rate only if the "
        "line accepts that loss"
    )
