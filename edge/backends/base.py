"""One interface for every inference backend (PyTorch reference, ONNX Runtime, TensorRT).

A backend takes a preprocessed NCHW float32 batch (numpy) and returns scores
and anomaly maps as numpy arrays, so the pipeline never sees a framework type.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from flows.card import ModelCard


class Backend(ABC):
    """Loaded model plus its card. Thread use: one backend per infer thread."""

    name: str = ""

    def __init__(self, card: ModelCard) -> None:
        self.card = card

    @property
    def max_batch(self) -> int:
        """The largest batch the backend accepts (an engine's profile may cap it)."""
        return 64

    @abstractmethod
    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (scores [B] float32, maps [B, H, W] float32) for a [B, C, H, W] batch."""

    def close(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Release device memory or sessions; the default has nothing to release."""
