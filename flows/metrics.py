"""Detection metrics: image AUROC, pixel AUROC and the best F1 with its threshold.

Per defect type a metric uses that defect's images plus all good images, the
usual MVTec protocol, so a rare defect type is not hidden by the common ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import precision_recall_curve

from flowedge.core.metrics import auroc


def _both_classes(labels: np.ndarray) -> bool:
    return bool(labels.min() == 0 and labels.max() == 1)


def image_auroc(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> float | None:
    """Area under the ROC curve; ``None`` when only one class is present."""
    labels = np.asarray(labels, dtype=int)
    if labels.size == 0 or not _both_classes(labels):
        return None
    return auroc(labels, np.asarray(scores, dtype=np.float64))


def f1_max(
    labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> tuple[float, float] | None:
    """Best F1 over all thresholds and that threshold (anomalous when score >= threshold)."""
    labels = np.asarray(labels, dtype=int)
    if labels.size == 0 or not _both_classes(labels):
        return None
    precision, recall, thresholds = precision_recall_curve(
        labels, np.asarray(scores, dtype=np.float64)
    )
    # the last (precision, recall) pair has no threshold: it is the "predict nothing" point
    precision, recall = precision[:-1], recall[:-1]
    f1 = np.divide(
        2 * precision * recall,
        precision + recall,
        out=np.zeros_like(precision),
        where=(precision + recall) > 0,
    )
    best = int(np.argmax(f1))
    return float(f1[best]), float(thresholds[best])


def pixel_auroc(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray]) -> float | None:
    """AUROC over all pixels of the given images; ``None`` without both kinds of pixel."""
    if not masks:
        return None
    truth = np.concatenate([np.asarray(m, dtype=bool).ravel() for m in masks])
    if truth.all() or not truth.any():
        return None
    values = np.concatenate([np.asarray(m, dtype=np.float32).ravel() for m in maps])
    return auroc(truth, values)


def _group(
    labels: np.ndarray,
    scores: np.ndarray,
    masks: Sequence[np.ndarray | None],
    maps: Sequence[np.ndarray] | None,
) -> dict[str, object]:
    best = f1_max(labels, scores)
    result: dict[str, object] = {
        "n_good": int((labels == 0).sum()),
        "n_defect": int((labels == 1).sum()),
        "image_auroc": image_auroc(labels, scores),
        "f1_max": None if best is None else best[0],
        "f1_threshold": None if best is None else best[1],
    }
    if maps is not None:
        usable = [i for i, m in enumerate(masks) if m is not None]
        result["pixel_auroc"] = pixel_auroc([masks[i] for i in usable], [maps[i] for i in usable])
    return result


def detection_report(
    labels: Sequence[int],
    defects: Sequence[str],
    scores: Sequence[float],
    masks: Sequence[np.ndarray | None] | None = None,
    maps: Sequence[np.ndarray] | None = None,
) -> dict[str, object]:
    """Overall and per-defect metrics. ``masks`` entries may be ``None`` (image left out of
    pixel metrics); pixel metrics are computed only when ``maps`` and ``masks`` are given."""
    labels_a = np.asarray(labels, dtype=int)
    scores_a = np.asarray(scores, dtype=np.float64)
    defects_a = np.asarray(defects)
    masks_l = list(masks) if masks is not None else [None] * len(labels_a)
    maps_l = list(maps) if maps is not None and masks is not None else None
    report: dict[str, object] = {"overall": _group(labels_a, scores_a, masks_l, maps_l)}
    per_defect: dict[str, object] = {}
    for name in sorted(set(defects_a[labels_a == 1].tolist())):
        keep = np.flatnonzero((labels_a == 0) | (defects_a == name))
        sub_maps = [maps_l[i] for i in keep] if maps_l is not None else None
        per_defect[name] = _group(
            labels_a[keep], scores_a[keep], [masks_l[i] for i in keep], sub_maps
        )
    report["per_defect"] = per_defect
    return report
