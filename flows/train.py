"""Training: frozen-backbone features once, then fit the detector on the cached features.

The backbone is frozen and there is no augmentation, so an image's features are
the same in every epoch: extracting them once (batched, no gradients) makes each
epoch cost only the flow itself.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from flowedge.core.card import ModelCard
from flowedge.core.errors import CheckFailedError
from flowedge.flows.checkpoint import save_checkpoint, torch_device
from flowedge.flows.config import DetectorConfig, TrainingConfig
from flowedge.flows.data.datasets import LoadSummary, Sample, iter_batches, training_samples
from flowedge.flows.detectors.base import Detector, Features

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class FeatureCache:
    """All training features in memory, one tensor per feature map, re-batched per epoch.

    Shuffling with a seeded generator keeps runs reproducible while still giving
    the optimiser a new order each epoch.
    """

    def __init__(self, chunks: list[Features], batch_size: int, seed: int, device: torch.device):
        self.maps = [torch.cat(parts) for parts in zip(*chunks, strict=True)]
        self.batch_size = batch_size
        self.device = device
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.maps[0])

    @property
    def n_batches(self) -> int:
        return -(-len(self) // self.batch_size)

    def __call__(self) -> Iterator[Features]:
        order = torch.randperm(len(self), generator=self.generator)
        for start in range(0, len(self), self.batch_size):
            index = order[start : start + self.batch_size]
            yield [m[index].to(self.device) for m in self.maps]


def build_card(detector: Detector, det_cfg: DetectorConfig, training: dict[str, Any]) -> ModelCard:
    """The card of a built detector; :func:`flows.checkpoint.save_checkpoint` adds hash and time."""
    return ModelCard(
        detector=det_cfg.kind,
        detector_params=det_cfg.model_dump(mode="json"),
        backbone=dict(detector.backbone_info),
        input=detector.preprocess_spec(),
        score=detector.score_spec(),
        training=training,
    )


@torch.no_grad()
def extract_features(
    detector: Detector,
    samples: list[Sample],
    root: str,
    train_cfg: TrainingConfig,
    device: torch.device,
    show_progress: bool,
) -> tuple[list[Features], LoadSummary]:
    """Backbone features of all usable samples, on the CPU, batch by batch."""
    summary = LoadSummary(root=root)
    spec = detector.preprocess_spec()
    chunks: list[Features] = []
    batches = iter_batches(samples, spec, train_cfg.batch_size, summary, train_cfg.num_workers)
    with tqdm(total=len(samples), desc="features", unit="img", disable=not show_progress) as bar:
        for batch, _ in batches:
            feats = detector.features(torch.from_numpy(batch).to(device))
            chunks.append([f.detach().to("cpu") for f in feats])
            bar.update(summary.n_ok + summary.n_skipped - bar.n)  # skipped files count as done
    return chunks, summary


def train(
    det_cfg: DetectorConfig,
    train_cfg: TrainingConfig,
    data_dir: str | Path,
    out_dir: str | Path,
    device: str = "cpu",
    show_progress: bool = True,
) -> ModelCard:
    """Train a detector on the normal images in ``data_dir`` and write a checkpoint to ``out_dir``."""
    data_dir = Path(data_dir)
    samples = training_samples(data_dir)  # before building anything: a wrong folder fails fast
    from flowedge.flows.detectors import build_detector  # heavy (timm, FrEIA)

    target = torch_device(device)
    seed_everything(train_cfg.seed)
    detector = build_detector(det_cfg, train_cfg).to(target)
    detector.eval()

    start = time.perf_counter()
    chunks, summary = extract_features(
        detector, samples, str(data_dir.resolve()), train_cfg, target, show_progress
    )
    feature_s = time.perf_counter() - start
    if summary.n_skipped:
        log.warning(
            "%d of %d training images skipped (listed in the model card)",
            summary.n_skipped,
            summary.n_ok + summary.n_skipped,
        )
    cache = FeatureCache(chunks, train_cfg.batch_size, train_cfg.seed, target)
    del chunks

    last: dict[str, float] = {}
    with tqdm(
        total=train_cfg.epochs * cache.n_batches,
        desc="fit",
        unit="batch",
        disable=not show_progress,
    ) as bar:

        def progress(info: dict[str, float]) -> None:
            last.update(info)
            bar.set_postfix(
                epoch=int(info.get("epoch", 0)) + 1, loss=f"{info.get('loss', float('nan')):.4f}"
            )
            bar.update(1)

        start = time.perf_counter()
        fit_summary = detector.fit(cache, train_cfg.epochs, progress)
        fit_s = time.perf_counter() - start
        bar.total = bar.n  # a closed-form fit (gaussian) takes one pass, not one per epoch
        bar.refresh()
    detector.eval()

    final_loss = fit_summary.get("final_loss", last.get("loss"))
    if final_loss is not None and not math.isfinite(final_loss):
        raise CheckFailedError(
            f"training diverged (final loss {final_loss}); no checkpoint written: lower "
            "training.lr or detector.clamp, or check the data for extreme images"
        )
    training: dict[str, Any] = {
        "data": summary.to_dict() | {"n_images": summary.n_ok},
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
        "trained %s on %d images in %.1f s (features %.1f s); final loss %s",
        det_cfg.kind,
        summary.n_ok,
        feature_s + fit_s,
        feature_s,
        training["final_loss"],
    )
    return save_checkpoint(detector, card, out_dir)
