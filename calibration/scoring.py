"""Score folders of samples with a model for calibration, and guard against training data.

Uses the station's backend (:func:`flowedge.backends.open_backend`), so a calibration can be
computed with exactly the engine that will run (torch checkpoint, ONNX or TensorRT); the
threshold maths only ever sees the resulting numpy array of scores.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from flowedge.core.card import InputSpec, ModelCard
from flowedge.core.errors import BadInputError, ConfigError, DataError
from flowedge.core.progress import Progress
from flowedge.modalities import get_modality
from flowedge.modalities.batches import load_batches

log = logging.getLogger(__name__)

InferFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class ScoredFolder:
    """Scores of the readable samples in some folders, and what was skipped (and why)."""

    folders: list[str]
    files: list[str] = field(default_factory=list)
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"folders": self.folders, "n_scored": len(self.files), "skipped": self.skipped}

    @classmethod
    def joined(cls, parts: list[ScoredFolder]) -> ScoredFolder:
        """The parts as one (their folders, files, skips and scores in order)."""
        return cls(
            [f for part in parts for f in part.folders],
            [f for part in parts for f in part.files],
            np.concatenate([part.scores for part in parts]) if parts else np.zeros(0),
            [f for part in parts for f in part.skipped],
        )


def sample_files(folder: Path, kind: str) -> list[Path]:
    """Every file of modality ``kind`` under ``folder`` (recursive), refusing mask folders and
    empty folders."""
    if not folder.is_dir():
        raise ConfigError(f"sample folder {folder} is not a directory; check the path")
    modality = get_modality(kind)
    paths = modality.list_files(folder, recursive=True)
    if any("ground_truth" in p.relative_to(folder).parts for p in paths):
        raise DataError(
            f"{folder} contains ground_truth masks; give a folder of samples only "
            "(e.g. test/good for normal, test/<defect> for anomalous)"
        )
    if not paths:
        raise DataError(
            f"no {kind} files ({', '.join(sorted(modality.extensions))}) found under {folder}"
        )
    return paths


def open_model(
    path: Path, backend: str, device: str
) -> tuple[InferFn, ModelCard, Callable[[], None]]:
    """(infer batch -> scores, card, close) through the station's own backend."""
    from flowedge.backends import open_backend

    model = open_backend(path, backend, device)
    return (lambda batch: np.asarray(model.infer(batch)[0])), model.card, model.close


def score_folders(
    folders: list[Path],
    infer: InferFn,
    card: ModelCard,
    batch_size: int = 16,
    desc: str = "score",
    show_progress: bool = True,
) -> ScoredFolder:
    """Score every sample; unreadable files are skipped and listed, NaN scores refused."""
    paths = [p for folder in folders for p in sample_files(folder, card.input.kind)]
    return score_paths(
        paths, infer, card, batch_size, desc, show_progress, [str(f) for f in folders]
    )


def score_paths(
    paths: list[Path],
    infer: InferFn,
    card: ModelCard,
    batch_size: int = 16,
    desc: str = "score",
    show_progress: bool = True,
    folders: list[str] | None = None,
    spec: InputSpec | None = None,
) -> ScoredFolder:
    """Score these sample files (see :func:`score_folders`; ``folders``: where they came from;
    ``spec``: the input statistics to use instead of the card's, a run's own)."""
    out = ScoredFolder(folders or [])
    spec = spec or card.input
    modality = get_modality(spec.kind)
    scores: list[np.ndarray] = []

    def skip(path: Path, error: BadInputError) -> None:
        log.warning("skipping %s", error)
        out.skipped.append(str(path))

    # a series model's logs are read and cut into cycles as its card says (as eval does)
    load = partial(modality.load_all, spec=spec, limits=modality.reading(card))
    with Progress(len(paths), desc, "file", bar=show_progress) as progress:
        for names, batch in load_batches(
            paths, load, batch_size, skip, on_read=progress.files_read
        ):
            values = np.asarray(infer(batch), dtype=np.float64).reshape(-1)
            bad = [str(p) for p, v in zip(names, values, strict=True) if not np.isfinite(v)]
            if bad:
                raise DataError(
                    f"the model gives NaN/Inf scores for {len(bad)} sample(s), e.g. {bad[0]}; the model "
                    "or these images are broken: check them, re-export or retrain before calibrating"
                )
            out.files.extend(str(p) for p in names)
            scores.append(values)
    if out.skipped:
        log.warning(
            "%d of %d files skipped as unreadable (listed in the file)",
            len(out.skipped),
            len(paths),
        )
    out.scores = np.concatenate(scores) if scores else np.zeros(0)
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def training_overlap(files: list[str], card: ModelCard) -> list[str]:
    """Calibration files that were training images (same path, or same bytes elsewhere).

    Uses the training root recorded in the card; logs a warning when it cannot be
    checked (root not recorded or not on this machine).
    """
    root = card.training.get("data", {}).get("root")
    if not root or not Path(root).is_dir():
        log.warning(
            "cannot check that the calibration images were not used for training (training data "
            "root %s not available here); make sure they are held out",
            root or "not recorded in the card",
        )
        return []
    from flowedge.flows.data.datasets import training_samples

    try:
        train = [s.path for s in training_samples(root, card.input.kind)]
    except DataError as exc:  # emptied since, or a labelled folder an older flowedge took
        log.warning("cannot check the calibration data against the training data: %s", exc)
        return []
    train_paths = {p.resolve() for p in train}
    by_size: dict[int, list[Path]] = {}
    for p in train:
        by_size.setdefault(p.stat().st_size, []).append(p)
    hashes: dict[Path, str] = {}  # training files hashed once, only when a size matches

    def digest(p: Path) -> str:
        if p not in hashes:
            hashes[p] = _sha256(p)
        return hashes[p]

    overlap = []
    for name in files:
        path = Path(name)
        same_size = by_size.get(path.stat().st_size, [])
        if path.resolve() in train_paths or (
            same_size and _sha256(path) in {digest(p) for p in same_size}
        ):
            overlap.append(name)
    return overlap
