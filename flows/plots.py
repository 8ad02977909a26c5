"""Evaluation figures: ROC curves, score histograms and heatmap overlays (PNG).

Figures are built with :class:`matplotlib.figure.Figure` and the Agg canvas
directly, never through pyplot's global state, so plotting works headless and
from any thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def plot_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> Path:
    """One ROC curve per entry ``name -> (labels, scores)``; the first is drawn bold."""
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    for i, (name, (labels, scores)) in enumerate(curves.items()):
        if len(set(np.asarray(labels).tolist())) < 2:
            continue
        fpr, tpr, _ = roc_curve(labels, scores)
        ax.plot(fpr, tpr, lw=2.5 if i == 0 else 1.0, label=name)
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1)
    ax.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        title=title,
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def plot_histogram(
    good: np.ndarray, defect: np.ndarray, threshold: float | None, path: Path, title: str
) -> Path:
    """Score distributions of good and defective images, with the F1-max threshold."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    values = np.concatenate([good, defect])
    bins = (
        np.linspace(values.min(), values.max(), 30)
        if values.size and values.min() < values.max()
        else 10
    )
    ax.hist(good, bins=bins, alpha=0.6, label=f"good ({len(good)})", color="tab:green")
    ax.hist(defect, bins=bins, alpha=0.6, label=f"defect ({len(defect)})", color="tab:red")
    if threshold is not None:
        ax.axvline(
            threshold, color="black", ls="--", lw=1, label=f"F1-max threshold {threshold:.3g}"
        )
    ax.set(xlabel="anomaly score", ylabel="images", title=title)
    ax.legend(fontsize="small")
    return _save(fig, path)


def plot_overlay(
    image_rgb: np.ndarray,
    anomaly_map: np.ndarray,
    mask: np.ndarray | None,
    value_range: tuple[float, float],
    path: Path,
    title: str,
) -> Path:
    """Image, heatmap over the image, and the ground-truth outline when there is one.

    All overlays of one report share ``value_range`` so their colours compare.
    """
    fig = Figure(figsize=(8, 4))
    left, right = fig.subplots(1, 2)
    left.imshow(image_rgb)
    left.set_title("input", fontsize="small")
    right.imshow(image_rgb)
    shown = right.imshow(
        anomaly_map, cmap="jet", alpha=0.5, vmin=value_range[0], vmax=value_range[1]
    )
    if mask is not None and mask.any():
        right.contour(mask.astype(float), levels=[0.5], colors="white", linewidths=1)
    right.set_title("anomaly map (white: ground truth)", fontsize="small")
    for ax in (left, right):
        ax.axis("off")
    fig.colorbar(shown, ax=right, fraction=0.046)
    fig.suptitle(title, fontsize="small")
    return _save(fig, path)
