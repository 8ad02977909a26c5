"""Evaluate a checkpoint on a labelled test set: ``report.json`` plus figures.

The report carries every image's score so calibration and later comparisons can
be redone without re-running the model; the figures show where the model is
wrong (the highest-scored good images and the lowest-scored defects).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowedge.core.card import InputSpec
from flowedge.core.errors import CheckFailedError
from flowedge.core.progress import Progress
from flowedge.flows.checkpoint import checkpoint_dir, load_checkpoint
from flowedge.flows.data.datasets import (
    LoadSummary,
    Sample,
    iter_batches,
    labelled_samples,
    load_mask,
)
from flowedge.flows.metrics import detection_report
from flowedge.flows.plots import plot_histogram, plot_overlay, plot_roc
from flowedge.flows.recipes import recipe_folders
from flowedge.flows.runs import require_per_run, require_rebaselining, split_baseline
from flowedge.modalities import get_modality

log = logging.getLogger(__name__)

REPORT_FILE = "report.json"


@torch.no_grad()
def score_samples(
    detector: torch.nn.Module,
    samples: list[Sample],
    spec: InputSpec,
    summary: LoadSummary,
    batch_size: int,
    device: str,
    show_progress: bool,
    limits: Any = None,
) -> tuple[list[Sample], np.ndarray, np.ndarray]:
    """Scores [N] and maps [N, H, W] of the usable samples (the others go to ``summary``)."""
    kept_all: list[Sample] = []
    scores, maps = [], []
    with Progress(len(samples), "eval", "file", bar=show_progress) as progress:
        batches = iter_batches(
            samples, spec, batch_size, summary, limits=limits, on_read=progress.files_read
        )
        for batch, kept in batches:
            score, amap = detector(torch.from_numpy(batch).to(device))
            scores.append(score.float().cpu().numpy())
            maps.append(amap.float().cpu().numpy())
            kept_all += kept
    return kept_all, np.concatenate(scores), np.concatenate(maps)


def run_groups(
    root: Path, spec: InputSpec, limits: Any, baseline: int
) -> list[tuple[list[Sample], InputSpec]]:
    """Each run's test samples under ``root`` (one folder per run) with the statistics of its
    first ``baseline`` normal files (in name order), which are left out."""
    require_rebaselining(spec.kind)
    groups = []
    for run, folder in recipe_folders(root, "test data folder", "run").items():
        samples = labelled_samples(folder, spec.kind)
        good = [s.path for s in samples if s.label == 0]
        own, scored = split_baseline(good, baseline, spec, limits, f"test run {run} ({folder})")
        kept = set(scored)
        groups.append(([s for s in samples if s.label == 1 or s.path in kept], own))
    return groups


def _worst_cases(
    samples: list[Sample],
    scores: np.ndarray,
    maps: np.ndarray,
    masks: list[np.ndarray | None],
    spec: InputSpec,
    out_dir: Path,
    n_worst: int,
    limits: Any = None,
) -> list[str]:
    """Overlays of the highest-scored good images and the lowest-scored defects."""
    parts = part_numbers(samples)
    modality = get_modality(spec.kind)
    out_dir.mkdir(parents=True, exist_ok=True)
    value_range = (float(np.percentile(maps, 1)), float(np.percentile(maps, 99.9)))
    labels = np.array([s.label for s in samples])
    good = [int(i) for i in np.argsort(-scores) if labels[i] == 0][:n_worst]
    defect = [int(i) for i in np.argsort(scores) if labels[i] == 1][:n_worst]
    written = []
    for kind, indices in (("good_highest", good), ("defect_lowest", defect)):
        for rank, i in enumerate(indices):
            sample, part = samples[i], parts[i]
            # a log cut into cycles: say which (a file of one sample is just its name)
            cut = f"#{part}" if part or parts[i + 1 : i + 2] == [1] else ""
            name = f"{kind}_{rank}_{sample.defect}_{sample.path.stem}{cut}.png"
            title = f"{sample.defect}/{sample.path.name}{cut}  score {scores[i]:.4g}"
            plot_overlay(
                modality.display_part(sample.path, spec, limits, part),
                maps[i],
                masks[i],
                value_range,
                out_dir / name,
                title,
            )
            written.append(str(out_dir / name))
    return written


def part_numbers(samples: list[Sample]) -> list[int]:
    """Which sample of its file each one is (0, 1, ...: a log cut into cycles gives several,
    all together in file order)."""
    parts: list[int] = []
    for i, sample in enumerate(samples):
        parts.append(parts[-1] + 1 if i and samples[i - 1].path == sample.path else 0)
    return parts


def evaluate(
    checkpoint: str | Path,
    test_root: str | Path,
    out_dir: str | Path,
    device: str = "cpu",
    batch_size: int = 16,
    n_worst: int = 3,
    show_progress: bool = True,
    per_run: int | None = None,
) -> dict[str, Any]:
    """Score ``test_root`` (MVTec category root or its ``test`` folder) and write the report;
    ``per_run``: ``test_root`` holds one such folder per run, and the first ``per_run`` normal
    files of each are its baseline (not scored), as for ``flowedge calibrate --per-run``."""
    detector, card = load_checkpoint(checkpoint, device=device)
    require_per_run(card, per_run, str(checkpoint))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = card.input
    summary = LoadSummary(root=str(test_root))
    # a series model reads test logs with its card's log format and cuts them into cycles
    limits = get_modality(spec.kind).reading(card)
    groups = (
        [(labelled_samples(test_root, spec.kind), spec)]
        if per_run is None
        else run_groups(Path(test_root), spec, limits, per_run)
    )
    parts = [
        score_samples(detector, samples, own, summary, batch_size, device, show_progress, limits)
        for samples, own in groups
    ]
    kept = [sample for part in parts for sample in part[0]]
    scores = np.concatenate([part[1] for part in parts])
    maps = np.concatenate([part[2] for part in parts])
    bad = [str(s.path) for s, v in zip(kept, scores, strict=True) if not np.isfinite(v)]
    if bad:
        raise CheckFailedError(
            f"the model gave non-finite scores for {len(bad)} image(s), e.g. {bad[:3]}; the checkpoint is broken: retrain"
        )
    labels = [s.label for s in kept]
    masks = [load_mask(s, spec) for s in kept]
    n_no_mask = sum(m is None for m in masks)
    if n_no_mask:
        log.warning(
            "%d defect image(s) have no ground-truth mask: left out of pixel AUROC", n_no_mask
        )
    metrics = detection_report(labels, [s.defect for s in kept], scores, masks, list(maps))

    scores_by_label = {k: scores[np.asarray(labels) == k] for k in (0, 1)}
    curves = {"overall": (np.asarray(labels), scores)}
    for name in metrics["per_defect"]:
        keep = [i for i, s in enumerate(kept) if s.label == 0 or s.defect == name]
        curves[name] = (np.asarray(labels)[keep], scores[keep])
    overall = metrics["overall"]
    files = {
        "report": str(out / REPORT_FILE),
        "roc": str(plot_roc(curves, out / "roc.png", f"ROC  {card.model_id}")),
        "histogram": str(
            plot_histogram(
                scores_by_label[0],
                scores_by_label[1],
                overall["f1_threshold"],
                out / "score_histogram.png",
                f"scores  {card.model_id}",
            )
        ),
        "heatmaps": _worst_cases(
            kept, scores, maps, masks, spec, out / "heatmaps", n_worst, limits
        ),
    }
    report = {
        "model_id": card.model_id,
        "checkpoint": str(checkpoint_dir(checkpoint)),
        "test_root": str(test_root),
        "data": summary.to_dict() | {"n_without_mask": n_no_mask},
        "metrics": metrics,
        "files": files,
        "images": [
            {"path": str(s.path), "part": part, "defect": s.defect, "label": s.label}
            | {"score": float(v)}
            for s, part, v in zip(kept, part_numbers(kept), scores, strict=True)
        ],
    }
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    log.info("evaluation of %s written to %s", card.model_id, out)
    return report
