"""Readers for MVTec-AD style datasets and plain folders of normal samples.

Samples go through the modality named by the model card (:mod:`flowedge.modalities`,
the one preprocessing), so training, evaluation and the station see identical tensors. A broken file never stops a
run and never disappears silently: it is logged by name, skipped and counted in
a :class:`LoadSummary` that ends up in the model card or the evaluation report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from flowedge.core.card import InputSpec
from flowedge.core.errors import BadInputError, ConfigError, DataError
from flowedge.modalities import get_modality
from flowedge.modalities.batches import load_batches
from flowedge.modalities.image import read_image

log = logging.getLogger(__name__)

GOOD = "good"


@dataclass(frozen=True)
class Sample:
    """One sample file with its label: ``defect`` is ``good`` for normal images."""

    path: Path
    defect: str = GOOD
    mask_path: Path | None = None

    @property
    def label(self) -> int:
        return int(self.defect != GOOD)


@dataclass
class LoadSummary:
    """What a reader used and what it had to skip (and why, in the log)."""

    root: str
    n_ok: int = 0
    n_skipped: int = 0
    skipped: list[str] = field(default_factory=list)

    def skip(self, sample: Sample, error: BadInputError) -> None:
        log.warning("skipping %s", error)
        self.n_skipped += 1
        self.skipped.append(str(sample.path))

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise ConfigError(f"{what} {path} is not a directory; check the path")


def _labelled_layout(folder: Path, paths: list[Path]) -> tuple[Path, list[str]] | None:
    """(the ``good`` folder, the folders beside it) when ``paths`` lie in a labelled layout
    (``good/`` next to ``crack/``, ``scratch/``...), else None."""
    beside: dict[tuple[str, ...], set[str]] = {}
    for path in paths:
        parts = path.relative_to(folder).parts[:-1]
        for depth, name in enumerate(parts):
            beside.setdefault(parts[:depth], set()).add(name)
    for parent, names in sorted(beside.items()):
        if GOOD in names and len(names) > 1:
            return folder.joinpath(*parent, GOOD), sorted(names - {GOOD})
    return None


def training_samples(root: str | Path, kind: str = "image") -> list[Sample]:
    """Normal samples of modality ``kind`` for training: ``root/train/good`` of an MVTec
    category, else every such file under ``root`` (recursive).

    A labelled folder (a ``good`` folder beside defect folders, like MVTec's ``test``) is
    refused rather than trained on whole, defects included, as normal."""
    root = Path(root)
    _require_dir(root, "training data folder")
    mvtec_train = root / "train" / GOOD
    folder, recursive = (mvtec_train, False) if mvtec_train.is_dir() else (root, True)
    modality = get_modality(kind)
    paths = modality.list_files(folder, recursive)
    if any("ground_truth" in p.relative_to(folder).parts for p in paths):
        raise DataError(
            f"{folder} holds ground_truth masks, so it is not a folder of normal images: "
            "give one MVTec category root (with train/good), not the dataset root"
        )
    if not paths:
        raise DataError(
            f"no {kind} files ({', '.join(sorted(modality.extensions))}) found in {folder}; "
            "give an MVTec category root (with train/good) or a folder of normal samples"
        )
    labelled = _labelled_layout(folder, paths)
    if labelled is not None:
        good, others = labelled
        raise DataError(
            f"{folder} is a labelled set: {good} holds normal samples, and "
            f"{', '.join(others)} beside it hold defects, which training would learn as normal; "
            f"point flowedge train at {good}, at an MVTec category root (with train/good) or "
            "at a folder of normal samples only"
        )
    return [Sample(path) for path in paths]


def labelled_samples(root: str | Path, kind: str = "image") -> list[Sample]:
    """Labelled test samples of modality ``kind``: ``root/test/<defect>/`` (``good`` is normal) with masks at
    ``root/ground_truth/<defect>/<stem>_mask.png``. ``root`` may also be the test folder
    itself (masks then in its sibling or child ``ground_truth``)."""
    root = Path(root)
    _require_dir(root, "test data folder")
    test_dir = root / "test" if (root / "test").is_dir() else root
    truth_dirs = [test_dir.parent / "ground_truth", test_dir / "ground_truth"]
    truth = next((d for d in truth_dirs if d.is_dir()), None)
    modality = get_modality(kind)
    samples: list[Sample] = []
    for folder in sorted(d for d in test_dir.iterdir() if d.is_dir() and d.name != "ground_truth"):
        for path in modality.list_files(folder, recursive=False):
            mask = None
            if folder.name != GOOD and truth is not None:
                candidate = truth / folder.name / f"{path.stem}_mask.png"
                mask = candidate if candidate.is_file() else None
            samples.append(Sample(path, folder.name, mask))
    if not any(s.label == 0 for s in samples) or not any(s.label == 1 for s in samples):
        raise DataError(
            f"test folder {test_dir} needs a 'good' subfolder and at least one defect subfolder "
            f"with {kind} files (MVTec layout: test/good, test/<defect>)"
        )
    return samples


def load_mask(sample: Sample, spec: InputSpec) -> np.ndarray | None:
    """Ground-truth mask as bool at the anomaly map's shape (nearest), zeros for good samples,
    ``None`` when a defect sample has no readable mask (no pixel metrics for it).
    Masks are PNG images whatever the modality (MVTec's ``ground_truth`` layout)."""
    if sample.label == 0:
        return np.zeros(spec.map_shape, dtype=bool)
    if sample.mask_path is None:
        return None
    try:
        mask = read_image(sample.mask_path)
    except BadInputError as exc:
        log.warning("ignoring mask: %s", exc)
        return None
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    rows, cols = spec.map_shape
    return cv2.resize(mask, (cols, rows), interpolation=cv2.INTER_NEAREST) > 0


def iter_batches(
    samples: Sequence[Sample],
    spec: InputSpec,
    batch_size: int,
    summary: LoadSummary,
    num_workers: int = 0,
    limits: Any = None,
    on_read: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[np.ndarray, list[Sample]]]:
    """Yield ([B, *spec.tensor_shape] float32 batch, its samples), skipping unusable files
    into ``summary``. ``limits`` is the modality's reading limits or format (series: the
    card's log format), None for its defaults. ``on_read(files, samples)``: progress, see
    :func:`flowedge.modalities.batches.load_batches`.

    Raises :class:`DataError` naming ``summary.root`` when no sample at all was usable.
    ``num_workers`` > 0 decodes in threads.
    """
    modality = get_modality(spec.kind)
    for kept, batch in load_batches(
        samples,
        lambda sample: modality.load_all(sample.path, spec, limits),
        batch_size,
        summary.skip,
        num_workers,
        on_read,
    ):
        summary.n_ok += len(kept)
        yield batch, kept
    if summary.n_ok == 0:
        raise DataError(
            f"{summary.root}: none of the {summary.n_skipped} file(s) could be used "
            "(all unreadable or corrupt, see the warnings above); check the folder"
        )
