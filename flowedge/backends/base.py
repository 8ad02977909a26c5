"""One interface for every inference backend (PyTorch reference, ONNX Runtime, TensorRT).

A backend takes a preprocessed NCHW float32 batch (numpy) and returns scores
and anomaly maps as numpy arrays, so the pipeline never sees a framework type.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from flowedge.core.card import ModelCard


def as_model_batch(batch: np.ndarray, input_chw: tuple[int, ...], source: str) -> np.ndarray:
    """Contiguous float32 [B, C, H, W] matching the model's input, or a ValueError naming both shapes."""
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    if batch.ndim != 4 or tuple(batch.shape[1:]) != tuple(input_chw):
        raise ValueError(
            f"{source}: input batch of shape {batch.shape}, the model expects "
            f"[B, {', '.join(map(str, input_chw))}]"
        )
    return batch


class Backend(ABC):
    """Loaded model plus its card. Thread use: one backend per infer thread."""

    name: str = ""

    def __init__(self, card: ModelCard) -> None:
        self.card = card

    @property
    def input_chw(self) -> tuple[int, int, int]:
        """The (C, H, W) every input batch must have, from the card's preprocessing spec."""
        spec = self.card.preprocess
        return (spec.channels, spec.height, spec.width)

    @property
    def max_batch(self) -> int:
        """The largest batch the backend accepts (an engine's profile may cap it)."""
        return 64

    @abstractmethod
    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (scores [B] float32, maps [B, H, W] float32) for a [B, C, H, W] batch."""

    def close(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Release device memory or sessions; the default has nothing to release."""
