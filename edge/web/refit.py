"""What re-fitting the threshold with the reviewed samples would give, before anyone applies it.

The same re-fit as ``flowedge calibrate --history --update`` (merge): the calibration
file's stored normal sample plus the false alarms reviewers confirmed were good parts,
at the calibration's own strategy and options; confirmed defects are its labelled
anomalies. Only reviews of decisions the running model scored count (its recorded
scores); samples of another model need scoring again, which is ``flowedge calibrate``'s job.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flowedge.calibration.calibfile import read_calibration
from flowedge.calibration.calibrate import CalibrationOptions, choose_threshold
from flowedge.calibration.distribution import ScoreDistribution
from flowedge.calibration.history.query import Query, select
from flowedge.calibration.history.review import DEFECT
from flowedge.calibration.history.store import opened
from flowedge.calibration.reviewed import NORMAL_VERDICTS, ReviewedScores, report_lines
from flowedge.calibration.thresholds import check_sample_sizes
from flowedge.core.errors import FlowedgeError


@dataclass(frozen=True)
class Preview:
    """The proposed threshold (None when none can be given, ``reason`` says why)."""

    before: float | None
    after: float | None
    lines: tuple[str, ...]
    reason: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "before": self.before,
            "after": self.after,
            "lines": list(self.lines),
            "reason": self.reason,
        }


def preview(
    history: Path | None,
    calibration: Path | None,
    running: float | None,
    key: str = "model.calibration",
) -> Preview:
    """The re-fit of ``calibration`` with the reviews in ``history``; ``running``: the
    threshold in force now; ``key``: where the config names the calibration file."""
    if history is None:
        return Preview(running, None, (), "no history sink: reviews are kept there")
    if calibration is None:
        return Preview(
            running,
            None,
            (),
            f"the model runs without a calibration file ({key}): a re-fit needs its normal "
            "sample; run 'flowedge calibrate --history' instead",
        )
    try:
        cal = read_calibration(calibration)
        with opened(history) as db:
            rows = [r for r in select(db, Query(reviewed=True)) if r.score is not None]
        mine = [r for r in rows if r.weights_sha256 == cal.weights_sha256]
        normal = np.array([r.score for r in mine if r.verdict in NORMAL_VERDICTS], dtype=float)
        defects = np.array([r.score for r in mine if r.verdict in DEFECT], dtype=float)
        reviewed = ReviewedScores(
            [str(history)],
            normal,
            defects,
            cal.threshold,
            {
                "recorded": len(mine),
                "rescored": 0,
                "without_score": len(rows) - len(mine),
                "trained_on": 0,
                "normal": normal.size,
                "defects": defects.size,
            },
        )
        after = _refit(cal.data, normal, defects)
    except (FlowedgeError, ValueError) as exc:
        return Preview(running, None, (), f"no re-fit: {exc}")
    if not normal.size and not defects.size:
        return Preview(running, None, (), "no reviewed sample of the running model yet")
    return Preview(running, after, tuple(report_lines(reviewed, running, after)))


def _refit(data: dict, normal: np.ndarray, defects: np.ndarray) -> float:
    """The merge re-fit of :func:`flowedge.calibration.calibrate.update_calibration`."""
    opts = CalibrationOptions(**data["options"])
    pooled = np.concatenate([np.asarray(data.get("normal_sample", []), dtype=float), normal])
    stored = (data.get("anomalous") or {}).get("scores")
    anomalous = defects if defects.size else (None if stored is None else np.asarray(stored))
    check_sample_sizes(pooled, anomalous, opts.strategy)
    dist = ScoreDistribution.from_sample(pooled, opts.tail_fraction, opts.min_exceedances)
    return float(choose_threshold(pooled, anomalous, dist, opts).threshold)
