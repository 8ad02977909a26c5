"""One interface for every inference backend (PyTorch reference, ONNX Runtime, TensorRT).

A backend takes a preprocessed float32 batch [B, *input_shape] (numpy) and returns
scores [B] and anomaly maps [B, *map_shape] as numpy arrays, so the pipeline never
sees a framework type, and never assumes images: the shapes come from the card.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from flowedge.core.card import ModelCard


def as_model_batch(batch: np.ndarray, input_shape: tuple[int, ...], source: str) -> np.ndarray:
    """Contiguous float32 [B, *input_shape], or a ValueError naming both shapes."""
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    if tuple(batch.shape[1:]) != tuple(input_shape):
        raise ValueError(
            f"{source}: input batch of shape {batch.shape}, the model expects "
            f"[B, {', '.join(map(str, input_shape))}]"
        )
    return batch


@dataclass(frozen=True)
class Tuning:
    """Knobs beyond the thread count that only some runtimes have (the table's ``tunable``):
    a runtime that has none refuses them rather than ignore them."""

    streams: int = 0  # inference streams run in parallel (OpenVINO NUM_STREAMS); 0: its default
    hint: str = ""  # "latency" or "throughput" (OpenVINO PERFORMANCE_HINT); "": its default

    @property
    def is_default(self) -> bool:
        return self == Tuning()


class Backend(ABC):
    """Loaded model plus its card. Thread use: one backend per infer thread."""

    name: str = ""

    def __init__(self, card: ModelCard, calibration: dict[str, Any] | None = None) -> None:
        self.card = card
        # {"threshold", "sha256"} bound at export (ONNX metadata, engine metadata), else None:
        # the threshold a station or the API uses when it is given none
        self.calibration = calibration

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one sample in an input batch, from the card's input spec."""
        return self.card.input.tensor_shape

    @property
    def max_batch(self) -> int:
        """The largest batch the backend accepts (an engine's profile may cap it)."""
        return 64

    @abstractmethod
    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (scores [B], maps [B, *map_shape]) float32 for a [B, *input_shape] batch."""

    def close(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Release device memory or sessions; the default has nothing to release."""
