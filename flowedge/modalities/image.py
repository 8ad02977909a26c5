"""The one image preprocessing implementation, shared by training, evaluation and station.

numpy + OpenCV only (no torch), so the station runs it without the training
stack. Reading a spec from the model card guarantees the station feeds the
network exactly what it saw in training.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from flowedge.core.card import PreprocessSpec
from flowedge.core.errors import BadInputError
from flowedge.modalities.image_decode import (
    DEFAULT_LIMITS,
    DecodeLimits,
    decode_image_bytes,
    read_image_file,
)

_INTERPOLATION = {
    "area": cv2.INTER_AREA,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "nearest": cv2.INTER_NEAREST,
}


# "standardize" maps every image to ImageNet's average brightness and contrast (the means of
# the default channel statistics: 0.449, 0.226), so the backbone sees inputs in its trained range
STANDARD_MEAN = float(np.mean(PreprocessSpec.mean))
STANDARD_STD = float(np.mean(PreprocessSpec.std))
_FLAT_STD = 1e-3  # below this an image is flat (lens cap, dark frame): do not amplify noise


def read_image(path: str | Path, limits: DecodeLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode an image file to uint8/uint16 HxW or HxWxC (BGR), refusing hostile or broken
    files with a :class:`BadInputError` (see :mod:`flowedge.modalities.image_decode`)."""
    return read_image_file(path, limits)


def decode_image(
    data: bytes, name: str = "<bytes>", limits: DecodeLimits = DEFAULT_LIMITS
) -> np.ndarray:
    return decode_image_bytes(data, name, limits)


def to_tensor(image: np.ndarray, spec: PreprocessSpec, name: str = "<frame>") -> np.ndarray:
    """Map one decoded image (uint8/uint16/float, gray or BGR/BGRA) to CHW float32."""
    if image is None or not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
        raise BadInputError(
            f"image {name}: expected a 2-D or 3-D array, got {type(image).__name__}"
        )
    if image.ndim == 3 and image.shape[2] not in (1, 3, 4):
        raise BadInputError(f"image {name}: {image.shape[2]} channels; expected 1, 3 or 4")
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


def load_tensor(path: str | Path, spec: PreprocessSpec) -> np.ndarray:
    """Read and preprocess one image file."""
    return to_tensor(read_image(path), spec, name=str(path))
