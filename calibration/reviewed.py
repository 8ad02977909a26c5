"""Reviewed production samples as calibration data (``flowedge calibrate --history``).

A station's false alarms, once a reviewer confirmed the parts were good, are normal
samples the model scored too high: they join the normal calibration set, and the
threshold is re-fitted at the configured false-alarm rate. Confirmed OKs may join too
(``--history-confirmed-ok``). Confirmed anomalies and missed defects are the defects
the recall is reported on.

Each reviewed decision's score is the one the station recorded when the model is the
same (same weights: the station's own runtime, which is what will run); for another
model the kept input is scored again, unless it was one of that model's training
samples (left out, like training images given as ``--normal``). A sample without
either is left out and counted. A model trained per run (``flowedge train --per-run``)
scores a kept input right only with its run's statistics, which the history does not
keep: for it only recorded scores count (the station's, made with them).

Which normal parts get reviewed matters: false alarms alone are the high end of the
normal scores, so a threshold re-fitted from them (with few other normal samples) is
higher than the target asks: fewer false alarms than promised, less recall. It is exact
when the reviewed set is a fair sample of the normal parts: every part while the
threshold was far too low, or false alarms plus confirmed OKs picked at random
(docs/history.md).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flowedge.calibration.history.query import HistoryRow, Query, select
from flowedge.calibration.history.review import DEFECT
from flowedge.calibration.history.store import opened
from flowedge.calibration.scoring import InferFn, score_paths, training_overlap
from flowedge.core.card import ModelCard
from flowedge.core.decision import is_anomalous

log = logging.getLogger(__name__)

NORMAL_VERDICTS = ("false_alarm",)
WITH_CONFIRMED_OK = ("false_alarm", "confirmed_normal")


@dataclass
class ReviewedScores:
    """The reviewed samples' scores under the model being calibrated, and how they came."""

    histories: list[str]
    normal: np.ndarray
    defects: np.ndarray
    threshold_before: float | None  # the threshold the station last used with this model
    counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """For the calibration file's ``sources``."""
        return {"histories": self.histories, **self.counts}


def reviewed_scores(
    histories: list[Path],
    card: ModelCard,
    score: Callable[[list[Path], str], np.ndarray],
    confirmed_ok: bool,
) -> ReviewedScores:
    """Scores of the reviewed samples in ``histories``; ``score(paths, label)`` scores kept
    inputs with the model (:func:`scorer`)."""
    normal_verdicts = WITH_CONFIRMED_OK if confirmed_ok else NORMAL_VERDICTS
    rows: list[HistoryRow] = []
    for path in histories:
        with opened(path) as db:
            rows += select(db, Query(reviewed=True))
    counts = {"recorded": 0, "rescored": 0, "without_score": 0, "trained_on": 0}
    result = {}
    for label, verdicts in (("normal", normal_verdicts), ("defects", DEFECT)):
        chosen = [row for row in rows if row.verdict in verdicts]
        result[label] = _scores(chosen, card, score, label, counts)
    same_model = [
        r for r in rows if r.weights_sha256 == card.weights_sha256 and r.threshold is not None
    ]
    before = max(same_model, key=lambda r: r.decided_utc).threshold if same_model else None
    counts["normal"], counts["defects"] = len(result["normal"]), len(result["defects"])
    return ReviewedScores(
        [str(h) for h in histories], result["normal"], result["defects"], before, counts
    )


def _scores(
    rows: list[HistoryRow],
    card: ModelCard,
    score: Callable[[list[Path], str], np.ndarray],
    label: str,
    counts: dict[str, int],
) -> np.ndarray:
    recorded = [
        row.score
        for row in rows
        if row.weights_sha256 == card.weights_sha256
        and row.score is not None
        and math.isfinite(row.score)
    ]
    counts["recorded"] += len(recorded)
    others = [row for row in rows if row.weights_sha256 != card.weights_sha256]
    if others and card.trained_per_run:
        log.warning(
            "%d reviewed %s sample(s) were decided by another model: left out, since %s was "
            "trained per run and scores a kept input right only with its run's statistics",
            len(others),
            label,
            card.model_id,
        )
        others = []
    inputs = [r.input_path for r in others if r.input_path and Path(r.input_path).is_file()]
    counts["without_score"] += len(rows) - len(recorded) - len(inputs)
    trained = set(training_overlap(inputs, card)) if inputs else set()
    if trained:
        log.warning(
            "%d reviewed %s sample(s) were used to train %s (e.g. %s): left out",
            len(trained),
            label,
            card.model_id,
            sorted(trained)[0],
        )
    counts["trained_on"] += len(trained)
    fresh = [Path(p) for p in inputs if p not in trained]
    rescored = score(fresh, label) if fresh else np.zeros(0)
    counts["rescored"] += len(rescored)
    return np.concatenate([np.asarray(recorded, dtype=np.float64), rescored])


def scorer(
    infer: InferFn, card: ModelCard, batch_size: int, show_progress: bool
) -> Callable[[list[Path], str], np.ndarray]:
    """``score(paths, label)`` with the model being calibrated."""

    def score(paths: list[Path], label: str) -> np.ndarray:
        return score_paths(
            paths, infer, card, batch_size, f"reviewed {label}", show_progress
        ).scores

    return score


def report_lines(reviewed: ReviewedScores, before: float | None, after: float) -> list[str]:
    """Threshold before and after; false alarms among the reviewed normal samples and recall
    on the confirmed defects, under each."""
    c = reviewed.counts
    lines = [
        f"  history     {', '.join(reviewed.histories)}: {c['normal']} reviewed normal, "
        f"{c['defects']} confirmed defects ({c['recorded']} recorded scores, {c['rescored']} "
        f"scored again; left out: {c['without_score']} without score or kept input, "
        f"{c['trained_on']} trained on)",
        f"  threshold   before {'-' if before is None else f'{before:.6g}'} -> after {after:.6g}",
    ]
    for name, scores, what in (
        ("reviewed normal", reviewed.normal, "false alarms"),
        ("confirmed defects", reviewed.defects, "recall"),
    ):
        if scores.size:
            shares = [_share(scores, threshold) for threshold in (before, after)]
            lines.append(f"  {name:<18} {what} before {shares[0]} -> after {shares[1]}")
    return lines


def _share(scores: np.ndarray, threshold: float | None) -> str:
    """How many of ``scores`` are anomalies at ``threshold``: ``k/n (p %)``."""
    if threshold is None:
        return "-"
    above = int(np.count_nonzero(is_anomalous(scores, threshold)))
    return f"{above}/{scores.size} ({above / scores.size:.0%})"
