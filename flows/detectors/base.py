"""The detector interface every flow (image, audio, time series) implements.

A detector is fitted on features of normal samples only and maps a
preprocessed batch to an image-level score (higher = more anomalous) and an
anomaly map. The work is split in three steps so that training can cache the
frozen backbone's features and export can keep the reductions in fp32:

``features(x)``  frozen backbone (cacheable; no gradients)
``latents(f)``   the learned part, up to the latent tensors z (fp16-safe)
``reduce(z)``    squares and sums to score and map (must stay fp32)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from flowedge.core.card import ImageInput, ScoreSpec
from flowedge.flows.config import DetectorConfig

Features = list[torch.Tensor]
Latents = list[torch.Tensor]
ProgressFn = Callable[[dict[str, float]], None]


class Detector(nn.Module, ABC):
    """Base class; subclasses register themselves in :mod:`flows.detectors`."""

    name: str = ""
    det: DetectorConfig

    def preprocess_spec(self) -> ImageInput:
        """Image input as configured; grayscale is replicated to 3 channels by modalities.image."""
        return ImageInput(
            height=self.det.image_size,
            width=self.det.image_size,
            interpolation=self.det.interpolation,
            intensity=self.det.intensity,
        )

    @abstractmethod
    def features(self, x: torch.Tensor) -> Features:
        """Frozen feature extraction for a preprocessed NCHW batch."""

    @abstractmethod
    def latents(self, feats: Features) -> Latents:
        """Map features to latent tensors (for flows: z per scale)."""

    @abstractmethod
    def reduce(
        self, latents: Latents, input_hw: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (score [B], map [B, H, W] at the input resolution), computed in fp32."""

    @abstractmethod
    def fit(
        self,
        batches: Callable[[], Iterable[Features]],
        epochs: int,
        progress: ProgressFn | None = None,
    ) -> dict[str, Any]:
        """Fit on cached features of normal samples; returns a training summary."""

    @abstractmethod
    def score_spec(self) -> ScoreSpec:
        """What the score means, written into the model card."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.reduce(self.latents(self.features(x)), (x.shape[-2], x.shape[-1]))
