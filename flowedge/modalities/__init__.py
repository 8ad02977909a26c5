"""Preprocessors by modality: a payload becomes the model's CHW float32 input.

The image preprocessor is :func:`flows.preprocess.to_tensor` with the card's
spec, so the station feeds the network exactly what training did. Audio or
robot-log preprocessors register here under their modality name.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from flowedge.core.card import PreprocessSpec
from flowedge.core.errors import BadInputError
from flowedge.modalities.image import decode_image, read_image, to_tensor
from flowedge.modalities.image_decode import DEFAULT_LIMITS, DecodeLimits

Preprocessor = Callable[..., np.ndarray]  # (payload, spec, name, limits=DecodeLimits)

_REGISTRY: dict[str, Preprocessor] = {}


def register(modality: str) -> Callable[[Preprocessor], Preprocessor]:
    def add(function: Preprocessor) -> Preprocessor:
        _REGISTRY[modality] = function
        return function

    return add


def get_preprocessor(modality: str) -> Preprocessor:
    try:
        return _REGISTRY[modality]
    except KeyError:
        raise BadInputError(
            f"no preprocessor for modality {modality!r} (known: {', '.join(sorted(_REGISTRY))}); "
            "the model card and the source disagree"
        ) from None


@register("image")
def image_to_tensor(
    payload: object, spec: PreprocessSpec, name: str, limits: DecodeLimits = DEFAULT_LIMITS
) -> np.ndarray:
    """Accept a decoded frame, encoded bytes or a file path (decoded within ``limits``)."""
    if isinstance(payload, (bytes, bytearray)):
        payload = decode_image(bytes(payload), name=name, limits=limits)
    elif isinstance(payload, (str, Path)):
        payload = read_image(payload, limits)
    if not isinstance(payload, np.ndarray):
        raise BadInputError(f"image {name}: unsupported payload type {type(payload).__name__}")
    return to_tensor(payload, spec, name=name)
