"""Parity check built into every export: the graph must score like PyTorch.

Tolerance (stated, relative): for every sample, ``|s_graph - s_torch| /
max(|s_torch|, 1e-6) <= rtol`` with rtol = 1e-3 for fp32 graphs and 1e-2 for
fp16-safe graphs; maps: ``max|m_graph - m_torch| / max|m_torch| <= map_rtol``
(1e-3 / 3e-2). And no decision (score > threshold, as in calibration) may flip
at the calibrated threshold; for an uncalibrated model, at the 10/25/50/75/90 %
quantiles of the reference scores
(midpoints between the two neighbouring reference scores), no decision may flip
for a sample farther than the score tolerance from the threshold (closer ones
are within the stated error by definition and are reported as borderline).
ONNX Runtime's CPU provider runs most fp16 nodes through fp32 kernels and drops
the casts between them, so it cannot show fp16 rounding or overflow; fp16
graphs are therefore also run on a few samples with ONNX's reference evaluator
(numpy, true fp16 arithmetic), as a GPU would. Samples go through the real
preprocessing of the card's modality, read as evaluation reads them (a log with the
card's format, cut into cycles): user files when given; else normal samples from the
card's training data when that folder is still on this machine (the real sensor's
range), else the modality's synthetic normal samples; then as many synthetic
anomalies (for images: the demo dataset's defects), so the high scores are checked
too. The graph runs at batch sizes 1 and 3 to prove the dynamic batch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from flowedge.core.card import InputSpec, ModelCard
from flowedge.core.errors import BadInputError, ConfigError, DataError
from flowedge.modalities import get_modality
from flowedge.modalities.batches import load_batches

log = logging.getLogger(__name__)

TOLERANCES = {"fp32": (1e-3, 1e-3), "fp16": (1e-2, 3e-2)}  # precision -> (score rtol, map rtol)
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


@dataclass
class ParityReport:
    precision: str
    n_samples: int
    score_rtol: float
    map_rtol: float
    max_score_rel_err: float
    max_map_rel_err: float
    thresholds: list[float]
    threshold_source: str  # "calibration" or "quantiles"
    flips: list[dict[str, float]] = field(default_factory=list)
    borderline: list[dict[str, float]] = field(default_factory=list)
    nonfinite: int = 0

    @property
    def passed(self) -> bool:
        return (
            self.nonfinite == 0
            and not self.flips
            and self.max_score_rel_err <= self.score_rtol
            and self.max_map_rel_err <= self.map_rtol
        )

    def summary(self) -> str:
        return (
            f"{self.precision} parity on {self.n_samples} samples: score rel err "
            f"{self.max_score_rel_err:.2e} (tol {self.score_rtol:.0e}), map rel err "
            f"{self.max_map_rel_err:.2e} (tol {self.map_rtol:.0e}), {len(self.flips)} decision flip(s) "
            f"at {len(self.thresholds)} {self.threshold_source} threshold(s) "
            f"({len(self.borderline)} borderline), "
            f"{self.nonfinite} non-finite score(s)"
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def synthetic_samples(
    spec: InputSpec, n_normal: int = 6, n_anomalous: int = 6, seed: int = 0
) -> np.ndarray:
    """Preprocessed [N, *tensor_shape] batch from the modality's generator: normal, then anomalous."""
    return get_modality(spec.kind).synthetic_batch(spec, n_normal, n_anomalous, seed)


def _skip(path: Path, error: BadInputError) -> None:
    log.warning("parity samples: skipping %s", error)


def spread_samples(files: Sequence[Path], card: ModelCard, limit: int) -> np.ndarray | None:
    """Up to ``limit`` samples of ``files``, picked across the list (good and defect subfolders
    alike) and read as evaluation reads them; None when none is usable."""
    modality = get_modality(card.input.kind)
    step = max(1, len(files) // limit)
    load = partial(modality.load_all, spec=card.input, limits=modality.reading(card))
    batch = next(load_batches(files[::step][:limit], load, limit, _skip), None)
    return None if batch is None else batch[1]


def folder_samples(folder: Path, card: ModelCard, limit: int = 16) -> np.ndarray:
    """Preprocessed batch of up to ``limit`` samples found (recursively, sorted) in ``folder``."""
    if not folder.is_dir():
        raise ConfigError(f"--samples {folder} is not a directory; give a folder of samples")
    modality = get_modality(card.input.kind)
    batch = spread_samples(modality.list_files(folder, recursive=True), card, limit)
    if batch is None:
        raise DataError(
            f"sample folder {folder}: no usable {card.input.kind} files "
            f"({', '.join(sorted(modality.extensions))}); give a folder of samples"
        )
    return batch


def training_normals(card: ModelCard, limit: int) -> np.ndarray | None:
    """Up to ``limit`` of the card's training samples, when its training folder is still on
    this machine and holds usable ones; else None."""
    from flowedge.flows.data.datasets import training_samples  # the training folder's layout

    root = card.training.get("data", {}).get("root")
    if not root or not Path(root).is_dir():
        return None
    try:
        files = [sample.path for sample in training_samples(root, card.input.kind)]
    except DataError:
        return None
    batch = spread_samples(files, card, limit)
    if batch is not None:
        log.info("parity samples: %d normal from the training data in %s", len(batch), root)
    return batch


def parity_samples(card: ModelCard, folder: Path | None = None, n_normal: int = 6) -> np.ndarray:
    """The samples export checks the graph on (see the module docstring): ``folder``'s; else
    normal ones (training data, else synthetic) followed by as many synthetic anomalies."""
    if folder is not None:
        return folder_samples(folder, card)
    normal = training_normals(card, n_normal)
    if normal is None:
        log.info(
            "parity samples: synthetic (the training data of %s is not on this machine)",
            card.model_id,
        )
        return synthetic_samples(card.input, n_normal, n_normal)
    return np.concatenate([normal, synthetic_samples(card.input, 0, len(normal))])


def run_in_batches(
    infer, batch: np.ndarray, sizes: Sequence[int] = (1, 3)
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``infer`` over ``batch`` in chunks whose sizes cycle through ``sizes``."""
    scores, maps, start, i = [], [], 0, 0
    while start < len(batch):
        size = sizes[i % len(sizes)]
        score, amap = infer(batch[start : start + size])
        scores.append(score)
        maps.append(amap)
        start, i = start + size, i + 1
    return np.concatenate(scores), np.concatenate(maps)


def fp16_faithful_infer(path: Path):
    """An ``infer`` that evaluates the graph with true fp16 arithmetic (slow: a few samples)."""
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(str(path))

    def infer(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(over="ignore", invalid="ignore"):
            score, amap = evaluator.run(["score", "map"], {"input": batch.astype(np.float32)})
        return np.asarray(score, dtype=np.float32), np.asarray(amap, dtype=np.float32)

    return infer


def quantile_thresholds(reference: np.ndarray) -> list[float]:
    """Thresholds at the QUANTILES of the reference scores, each moved to the midpoint between
    the two reference scores around it, so no threshold sits on top of a sample by accident."""
    ordered = np.sort(reference.astype(np.float64))
    if len(ordered) < 2:
        return [float(t) for t in ordered]
    picks = sorted({min(int(q * (len(ordered) - 1)), len(ordered) - 2) for q in QUANTILES})
    return [float((ordered[i] + ordered[i + 1]) / 2) for i in picks]


def compare(
    ref: tuple[np.ndarray, np.ndarray],
    got: tuple[np.ndarray, np.ndarray],
    precision: str,
    threshold: float | None = None,
    higher_is_anomalous: bool = True,
    score_rtol: float | None = None,
) -> ParityReport:
    """Compare graph outputs with the reference; see the module docstring for the rule."""
    ref_s, ref_m = (np.asarray(a, dtype=np.float64) for a in ref)
    got_s, got_m = (np.asarray(a, dtype=np.float64) for a in got)
    default_rtol, map_rtol = TOLERANCES["fp16" if precision.startswith("fp16") else "fp32"]
    rtol = default_rtol if score_rtol is None else score_rtol
    finite = np.isfinite(got_s)
    with np.errstate(invalid="ignore", over="ignore"):
        score_err = np.abs(got_s - ref_s) / np.maximum(np.abs(ref_s), 1e-6)
        map_err = np.max(np.abs(got_m - ref_m)) / max(float(np.max(np.abs(ref_m))), 1e-6)
    thresholds = [threshold] if threshold is not None else quantile_thresholds(ref_s)
    flips, borderline = [], []
    for t in thresholds:
        ref_dec = ref_s > t if higher_is_anomalous else ref_s < t
        got_dec = got_s > t if higher_is_anomalous else got_s < t
        for idx in np.flatnonzero(ref_dec != got_dec):
            near = threshold is None and abs(ref_s[idx] - t) <= rtol * max(abs(ref_s[idx]), 1e-6)
            (borderline if near else flips).append(
                {
                    "sample": int(idx),
                    "threshold": t,
                    "reference": float(ref_s[idx]),
                    "graph": float(got_s[idx]),
                }
            )
    return ParityReport(
        precision=precision,
        n_samples=len(ref_s),
        score_rtol=rtol,
        map_rtol=map_rtol,
        max_score_rel_err=float(np.nanmax(np.where(finite, score_err, np.inf))),
        max_map_rel_err=float(map_err) if np.isfinite(map_err) else float("inf"),
        thresholds=thresholds,
        threshold_source="calibration" if threshold is not None else "quantiles",
        flips=flips,
        borderline=borderline,
        nonfinite=int((~finite).sum()),
    )
