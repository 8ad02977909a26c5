"""Synthetic inspection images with exact defect masks: the demo and test dataset (MVTec-AD
layout) and the export parity samples, from one generator.

Real inspection data cannot ship with the project, yet the demo and every test
need images with realistic structure: a machined part on a dark table, a brushed
metal surface, lighting that changes from shot to shot, and defects with exact
pixel masks. Everything is drawn with numpy and OpenCV from one seed, so the same
call always writes the same bytes.

Layout written under ``root``::

    train/good/000.png
    test/good/000.png
    test/<defect>/000.png            defect in scratch, spot, crack, missing
    ground_truth/<defect>/000_mask.png
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

DEFECTS = ("scratch", "spot", "crack", "missing")
MIN_SIZE = 32  # smaller images cannot show a part with a bore and a defect

_BACKGROUND = 0.08  # dark table under the part
_MIN_DEFECT_PIXELS = 6
_MAX_TRIES = 20
_TINT = np.array([0.93, 0.97, 1.0], dtype=np.float32)  # BGR: slightly bluish steel


def _plate_mask(size: int, rng: np.random.Generator) -> np.ndarray:
    """The part: a rounded rectangle with a centre bore, jittered by a pixel or two."""
    mask = np.zeros((size, size), np.uint8)
    margin = int(size * 0.12)
    dx, dy = rng.integers(-2, 3, size=2)
    radius = max(2, size // 10)
    x0, y0, x1, y1 = margin + dx, margin + dy, size - margin + dx, size - margin + dy
    cv2.rectangle(mask, (x0 + radius, y0), (x1 - radius, y1), 255, -1)
    cv2.rectangle(mask, (x0, y0 + radius), (x1, y1 - radius), 255, -1)
    for cx, cy in (
        (x0 + radius, y0 + radius),
        (x1 - radius, y0 + radius),
        (x0 + radius, y1 - radius),
        (x1 - radius, y1 - radius),
    ):
        cv2.circle(mask, (int(cx), int(cy)), radius, 255, -1)
    cv2.circle(mask, (size // 2 + int(dx), size // 2 + int(dy)), max(2, size // 9), 0, -1)
    return mask > 0


def _brushed_metal(size: int, rng: np.random.Generator) -> np.ndarray:
    """Grain along one direction (fixed per dataset, a few degrees of play per part)."""
    noise = rng.normal(0.0, 1.0, (size * 2, size * 2)).astype(np.float32)
    streaks = cv2.GaussianBlur(noise, (0, 0), sigmaX=max(2.0, size / 12), sigmaY=0.6)
    angle = float(rng.uniform(-4, 4))
    rot = cv2.getRotationMatrix2D((size, size), angle, 1.0)
    streaks = cv2.warpAffine(streaks, rot, (size * 2, size * 2), borderMode=cv2.BORDER_REFLECT)
    streaks = streaks[size // 2 : size // 2 + size, size // 2 : size // 2 + size]
    streaks /= streaks.std() + 1e-6
    fine = rng.normal(0.0, 1.0, (size, size)).astype(np.float32)
    return 0.55 + 0.05 * streaks + 0.015 * fine


def _lighting(size: int, rng: np.random.Generator) -> np.ndarray:
    """A soft linear gradient plus overall gain: the lamp and exposure vary a little."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    gx, gy = rng.uniform(-0.15, 0.15, size=2)
    gain = rng.uniform(0.9, 1.1)
    return gain * (1.0 + gx * xx + gy * yy)


def _polyline(
    size: int, rng: np.random.Generator, steps: int, turn: float, step_len: float
) -> np.ndarray:
    """A random walk with bounded turning: straight-ish for scratches, jagged for cracks."""
    point = rng.uniform(size * 0.3, size * 0.7, size=2)
    heading = rng.uniform(0, 2 * np.pi)
    points = [point.copy()]
    for _ in range(steps):
        heading += rng.normal(0.0, turn)
        point = point + step_len * np.array([np.cos(heading), np.sin(heading)])
        points.append(point.copy())
    return np.round(np.array(points)).astype(np.int32)


def _scratch(image: np.ndarray, part: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = image.shape[0]
    mask = np.zeros((size, size), np.uint8)
    points = _polyline(size, rng, steps=6, turn=0.08, step_len=size / 14)
    cv2.polylines(mask, [points], False, 255, thickness=max(1, size // 64))
    region = (mask > 0) & part
    image[region] += rng.choice([-1.0, 1.0]) * rng.uniform(0.25, 0.35)
    return region


def _spot(image: np.ndarray, part: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = image.shape[0]
    mask = np.zeros((size, size), np.uint8)
    centre = tuple(int(v) for v in rng.uniform(size * 0.25, size * 0.75, size=2))
    axes = tuple(int(v) for v in rng.uniform(size * 0.03, size * 0.07, size=2) + 1)
    cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
    region = (mask > 0) & part
    soft = cv2.GaussianBlur(region.astype(np.float32), (0, 0), sigmaX=1.0)
    image -= rng.uniform(0.25, 0.4) * soft  # stains and pits read dark under a diffuse lamp
    return region


def _crack(image: np.ndarray, part: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = image.shape[0]
    mask = np.zeros((size, size), np.uint8)
    trunk = _polyline(size, rng, steps=10, turn=0.6, step_len=size / 28)
    cv2.polylines(mask, [trunk], False, 255, thickness=1)
    branch_from = trunk[int(rng.integers(2, len(trunk) - 2))]
    branch = _polyline(size, rng, steps=4, turn=0.6, step_len=size / 32)
    branch = branch - branch[0] + branch_from
    cv2.polylines(mask, [branch], False, 255, thickness=1)
    region = (mask > 0) & part
    image[region] -= rng.uniform(0.3, 0.45)
    return region


def _missing(image: np.ndarray, part: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A chipped edge: a disc bitten out of the part's border shows the table."""
    size = image.shape[0]
    edge = (
        cv2.morphologyEx(part.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    )
    yy, xx = np.mgrid[0:size, 0:size]
    outer = np.maximum(np.abs(yy - size / 2), np.abs(xx - size / 2)) > size * 0.3  # not the bore
    ey, ex = np.nonzero(edge & outer)
    pick = int(rng.integers(len(ey)))
    centre = (int(ex[pick]), int(ey[pick]))
    mask = np.zeros((size, size), np.uint8)
    cv2.circle(mask, centre, int(rng.uniform(size * 0.06, size * 0.1)), 255, -1)
    region = (mask > 0) & part
    image[region] = _BACKGROUND
    return region


_RENDER: dict[str, Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]] = {
    "scratch": _scratch,
    "spot": _spot,
    "crack": _crack,
    "missing": _missing,
}


def render_sample(
    size: int, rng: np.random.Generator, defect: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One BGR uint8 image and its uint8 mask (255 = defective pixel)."""
    part = _plate_mask(size, rng)
    gray = np.where(part, _brushed_metal(size, rng), _BACKGROUND).astype(np.float32)
    region = np.zeros((size, size), bool)
    if defect is not None:
        clean = gray.copy()
        for _ in range(_MAX_TRIES):  # a defect drawn off the part is no defect: draw again
            region = _RENDER[defect](gray, part, rng)
            if region.sum() >= _MIN_DEFECT_PIXELS:
                break
            gray[:] = clean
    gray *= _lighting(size, rng)
    gray += rng.normal(0.0, 0.01, gray.shape).astype(np.float32)  # sensor noise
    bgr = np.clip(gray[:, :, None] * _TINT * 255.0, 0, 255).astype(np.uint8)
    return bgr, region.astype(np.uint8) * 255


def render_samples(size: int, n_normal: int, n_anomalous: int, seed: int = 0) -> list[np.ndarray]:
    """BGR uint8 images: ``n_normal`` good parts, then ``n_anomalous`` with each defect in turn."""
    rng = np.random.default_rng(seed)
    defects = [None] * n_normal + [DEFECTS[i % len(DEFECTS)] for i in range(n_anomalous)]
    return [render_sample(size, rng, defect)[0] for defect in defects]


def generate_dataset(
    root: str | Path,
    n_train: int = 60,
    n_test_good: int = 20,
    n_test_defect: int = 10,
    size: int = 128,
    seed: int = 0,
    defects: tuple[str, ...] = DEFECTS,
) -> Path:
    """Write the dataset under ``root`` and return it; ``n_test_defect`` is per defect type."""
    unknown = sorted(set(defects) - set(_RENDER))
    if unknown:
        raise ValueError(f"unknown defect type(s) {unknown}; choose from {list(DEFECTS)}")
    if size < MIN_SIZE:
        raise ValueError(f"size {size} is too small to draw a part; use {MIN_SIZE} px or more")
    root = Path(root)
    plan: list[tuple[str, str | None, int]] = [
        ("train/good", None, n_train),
        ("test/good", None, n_test_good),
    ]
    plan += [(f"test/{name}", name, n_test_defect) for name in defects]
    for split, (folder, defect, count) in enumerate(plan):
        out = root / folder
        out.mkdir(parents=True, exist_ok=True)
        if defect is not None:
            (root / "ground_truth" / defect).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            rng = np.random.default_rng([seed, split, index])
            image, mask = render_sample(size, rng, defect)
            cv2.imwrite(str(out / f"{index:03d}.png"), image)
            if defect is not None:
                cv2.imwrite(str(root / "ground_truth" / defect / f"{index:03d}_mask.png"), mask)
    log.info(
        "synthetic dataset written to %s (%d train, %d test good, %d x %d defects)",
        root,
        n_train,
        n_test_good,
        len(defects),
        n_test_defect,
    )
    return root
