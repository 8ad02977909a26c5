"""Training: batches of features for the detector, the fit, the checkpoint.

With a frozen backbone and no augmentation an image's features are the same in
every epoch: a detector that says so (``caches_features``, the default) gets them
extracted once (batched, no gradients), so each epoch costs only the detector
itself. Otherwise the images are re-read, augmented and passed through
``features()`` every epoch.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowedge.core.card import InputSpec, ModelCard
from flowedge.core.errors import CheckFailedError, ConfigError
from flowedge.core.progress import Progress
from flowedge.flows.checkpoint import save_checkpoint, torch_device
from flowedge.flows.config import DetectorConfigBase, TrainingConfig
from flowedge.flows.data.datasets import LoadSummary, Sample, iter_batches, training_samples
from flowedge.flows.detectors.base import Detector, Features, TrainBatch
from flowedge.flows.fit import fit_detector, planned_epochs
from flowedge.flows.runs import run_spec

log = logging.getLogger(__name__)

Augment = Callable[[torch.Tensor], torch.Tensor]  # a preprocessed batch in, the same shape out


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def batch_labels(detector: Detector, kept: list[Sample]) -> torch.Tensor | None:
    """Labels (1 = anomalous) for detectors that learn from them, else None."""
    return torch.tensor([s.label for s in kept]) if detector.needs_labels else None


class FeatureCache:
    """All training features in memory, one tensor per feature map, re-batched per epoch.

    Shuffling with a seeded generator keeps runs reproducible while still giving
    the optimiser a new order each epoch.
    """

    def __init__(
        self,
        chunks: list[Features],
        labels: torch.Tensor | None,
        batch_size: int,
        seed: int,
        device: torch.device,
    ):
        self.maps = [torch.cat(parts) for parts in zip(*chunks, strict=True)]
        self.labels = labels
        self.batch_size = batch_size
        self.device = device
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.maps[0])

    @property
    def n_batches(self) -> int:
        return -(-len(self) // self.batch_size)

    def __call__(self) -> Iterator[TrainBatch]:
        order = torch.randperm(len(self), generator=self.generator)
        for start in range(0, len(self), self.batch_size):
            index = order[start : start + self.batch_size]
            labels = None if self.labels is None else self.labels[index].to(self.device)
            yield [m[index].to(self.device) for m in self.maps], labels


class StreamedFeatures:
    """Features computed afresh every epoch from re-read (and optionally augmented) images,
    for detectors whose features change in training. Shuffled like :class:`FeatureCache`."""

    def __init__(
        self,
        detector: Detector,
        samples: list[Sample],
        train_cfg: TrainingConfig,
        device: torch.device,
        augment: Augment | None,
    ):
        self.detector, self.samples, self.device, self.augment = detector, samples, device, augment
        self.spec = detector.input_spec()
        self.batch_size, self.num_workers = train_cfg.batch_size, train_cfg.num_workers
        self.generator = torch.Generator().manual_seed(train_cfg.seed)

    @property
    def n_batches(self) -> int:
        return -(-len(self.samples) // self.batch_size)

    def __call__(self) -> Iterator[TrainBatch]:
        order = torch.randperm(len(self.samples), generator=self.generator)
        shuffled = [self.samples[i] for i in order]
        summary = LoadSummary(root="training epoch")  # the samples were all read once already
        for batch, kept in iter_batches(
            shuffled, self.spec, self.batch_size, summary, self.num_workers
        ):
            x = torch.from_numpy(batch).to(self.device)
            if self.augment is not None:
                x = self.augment(x)
            labels = batch_labels(self.detector, kept)
            yield self.detector.features(x), None if labels is None else labels.to(self.device)


def build_card(
    detector: Detector, det_cfg: DetectorConfigBase, training: dict[str, Any]
) -> ModelCard:
    """The card of a built detector; :func:`flows.checkpoint.save_checkpoint` adds hash and time."""
    return ModelCard(
        detector=det_cfg.kind,
        detector_params=det_cfg.model_dump(mode="json"),
        backbone=dict(detector.backbone_info),
        input=detector.input_spec(),
        score=detector.score_spec(),
        training=training,
    )


def _loaded(
    samples: list[Sample],
    spec: InputSpec,
    summary: LoadSummary,
    train_cfg: TrainingConfig,
    progress: Progress | None = None,
) -> Iterator[tuple[np.ndarray, list[Sample]]]:
    on_read = None if progress is None else progress.files_read
    return iter_batches(
        samples, spec, train_cfg.batch_size, summary, train_cfg.num_workers, on_read=on_read
    )


@torch.no_grad()
def cache_features(
    detector: Detector,
    groups: list[tuple[list[Sample], InputSpec]],
    summary: LoadSummary,
    train_cfg: TrainingConfig,
    device: torch.device,
    show_progress: bool,
) -> FeatureCache:
    """Backbone features of all usable samples, on the CPU, extracted batch by batch; each
    group of samples preprocessed with its spec (one group, or one per run)."""
    chunks: list[Features] = []
    kept_all: list[Sample] = []
    total = sum(len(samples) for samples, _ in groups)
    with Progress(total, "features", "file", bar=show_progress) as progress:
        for samples, spec in groups:
            for batch, kept in _loaded(samples, spec, summary, train_cfg, progress):
                feats = detector.features(torch.from_numpy(batch).to(device))
                chunks.append([f.detach().to("cpu") for f in feats])
                kept_all += kept
    labels = batch_labels(detector, kept_all)
    return FeatureCache(chunks, labels, train_cfg.batch_size, train_cfg.seed, device)


def stream_features(
    detector: Detector,
    samples: list[Sample],
    summary: LoadSummary,
    train_cfg: TrainingConfig,
    device: torch.device,
    augment: Augment | None,
) -> StreamedFeatures:
    """Read every sample once (unusable ones go to ``summary``), then stream the usable ones."""
    usable: list[Sample] = []
    for _, kept in _loaded(samples, detector.input_spec(), summary, train_cfg):
        usable += kept
    return StreamedFeatures(detector, usable, train_cfg, device, augment)


def train(
    det_cfg: DetectorConfigBase,
    train_cfg: TrainingConfig,
    data_dir: str | Path,
    out_dir: str | Path,
    device: str = "cpu",
    show_progress: bool = True,
    augment: Augment | None = None,
    runs: Mapping[str, Path] | None = None,
) -> ModelCard:
    """Train a detector on the normal images in ``data_dir`` and write a checkpoint to ``out_dir``.

    ``augment`` transforms each preprocessed training batch, every epoch, for detectors
    that use augmentation (their features are then computed afresh each epoch). ``runs``:
    the training folders of each run, each standardised with its own statistics
    (:mod:`flowedge.flows.runs`); ``data_dir`` is then their parent.
    """
    data_dir = Path(data_dir)
    # before building anything: a wrong folder fails fast
    folders = runs if runs is not None else {"": data_dir}
    grouped = {run: training_samples(folder, det_cfg.modality) for run, folder in folders.items()}
    samples = [sample for group in grouped.values() for sample in group]
    det_cfg = det_cfg.for_training_files([sample.path for sample in samples])
    from flowedge.flows.detectors import build_detector  # heavy (timm, FrEIA)

    target = torch_device(device)
    seed_everything(train_cfg.seed)
    detector = build_detector(det_cfg).to(target)
    detector.eval()
    if augment is not None and not detector.uses_augmentation:
        raise ConfigError(
            f"detector {detector.name!r} does not use augmentation: train it without one"
        )

    start = time.perf_counter()
    summary = LoadSummary(root=str(data_dir.resolve()))
    if runs is not None and (augment is not None or not detector.caches_features):
        raise ConfigError(
            f"--per-run: detector {detector.name!r} computes its features afresh each epoch; "
            "per-run statistics are supported for detectors with fixed features"
        )
    if detector.caches_features and augment is None:
        spec = detector.input_spec()
        groups = [
            (
                group,
                spec
                if runs is None
                else run_spec([s.path for s in group], spec, None, f"run {run}"),
            )
            for run, group in grouped.items()
        ]
        batches = cache_features(detector, groups, summary, train_cfg, target, show_progress)
    else:
        batches = stream_features(detector, samples, summary, train_cfg, target, augment)
    feature_s = time.perf_counter() - start
    if summary.n_skipped:
        log.warning(
            "%d of %d training files skipped (listed in the model card)",
            summary.n_skipped,
            len(samples),
        )

    last: dict[str, float] = {}
    with Progress(
        planned_epochs(detector, train_cfg) * batches.n_batches, "fit", "batch", bar=show_progress
    ) as progress:

        def on_batch(info: dict[str, float]) -> None:
            last.update(info)
            progress.update(
                1, epoch=int(info.get("epoch", 0)) + 1, loss=float(info.get("loss", float("nan")))
            )

        start = time.perf_counter()
        fit_summary = fit_detector(detector, batches, train_cfg, on_batch)
        fit_s = time.perf_counter() - start
    detector.eval()

    final_loss = fit_summary.get("final_loss", last.get("loss"))
    if final_loss is not None and not math.isfinite(final_loss):
        raise CheckFailedError(
            f"training diverged (final loss {final_loss}); no checkpoint written: lower "
            "training.lr or detector.clamp, or check the data for extreme images"
        )
    per_run = {} if runs is None else {"per_run": list(runs)}
    training: dict[str, Any] = {
        "data": summary.to_dict() | {"n_images": summary.n_ok} | per_run,
        "epochs": int(fit_summary.get("epochs", train_cfg.epochs)),
        "seed": train_cfg.seed,
        "batch_size": train_cfg.batch_size,
        "final_loss": None if final_loss is None else float(final_loss),
        "feature_seconds": round(feature_s, 3),
        "fit_seconds": round(fit_s, 3),
        "device": str(target),
        "config": train_cfg.model_dump(mode="json"),
        "fit": {k: v for k, v in fit_summary.items() if isinstance(v, int | float | str | bool)},
    }
    card = build_card(detector, det_cfg, training)
    log.info(
        "trained %s on %d samples in %.1f s (features %.1f s); final loss %s",
        det_cfg.kind,
        summary.n_ok,
        feature_s + fit_s,
        feature_s,
        training["final_loss"],
    )
    return save_checkpoint(detector, card, out_dir)
