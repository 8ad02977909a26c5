"""Calibration of a model trained per run (``flowedge calibrate --per-run N``).

Such a model judges a sample only once it is standardised with its own run's statistics
(:mod:`flowedge.flows.runs`), which the station estimates from the first samples after a
changeover. Calibration scores each held-out run the same way: the first ``N`` files of
the run's normal folder (in name order) are its baseline and are not scored; the rest of
its normal files, and its defect files, are scored with the statistics of that baseline.
"""

from __future__ import annotations

from pathlib import Path

from flowedge.calibration.scoring import InferFn, ScoredFolder, sample_files, score_paths
from flowedge.core.card import ModelCard
from flowedge.core.errors import ConfigError
from flowedge.flows.recipes import recipe_folders
from flowedge.flows.runs import require_rebaselining, split_baseline
from flowedge.modalities import get_modality


def score_runs(
    normal_root: Path,
    anomalous_root: Path | None,
    baseline: int,
    infer: InferFn,
    card: ModelCard,
    batch_size: int,
    show_progress: bool,
) -> tuple[ScoredFolder, ScoredFolder | None]:
    """(normal, anomalous) scores of the runs under ``normal_root`` (one folder per run) and,
    when given, of the same runs' defects under ``anomalous_root``."""
    require_rebaselining(card.input.kind)
    runs = recipe_folders(normal_root, "--normal", "run")
    defects = recipe_folders(anomalous_root, "--anomalous", "run") if anomalous_root else {}
    unknown = sorted(set(defects) - set(runs))
    if unknown:
        raise ConfigError(
            f"--anomalous {anomalous_root}: run(s) {', '.join(unknown)} have no folder under "
            f"--normal {normal_root}, whose first samples would be their baseline; add them"
        )
    kind, limits = card.input.kind, get_modality(card.input.kind).reading(card)
    normal, anomalous = [], []
    for run, folder in runs.items():
        what = f"--normal run {run} ({folder})"
        spec, rest = split_baseline(sample_files(folder, kind), baseline, card.input, limits, what)
        normal.append(
            score_paths(
                rest,
                infer,
                card,
                batch_size,
                f"normal {run}",
                show_progress,
                [str(folder)],
                spec,
            )
        )
        if run in defects:
            paths = sorted(sample_files(defects[run], kind))
            anomalous.append(
                score_paths(
                    paths,
                    infer,
                    card,
                    batch_size,
                    f"anomalous {run}",
                    show_progress,
                    [str(defects[run])],
                    spec,
                )
            )
    return ScoredFolder.joined(normal), ScoredFolder.joined(anomalous) if anomalous else None
