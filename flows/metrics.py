"""Detection metrics: image AUROC, pixel AUROC, AUPRO and the best F1 with its threshold.

Per defect type a metric uses that defect's images plus all good images, the
usual MVTec protocol, so a rare defect type is not hidden by the common ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
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


AUPRO_FPR_LIMIT = 0.3  # the MVTec AD convention (Bergmann et al. 2021), as in anomalib


def aupro(
    masks: Sequence[np.ndarray], maps: Sequence[np.ndarray], fpr_limit: float = AUPRO_FPR_LIMIT
) -> float | None:
    """Area under the per-region-overlap curve up to ``fpr_limit`` false-positive rate, / limit.

    Pixel AUROC weighs a defect by its area, so one large "uneven" region outweighs many
    small blowholes; PRO averages the covered share of each connected defect region
    (8-connectivity) instead, so small defects count as much as large ones. The curve is
    exact: every distinct map value is a threshold (pixels sorted once), the false-positive
    rate is over all defect-free pixels of the given images, and the area is cut at the
    limit by linear interpolation. ``None`` without both defect and defect-free pixels.
    """
    if not masks:
        return None
    scores, fpr_steps, pro_steps = [], [], []
    n_regions, n_normal = 0, 0
    for mask, amap in zip(masks, maps, strict=True):
        truth = np.asarray(mask, dtype=bool)
        regions, count = ndimage.label(truth, structure=np.ones((3, 3)))
        sizes = np.bincount(regions.ravel(), minlength=count + 1).astype(np.float64)
        # each defect pixel adds 1/area of its region to the summed overlap; normal pixels 0
        share = np.where(regions > 0, 1.0 / sizes[regions], 0.0)
        scores.append(np.asarray(amap, dtype=np.float64).ravel())
        pro_steps.append(share.ravel())
        fpr_steps.append((~truth).ravel())
        n_regions += count
        n_normal += int((~truth).sum())
    if n_regions == 0 or n_normal == 0:
        return None
    values = np.concatenate(scores)
    order = np.argsort(-values, kind="stable")
    values = values[order]
    fpr = np.cumsum(np.concatenate(fpr_steps)[order]) / n_normal
    pro = np.cumsum(np.concatenate(pro_steps)[order]) / n_regions
    # a threshold lies between distinct values: keep the last pixel of every run of ties
    last_of_tie = np.append(values[1:] != values[:-1], True)
    fpr = np.concatenate([[0.0], fpr[last_of_tie]])
    pro = np.concatenate([[0.0], pro[last_of_tie]])
    cut = int(np.searchsorted(fpr, fpr_limit, side="right"))
    fpr_c, pro_c = fpr[:cut], pro[:cut]
    if cut < len(fpr) and fpr_c[-1] < fpr_limit:
        weight = (fpr_limit - fpr[cut - 1]) / (fpr[cut] - fpr[cut - 1])
        fpr_c = np.append(fpr_c, fpr_limit)
        pro_c = np.append(pro_c, pro[cut - 1] + weight * (pro[cut] - pro[cut - 1]))
    return float(np.trapezoid(pro_c, fpr_c) / fpr_limit)


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
        used_masks, used_maps = [masks[i] for i in usable], [maps[i] for i in usable]
        result["pixel_auroc"] = pixel_auroc(used_masks, used_maps)
        result["aupro"] = aupro(used_masks, used_maps)
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
