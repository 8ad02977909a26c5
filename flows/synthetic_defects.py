"""Synthetic defects for training a pixel classifier on normal images only (paper 001, DRAEM/MemSeg).

A defect is a region of another image pasted into a normal one: the region is a
thresholded, rotated Perlin-noise mask (optionally limited to the part by an Otsu
object mask), its content either a procedural texture ("apparent" defects) or another
training image of the same product, photometrically altered ("subtle" defects). The
label is soft: how much the pasted region differs from what it covers.

Everything works on preprocessed float images (C x H x W, any intensity scale), so the
defects are made after the station's own preprocessing, and a seeded
``numpy.random.Generator`` makes every mask and defect reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

ObjectMask = Literal["none", "bright", "dark"]


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6 - 15) + 10)


def perlin_noise(
    shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """2-D gradient (Perlin) noise of ``shape`` with ``res`` lattice cells per axis, about [-1, 1].

    Sides need not be multiples of ``res``: the noise is made on the next multiple and cropped.
    """
    cells = (math.ceil(shape[0] / res[0]), math.ceil(shape[1] / res[1]))
    full = (cells[0] * res[0], cells[1] * res[1])
    ys = np.arange(full[0]) * res[0] / full[0]
    xs = np.arange(full[1]) * res[1] / full[1]
    grid = np.stack(np.meshgrid(ys % 1, xs % 1, indexing="ij"), axis=-1)
    angles = 2 * math.pi * rng.random((res[0] + 1, res[1] + 1))
    gradients = np.stack((np.cos(angles), np.sin(angles)), axis=-1)

    def corner(dy: int, dx: int) -> np.ndarray:
        g = gradients[dy : dy + res[0], dx : dx + res[1]]
        g = np.repeat(np.repeat(g, cells[0], axis=0), cells[1], axis=1)
        return ((grid - (dy, dx)) * g).sum(axis=-1)

    t = _fade(grid)
    top = corner(0, 0) * (1 - t[..., 0]) + corner(1, 0) * t[..., 0]
    bottom = corner(0, 1) * (1 - t[..., 0]) + corner(1, 1) * t[..., 0]
    noise = math.sqrt(2) * (top * (1 - t[..., 1]) + bottom * t[..., 1])
    return noise[: shape[0], : shape[1]]


def perlin_mask(
    shape: tuple[int, int], rng: np.random.Generator, max_exponent: int = 5, threshold: float = 0.5
) -> np.ndarray:
    """A binary (0/1 float32) defect pattern: Perlin noise at 2^U{0..max_exponent} cells per
    axis (independently), rotated by U(-90, 90) degrees, thresholded (the paper's code)."""
    limit = [min(max_exponent, int(math.log2(side))) for side in shape]
    res = (2 ** int(rng.integers(0, limit[0] + 1)), 2 ** int(rng.integers(0, limit[1] + 1)))
    noise = perlin_noise(shape, res, rng).astype(np.float32)
    height, width = shape
    turn = cv2.getRotationMatrix2D((width / 2, height / 2), float(rng.uniform(-90, 90)), 1.0)
    noise = cv2.warpAffine(noise, turn, (width, height), borderMode=cv2.BORDER_REFLECT)
    return (noise > threshold).astype(np.float32)


def object_mask(image: np.ndarray, side: ObjectMask) -> np.ndarray:
    """Where the part is (0/1 float32): Otsu's threshold on the blurred grey image, opened and
    closed; ``side`` says whether the part is the ``bright`` or the ``dark`` class.

    Otsu splits the grey levels in two; on a part in front of a background that is part and
    background. When the part fills the frame (MTD's tiles) it splits the texture itself, so
    such data uses ``none`` (the whole image may carry defects).
    """
    if side == "none":
        return np.ones(image.shape[-2:], dtype=np.float32)
    grey = image.mean(axis=0)
    span = float(grey.max() - grey.min()) or 1.0
    grey8 = np.round((grey - grey.min()) * (255.0 / span)).astype(np.uint8)
    grey8 = cv2.GaussianBlur(grey8, (3, 3), 0)
    _, mask = cv2.threshold(grey8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    if side == "dark":
        mask = 255 - mask
    kernel = np.ones((3, 3), np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    return (mask > 0).astype(np.float32)


def procedural_texture(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """An "apparent" defect source without a texture database: Perlin noise at a random
    frequency, random contrast and offset, the same pattern in every channel with a
    channel gain of 0.8-1.2 (offline stand-in for the paper's DTD images)."""
    channels, height, width = shape
    exponent = int(rng.integers(1, 7))
    noise = perlin_noise((height, width), (2**exponent, 2**exponent), rng).astype(np.float32)
    noise = noise / (noise.std() + 1e-6) * rng.uniform(0.5, 2.0) + rng.uniform(-1.5, 1.5)
    gains = rng.uniform(0.8, 1.2, size=(channels, 1, 1)).astype(np.float32)
    return noise[None] * gains


def altered(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A "subtle" defect source: another normal image with 2 of 5 photometric/geometric changes
    (negation, contrast, brightness, flips), the paper code's augmentation list in spirit."""
    out = image
    for op in rng.choice(5, size=2, replace=False):
        if op == 0:
            out = out.mean() - (out - out.mean())
        elif op == 1:
            out = (out - out.mean()) * rng.uniform(0.5, 2.0) + out.mean()
        elif op == 2:
            out = out + rng.uniform(-1.0, 1.0)
        elif op == 3:
            out = out[:, ::-1]
        else:
            out = out[:, :, ::-1]
    return np.ascontiguousarray(out, dtype=np.float32)


def blend(image: np.ndarray, source: np.ndarray, mask: np.ndarray, beta: float) -> np.ndarray:
    """Paste ``source`` into ``image`` inside ``mask``, keeping a fraction ``beta`` of the image
    there: x(1-M) + (1-beta) src M + beta x M. Outside the mask the image is unchanged."""
    return image * (1 - mask) + ((1 - beta) * source + beta * image) * mask


def soft_label(image: np.ndarray, blended: np.ndarray, mask: np.ndarray, gain: float) -> np.ndarray:
    """One defect probability for the whole pasted region: the mean over the region of
    sigmoid(gain * |channel-mean difference|), so a region that barely changed the image gets
    a label near 0.5 and a striking one near 1 (0 outside the mask)."""
    inside = mask > 0
    if not inside.any():
        return np.zeros_like(mask)
    diff = np.abs((blended - image).mean(axis=0))[inside]
    value = float(np.mean(1.0 / (1.0 + np.exp(-gain * diff))))
    return mask * value


@dataclass(frozen=True)
class DefectRecipe:
    """How defects are made (the detector config's keys, unpacked)."""

    in_domain_p: float = 0.5  # the source is another training image, else a texture
    max_beta: float = 0.8  # beta ~ U(0, max_beta): how much of the normal image shows through
    perlin_max_exponent: int = 5
    object_side: ObjectMask = "none"
    label_gain: float = 2.0


def synthesize(
    images: np.ndarray, rng: np.random.Generator, recipe: DefectRecipe
) -> tuple[np.ndarray, np.ndarray]:
    """Defective versions of a batch (B x C x H x W) and their soft labels (B x 1 x H x W).

    The in-domain source of image k is another image of the batch (a batch of one uses
    itself, altered). An empty mask leaves the image normal with label 0, as in the
    paper's code.
    """
    batch, channels, height, width = images.shape
    out = images.astype(np.float32).copy()
    labels = np.zeros((batch, 1, height, width), dtype=np.float32)
    for k in range(batch):
        mask = perlin_mask((height, width), rng, recipe.perlin_max_exponent)
        mask = mask * object_mask(images[k], recipe.object_side)
        if rng.random() < recipe.in_domain_p:
            other = (k + 1 + int(rng.integers(0, max(batch - 1, 1)))) % batch
            source = altered(images[other], rng)
        else:
            source = procedural_texture((channels, height, width), rng)
        blended = blend(images[k], source, mask, float(rng.uniform(0, recipe.max_beta)))
        out[k] = blended
        labels[k, 0] = soft_label(images[k], blended, mask, recipe.label_gain)
    return out, labels
