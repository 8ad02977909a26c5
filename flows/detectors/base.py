"""The detector interface every flow (image, audio, time series) implements.

A detector maps a preprocessed batch to a sample-level score (higher = more
anomalous) and an anomaly map shaped like its input (image: H x W; series:
signals x steps). Inference is split in three steps so that training can cache
frozen features and export can keep the reductions in fp32:

``features(x)``  the backbone (frozen ones are cacheable; no gradients)
``latents(f)``   the learned part, up to the latent tensors z (fp16-safe)
``reduce(z)``    squares and sums to score and map (must stay fp32)

Training is not the detector's: :mod:`flows.fit` runs the loop. A detector says
what the loop must give it (class attributes) and either a ``loss`` to minimise
(:class:`GradientDetector`) or a closed-form ``fit`` (:class:`ClosedFormDetector`).
A gradient detector whose parts must be trained one after the other (AST: the
teacher flow, then the student that regresses it) lists them as
:class:`TrainingPhase` s; the loop runs them in order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from flowedge.core.card import ImageInput, InputSpec, ScoreSpec
from flowedge.core.validation import Strict
from flowedge.flows.config import ImageDetectorConfig

Features = list[torch.Tensor]
Latents = list[torch.Tensor]
# one training batch: features and, for detectors that need them, labels (1 = anomalous)
TrainBatch = tuple[Features, torch.Tensor | None]
BatchSource = Callable[[], Iterable[TrainBatch]]  # one call, one epoch
ProgressFn = Callable[[dict[str, float]], None]
LossFn = Callable[[Features, torch.Tensor | None], torch.Tensor]


@dataclass(frozen=True)
class TrainingPhase:
    """One stage of gradient training: the loss it minimises and the only parameters it updates
    (the optimiser's parameter groups, each ``{"params": [...], "lr": ...}``).

    ``epochs`` None: the training section's ``epochs``. Each phase gets a fresh optimiser
    and learning-rate schedule, so a later phase starts from the configured rate.
    """

    name: str
    loss: LossFn
    groups: list[dict[str, Any]]
    epochs: int | None = None

    @property
    def parameters(self) -> list[nn.Parameter]:
        return [p for group in self.groups for p in group["params"]]


class Detector(nn.Module, ABC):
    """Base class; subclasses register with :func:`flows.detectors.registry.register_detector`."""

    name: ClassVar[str] = ""  # set by the registry
    config_model: ClassVar[type[Strict]]  # set by the registry
    # build_detector gives the detector a frozen timm feature extractor (audio and
    # series detectors without one set False and get backbone=None)
    needs_backbone: ClassVar[bool] = True
    # features() does not change during training (frozen backbone, no augmentation), so the
    # loop computes them once; a detector that fine-tunes its backbone sets False
    caches_features: ClassVar[bool] = True
    needs_labels: ClassVar[bool] = False  # training batches carry labels instead of None
    uses_augmentation: ClassVar[bool] = False  # the loop may augment inputs before features()

    def __init__(
        self,
        config: Strict,
        backbone: nn.Module | None,
        backbone_info: dict[str, Any],
    ) -> None:
        super().__init__()
        self.config, self.backbone, self.backbone_info = config, backbone, backbone_info

    def input_spec(self) -> InputSpec:
        """What the card records as the input: images as configured (grayscale is replicated to
        3 channels by the preprocessing); detectors of other modalities override this."""
        if not isinstance(self.config, ImageDetectorConfig):
            raise NotImplementedError(f"{type(self).__name__} must define its input_spec()")
        height, width = self.config.input_hw
        return ImageInput(
            height=height,
            width=width,
            interpolation=self.config.interpolation,
            intensity=self.config.intensity,
        )

    def map_shape(self) -> tuple[int, ...]:
        """Shape of one anomaly map, from the input spec (never from a batch's shape)."""
        return self.input_spec().map_shape

    @abstractmethod
    def features(self, x: torch.Tensor) -> Features:
        """Feature extraction for a preprocessed batch."""

    @abstractmethod
    def latents(self, feats: Features) -> Latents:
        """Map features to latent tensors (for flows: z per scale)."""

    @abstractmethod
    def reduce(
        self, latents: Latents, map_shape: tuple[int, ...]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (score [B], map [B, *map_shape]), computed in fp32."""

    @abstractmethod
    def score_spec(self) -> ScoreSpec:
        """What the score means, written into the model card."""

    def graph_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What an exported graph computes (features -> latents -> reduce), and what export
        parity compares the graph with."""
        return self.reduce(self.latents(self.features(x)), self.map_shape())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The graph's outputs; a detector may add here what a graph cannot hold (DifferNet's
        autograd map), for evaluation and the torch backend."""
        return self.graph_outputs(x)


class GradientDetector(Detector):
    """Trained by :func:`flows.fit.fit_by_gradient`: it minimises ``loss`` over the batches."""

    @abstractmethod
    def loss(self, feats: Features, labels: torch.Tensor | None) -> torch.Tensor:
        """The scalar training objective of one batch."""

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def parameter_groups(self, lr: float) -> list[dict[str, Any]]:
        """The optimiser's parameter groups; a detector that fine-tunes a pretrained part
        gives it a smaller learning rate here."""
        return [{"params": self.trainable_parameters(), "lr": lr}]

    def after_fit(self, batches: BatchSource) -> dict[str, Any]:
        """Called once after the last epoch, in eval mode without gradients: statistics the
        detector derives from its training data (e.g. score normalisation); returns them for
        the training summary. None by default."""
        return {}

    def training_phases(self, lr: float) -> list[TrainingPhase]:
        """The phases the loop runs in order; one by default: ``loss`` over
        :meth:`parameter_groups`. Detectors trained in stages override this."""
        return [TrainingPhase("fit", self.loss, self.parameter_groups(lr))]


class ClosedFormDetector(Detector):
    """Fitted in one pass over the training batches (statistics, no gradients)."""

    @abstractmethod
    def fit(self, batches: BatchSource, progress: ProgressFn | None = None) -> dict[str, Any]:
        """Estimate the parameters; returns a training summary for the model card."""
