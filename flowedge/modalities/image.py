"""The image modality: the one image reader, preprocessing and overlay, for training,
evaluation, export checks and the station.

numpy + OpenCV only (no torch), so the station runs it without the training
stack. Reading the :class:`ImageInput` spec from the model card guarantees the
station feeds the network exactly what it saw in training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from flowedge.core.card import ImageInput
from flowedge.core.errors import BadInputError
from flowedge.modalities import image_synthetic
from flowedge.modalities.base import Modality
from flowedge.modalities.image_decode import (
    DEFAULT_LIMITS,
    DecodeLimits,
    decode_image_bytes,
    read_image_file,
)
from flowedge.modalities.overlay import render_overlay

_INTERPOLATION = {
    "area": cv2.INTER_AREA,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "nearest": cv2.INTER_NEAREST,
}


# "standardize" maps every image to ImageNet's average brightness and contrast (the means of
# the default channel statistics: 0.449, 0.226), so the backbone sees inputs in its trained range
STANDARD_MEAN = float(np.mean(ImageInput.mean))
STANDARD_STD = float(np.mean(ImageInput.std))
_FLAT_STD = 1e-3  # below this an image is flat (lens cap, dark frame): do not amplify noise


def read_image(path: str | Path, limits: DecodeLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode an image file to uint8/uint16 HxW or HxWxC (BGR), refusing hostile or broken
    files with a :class:`BadInputError` (see :mod:`flowedge.modalities.image_decode`)."""
    return read_image_file(path, limits)


def decode_image(
    data: bytes, name: str = "<bytes>", limits: DecodeLimits = DEFAULT_LIMITS
) -> np.ndarray:
    return decode_image_bytes(data, name, limits)


def validate_image(image: Any, name: str) -> None:
    """A decoded image is a 2-D (gray) or 3-D array with 1, 3 or 4 channels."""
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
        raise BadInputError(
            f"image {name}: expected a 2-D or 3-D array, got {type(image).__name__}"
        )
    if image.ndim == 3 and image.shape[2] not in (1, 3, 4):
        raise BadInputError(f"image {name}: {image.shape[2]} channels; expected 1, 3 or 4")


def to_tensor(image: np.ndarray, spec: ImageInput, name: str = "<frame>") -> np.ndarray:
    """Map one decoded image (uint8/uint16/float, gray or BGR/BGRA) to CHW float32."""
    validate_image(image, name)
    if image.dtype == np.uint8:
        scaled = image.astype(np.float32) / 255.0
    elif image.dtype == np.uint16:
        scaled = image.astype(np.float32) / 65535.0
    else:
        scaled = image.astype(np.float32)
    if not np.isfinite(scaled).all():
        raise BadInputError(f"image {name}: contains NaN or Inf values; check the source")
    if scaled.ndim == 3 and scaled.shape[2] == 1:
        scaled = scaled[:, :, 0]
    if scaled.ndim == 3:
        scaled = cv2.cvtColor(
            scaled, cv2.COLOR_BGRA2RGB if scaled.shape[2] == 4 else cv2.COLOR_BGR2RGB
        )
    interp = _INTERPOLATION[spec.interpolation]
    resized = cv2.resize(scaled, (spec.width, spec.height), interpolation=interp)
    if spec.intensity == "standardize":
        resized = standardize_intensity(resized)
    if resized.ndim == 2:
        resized = np.repeat(resized[:, :, None], spec.channels, axis=2)
    elif spec.channels == 1:
        resized = cv2.cvtColor(resized, cv2.COLOR_RGB2GRAY)[:, :, None]
    mean = np.asarray(spec.mean, dtype=np.float32)[: spec.channels]
    std = np.asarray(spec.std, dtype=np.float32)[: spec.channels]
    normalised = (resized - mean) / std
    return np.ascontiguousarray(normalised.transpose(2, 0, 1), dtype=np.float32)


def standardize_intensity(image: np.ndarray) -> np.ndarray:
    """Give an image a fixed mean and standard deviation over all its pixels and channels.

    Removes the global gain and offset of the illumination (lamp ageing, exposure
    drift, part-to-part reflectance), which otherwise dominates the features and
    hides small defects; colour ratios are kept because all channels share one
    mean and scale.
    """
    centred = image - float(image.mean())
    std = max(float(np.sqrt(np.mean(centred * centred))), _FLAT_STD)
    centred *= STANDARD_STD / std  # in place: this runs on every frame
    centred += STANDARD_MEAN
    return centred


def input_view(tensor: np.ndarray, spec: ImageInput) -> np.ndarray:
    """The network's input as a BGR uint8 picture (the channel normalisation undone)."""
    mean = np.asarray(spec.mean, dtype=np.float32)[: spec.channels, None, None]
    std = np.asarray(spec.std, dtype=np.float32)[: spec.channels, None, None]
    image = np.clip((tensor * std + mean).transpose(1, 2, 0) * 255.0, 0, 255).astype(np.uint8)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)


def channel_statistics(
    files: Sequence[Path], settings: Mapping[str, Any]
) -> dict[str, tuple[float, ...]]:
    """Per-channel ``{"mean", "std"}`` of the training images as the spec resizes them, for
    a detector of the image itself (no backbone: ImageNet's statistics mean nothing to it)
    whose settings leave them out; what the settings give wins. Unreadable files are
    skipped (training skips them too)."""
    if "mean" in settings and "std" in settings:
        return {}
    probe = ImageInput(**{**settings, "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)})
    count, total, squares = 0, 0.0, 0.0
    for path in files:
        try:
            pixels = MODALITY.load(path, probe).reshape(probe.channels, -1).astype(np.float64)
        except BadInputError:
            continue
        count += pixels.shape[1]
        total, squares = total + pixels.sum(axis=1), squares + np.square(pixels).sum(axis=1)
    if not count:
        raise ValueError(f"none of the {len(files)} training image(s) is readable")
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
    fitted = {
        "mean": tuple(round(float(v), 6) for v in mean),
        "std": tuple(round(max(float(v), 1e-3), 6) for v in std),
    }
    return {key: value for key, value in fitted.items() if key not in settings}


class ImageModality(Modality[np.ndarray, ImageInput, DecodeLimits]):
    """Camera frames and image files (PNG, JPEG, BMP, TIFF)."""

    name = "image"
    extensions = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})

    def limits(self, max_bytes: int, max_pixels: int) -> DecodeLimits:
        return DecodeLimits(max_bytes, max_pixels)

    def read(self, path: str | Path, limits: DecodeLimits | None = None) -> np.ndarray:
        return read_image(path, limits or DEFAULT_LIMITS)

    def decode(self, data: bytes, name: str, limits: DecodeLimits | None = None) -> np.ndarray:
        return decode_image(data, name, limits or DEFAULT_LIMITS)

    def validate(self, raw: Any, name: str) -> None:
        validate_image(raw, name)

    def training_spec(self, files: Sequence[Path], settings: Mapping[str, Any]) -> ImageInput:
        """The settings, with the channel statistics measured on the training images unless
        they set them (backbone detectors keep their backbone's: they do not come here)."""
        return ImageInput(**{**settings, **channel_statistics(files, settings)})

    def preprocess(
        self, raw: Any, spec: ImageInput, name: str, limits: DecodeLimits | None = None
    ) -> np.ndarray:
        return to_tensor(self.as_raw(raw, name, limits), spec, name)

    def display(
        self, path: str | Path, spec: ImageInput, limits: DecodeLimits | None = None
    ) -> np.ndarray:
        """The image as RGB uint8 at the model's input size."""
        image = read_image(path, limits or DEFAULT_LIMITS)
        if image.dtype != np.uint8:
            image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
        if image.ndim == 2 or image.shape[2] == 1:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        else:
            image = cv2.cvtColor(
                image, cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
            )
        return cv2.resize(image, (spec.width, spec.height), interpolation=cv2.INTER_AREA)

    def synthesize(
        self,
        root: str | Path,
        n_train: int,
        n_test_good: int,
        n_test_defect: int,
        seed: int = 0,
        size: int = 128,
    ) -> Path:
        return image_synthetic.generate_dataset(
            root, n_train, n_test_good, n_test_defect, size=size, seed=seed
        )

    def synthetic_batch(
        self, spec: ImageInput, n_normal: int, n_anomalous: int, seed: int = 0
    ) -> np.ndarray:
        images = image_synthetic.render_samples(
            max(spec.height, spec.width, image_synthetic.MIN_SIZE), n_normal, n_anomalous, seed
        )
        return np.stack([to_tensor(img, spec, f"synthetic-{i}") for i, img in enumerate(images)])

    def render(
        self,
        input_tensor: np.ndarray,
        amap: np.ndarray,
        spec: ImageInput,
        score: float | None,
        decision: str,
        threshold: float,
    ) -> np.ndarray:
        return render_overlay(input_view(input_tensor, spec), amap, score, decision, threshold)


MODALITY = ImageModality()
