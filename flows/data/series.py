"""Training data for the series detectors: cycles -> training statistics -> tensors.

The per-signal mean and std (and, by default, the model length: the longest
training cycle, as in the thesis) come from the training cycles, so they are
computed here, before the detector is built, and stored in its config (and so in
the model card). Unusable cycles are skipped by name, like broken image files.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from flowedge.core.card import ModelCard, SeriesInput
from flowedge.core.errors import BadInputError, DataError
from flowedge.flows.checkpoint import save_checkpoint, torch_device
from flowedge.flows.config import SeriesDetectorConfig, TrainingConfig
from flowedge.flows.data.datasets import training_samples
from flowedge.flows.detectors.base import Detector
from flowedge.flows.detectors.series_common import series_input
from flowedge.flows.fit import fit_detector
from flowedge.flows.runs import own_spec
from flowedge.flows.train import FeatureCache, build_card, seed_everything
from flowedge.modalities.series_cycles import segment
from flowedge.modalities.series_io import SignalTable, read_log
from flowedge.modalities.series_prep import at_model_rate, fit_length, signal_statistics

log = logging.getLogger(__name__)


@dataclass
class SeriesSet:
    """Standardised, padded cycles [N, S, T] and the names of those that could not be used."""

    tensors: np.ndarray
    names: list[str]
    skipped: list[str] = field(default_factory=list)


def _resampled(cycles: Sequence[SignalTable], config: SeriesDetectorConfig):
    probe = config.model_copy(
        update={
            "mean": [0.0] * len(config.signals),
            "std": [1.0] * len(config.signals),
            "length": config.length or 2,
        }
    )
    spec = series_input(probe)
    kept, skipped = [], []
    for cycle in cycles:
        try:
            kept.append((cycle.name, at_model_rate(cycle, spec)))
        except BadInputError as exc:
            log.warning("skipping %s", exc)
            skipped.append(cycle.name)
    return kept, skipped


def prepare_series(
    cycles: Sequence[SignalTable],
    config: SeriesDetectorConfig,
    runs: Mapping[str, Sequence[SignalTable]] | None = None,
):
    """(config with training statistics and length, the training set) from normal cycles;
    with ``runs`` (the same cycles by run), each run standardised with its own statistics
    while the config keeps the pooled ones (:mod:`flowedge.flows.runs`)."""
    kept, skipped = _resampled(cycles, config)
    if not kept:
        raise DataError(f"none of the {len(cycles)} training cycles is usable (see warnings)")
    mean, std = signal_statistics([values for _, values in kept])
    length = config.length or max(values.shape[1] for _, values in kept)
    ready = config.model_copy(update={"mean": mean, "std": std, "length": length})
    if runs is None:
        return ready, _standardised(kept, ready, skipped)
    parts = []
    for run, run_cycles in runs.items():
        spec = own_spec(run_cycles, series_input(ready), f"run {run}")
        assert isinstance(spec, SeriesInput)
        own = ready.model_copy(update={"mean": list(spec.mean), "std": list(spec.std)})
        parts.append(standardise_set(run_cycles, own))
    tensors = np.concatenate([part.tensors for part in parts])
    names = [name for part in parts for name in part.names]
    return ready, SeriesSet(tensors, names, [name for part in parts for name in part.skipped])


def standardise_set(cycles: Sequence[SignalTable], config: SeriesDetectorConfig) -> SeriesSet:
    """Cycles as the trained detector sees them (config from :func:`prepare_series`)."""
    kept, skipped = _resampled(cycles, config)
    return _standardised(kept, config, skipped)


def _standardised(kept, config: SeriesDetectorConfig, skipped: list[str]) -> SeriesSet:
    mean = np.asarray(config.mean)[:, None]
    std = np.asarray(config.std)[:, None]
    tensors = [
        fit_length((values - mean) / std, config.length).astype(np.float32) for _, values in kept
    ]
    shape = (0, len(config.signals), config.length)
    stacked = np.stack(tensors) if tensors else np.zeros(shape, np.float32)
    return SeriesSet(stacked, [name for name, _ in kept], skipped)


def fit_series(detector: Detector, train: SeriesSet, train_cfg: TrainingConfig) -> dict:
    """Fit ``detector`` on the training tensors (shuffled batches each epoch)."""
    device = next((p.device for p in detector.parameters()), torch.device("cpu"))
    batches = FeatureCache(
        [[torch.from_numpy(train.tensors)]], None, train_cfg.batch_size, train_cfg.seed, device
    )
    return fit_detector(detector, batches, train_cfg)


@torch.no_grad()
def score_series(detector: Detector, tensors: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Sample scores of [N, S, T] tensors."""
    detector.eval()
    device = next((p.device for p in detector.parameters()), torch.device("cpu"))
    scores = [
        detector(torch.from_numpy(tensors[i : i + batch_size]).to(device))[0].float().cpu()
        for i in range(0, len(tensors), batch_size)
    ]
    return torch.cat(scores).numpy() if scores else np.zeros(0, np.float32)


def read_cycles(data_dir: str | Path, config: SeriesDetectorConfig) -> list[SignalTable]:
    """The normal training cycles under ``data_dir`` (``train/good`` of an MVTec-like root, or
    the folder itself): each log read with ``config.log`` and cut by ``config.segment``
    (without one, a file is one cycle). An unreadable log is skipped with a warning."""
    cycles: list[SignalTable] = []
    for sample in training_samples(data_dir, config.modality):
        try:
            table = read_log(sample.path, config.log)
        except BadInputError as exc:
            log.warning("skipping %s", exc)
            continue
        cycles += [table] if config.segment is None else segment(table, config.segment)
    if not cycles:
        raise DataError(f"no cycles in the training logs under {data_dir} (see warnings)")
    return cycles


def train(
    det_cfg: SeriesDetectorConfig,
    train_cfg: TrainingConfig,
    data_dir: str | Path,
    out_dir: str | Path,
    device: str = "cpu",
    show_progress: bool = True,
    runs: Mapping[str, Path] | None = None,
) -> ModelCard:
    """``flowedge train`` for series detectors: the same call as :func:`flowedge.flows.train.train`."""
    del show_progress  # one tensor set, fitted in seconds: no bars
    root = str(Path(data_dir).resolve())
    if runs is None:
        cycles = read_cycles(data_dir, det_cfg)
        return train_series(cycles, det_cfg, train_cfg, out_dir, device, data_root=root)
    by_run = {run: read_cycles(folder, det_cfg) for run, folder in runs.items()}
    cycles = [cycle for run_cycles in by_run.values() for cycle in run_cycles]
    return train_series(cycles, det_cfg, train_cfg, out_dir, device, root, by_run)


def train_series(
    cycles: Sequence[SignalTable],
    config: SeriesDetectorConfig,
    train_cfg: TrainingConfig,
    out_dir: str | Path,
    device: str = "cpu",
    data_root: str | None = None,
    runs: Mapping[str, Sequence[SignalTable]] | None = None,
) -> ModelCard:
    """Train a series detector on normal cycles and write a checkpoint (card included).

    ``data_root``: the folder the cycles were read from, recorded in the card (calibration
    refuses its files, export checks parity on them); None for cycles from elsewhere.
    ``runs``: the same cycles by run, each standardised with its own statistics."""
    from flowedge.flows.detectors import build_detector

    target = torch_device(device)
    seed_everything(train_cfg.seed)
    ready, train_set = prepare_series(cycles, config, runs)
    detector = build_detector(ready).to(target)
    summary = fit_series(detector, train_set, train_cfg)
    training = {
        "data": {
            **({} if data_root is None else {"root": data_root}),
            "n_cycles": len(train_set.names),
            "n_skipped": len(train_set.skipped),
            "skipped": train_set.skipped,
            **({} if runs is None else {"per_run": list(runs)}),
        },
        "epochs": int(summary.get("epochs", train_cfg.epochs)),
        "seed": train_cfg.seed,
        "batch_size": train_cfg.batch_size,
        "final_loss": summary.get("final_loss"),
        "config": train_cfg.model_dump(mode="json"),
        "device": str(target),
    }
    return save_checkpoint(detector, build_card(detector, ready, training), out_dir)
