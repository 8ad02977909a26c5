"""What every modality's picture shares: the decision banner, the map's colour bar and,
for views that are pictures (images, spectrograms), the map blended over the view.

One look for every sensor: an operator reads an image overlay, a spectrogram and a
robot-cycle plot the same way (banner colour = decision, JET colours = map values).
"""

from __future__ import annotations

import cv2
import numpy as np

BAR_WIDTH = 24
BANNER_COLOURS = {"OK": (60, 160, 60), "ANOMALY": (40, 40, 220), "ERROR": (128, 128, 128)}


def colour_bar(height: int, low: float, high: float) -> np.ndarray:
    """A vertical JET scale (high at the top) labelled with the map's range."""
    ramp = np.linspace(255, 0, height, dtype=np.float32).astype(np.uint8)[:, None]
    bar = cv2.applyColorMap(np.repeat(ramp, BAR_WIDTH, axis=1), cv2.COLORMAP_JET)
    labelled = cv2.copyMakeBorder(bar, 0, 0, 0, 56, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    for text, y in ((f"{high:.3g}", 14), (f"{low:.3g}", height - 6)):
        cv2.putText(
            labelled, text, (BAR_WIDTH + 4, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255)
        )
    return labelled


def with_banner(
    body: np.ndarray, score: float | None, decision: str, threshold: float
) -> np.ndarray:
    """``body`` under a banner in the decision's colour saying decision, score and threshold."""
    shown = "n/a" if score is None else f"{score:.4g}"
    banner = np.full((28, body.shape[1], 3), BANNER_COLOURS.get(decision, (0, 0, 0)), np.uint8)
    text = f"{decision}  score {shown}  threshold {threshold:.4g}"
    cv2.putText(banner, text, (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255))
    return np.vstack([banner, body])


def map_range(amap: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The map as finite float32 with its (low, high) range."""
    values = np.nan_to_num(np.asarray(amap, dtype=np.float32))
    return values, float(values.min()), float(values.max())


RENDER_MIN_SIDE = 256  # small model inputs are enlarged so the text stays legible


def render_overlay(
    view: np.ndarray, amap: np.ndarray, score: float | None, decision: str, threshold: float
) -> np.ndarray:
    """``view`` (BGR uint8: an image, a spectrogram) with ``amap`` (any size, resized to the
    view) as a JET overlay, its colour bar and the decision banner."""
    scale = max(1.0, RENDER_MIN_SIDE / min(view.shape[:2]))
    size = (round(view.shape[1] * scale), round(view.shape[0] * scale))
    view = cv2.resize(view, size, interpolation=cv2.INTER_LINEAR)
    values, low, high = map_range(amap)
    heat = ((values - low) / ((high - low) or 1.0) * 255.0).astype(np.uint8)
    heat = cv2.resize(heat, size, interpolation=cv2.INTER_LINEAR)
    overlay = cv2.addWeighted(view, 0.55, cv2.applyColorMap(heat, cv2.COLORMAP_JET), 0.45, 0)
    body = np.hstack([overlay, colour_bar(size[1], low, high)])
    return with_banner(body, score, decision, threshold)
