"""The thesis's closed-form baselines for whole cycles (§8.2.1), in the same harness as MTS-Flow.

Both see the same standardised, padded cycles as MTS-Flow and need no training
loop. Their maps are exact per signal and time step (squared reconstruction error,
absolute difference to the nearest cycle), so they also say which signals deviate.
PCA works on any modality's tensor alike (``tensor_pca``: the spec from the config's
``input``); its map sums the error over the tensor's leading axes to the map's shape.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from flowedge.core.card import ScoreSpec
from flowedge.flows.config import NearestNeighborConfig, PCAConfig, TensorPCAConfig
from flowedge.flows.detectors.base import (
    BatchSource,
    ClosedFormDetector,
    Features,
    Latents,
    ProgressFn,
)
from flowedge.flows.detectors.registry import register_detector
from flowedge.flows.detectors.series_common import SeriesDetectorMixin
from flowedge.flows.detectors.tensor_input import TensorInputMixin


def _training_tensors(batches: BatchSource) -> torch.Tensor:
    return torch.cat([feats[0].detach().to("cpu", torch.float32) for feats, _ in batches()])


class _ResidualDetector(ClosedFormDetector):
    """Latent = the part of the sample the model cannot explain; score and map from its size."""

    summed_axes = 0  # the tensor's leading axes the map sums over (channels x H x W -> H x W)

    def reduce(
        self, latents: Latents, map_shape: tuple[int, ...]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        amap = self.error(latents[0].float())
        if self.summed_axes:
            amap = amap.flatten(1, self.summed_axes).sum(dim=1)
        return amap.flatten(1).sum(dim=1), amap

    def error(self, residual: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class _PCAReconstruction(_ResidualDetector):
    """Squared error of the projection onto the first principal components of the samples."""

    def __init__(self, config: PCAConfig | TensorPCAConfig) -> None:
        super().__init__(config, None, {})
        spec = self.input_spec()
        if spec.tensor_shape[len(spec.tensor_shape) - len(spec.map_shape) :] != spec.map_shape:
            raise ValueError(
                f"{config.kind} maps the error of each element: the map {spec.map_shape} must "
                f"be the last axes of the tensor {spec.tensor_shape}"
            )
        self.summed_axes = len(spec.tensor_shape) - len(spec.map_shape)
        size = math.prod(spec.tensor_shape)
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("components", torch.zeros(config.n_components, size))

    def fit(self, batches: BatchSource, progress: ProgressFn | None = None) -> dict[str, Any]:
        flat = _training_tensors(batches).flatten(1).double()
        mean = flat.mean(dim=0)
        _, singular, vh = torch.linalg.svd(flat - mean, full_matrices=False)
        keep = min(self.config.n_components, max(1, len(flat) - 1))
        components = torch.zeros_like(self.components, dtype=torch.float64)
        components[:keep] = vh[:keep]  # unused rows stay zero: they project onto nothing
        self.mean.copy_(mean.float())
        self.components.copy_(components.float())
        variance = singular**2
        explained = float(variance[:keep].sum() / variance.sum().clamp_min(1e-12))
        return {"components": keep, "explained_variance": round(explained, 4), "epochs": 1}

    def latents(self, feats: Features) -> Latents:
        x = feats[0]
        centred = x.flatten(1) - self.mean
        projected = (centred @ self.components.T) @ self.components
        return [(centred - projected).view_as(x)]

    def error(self, residual: torch.Tensor) -> torch.Tensor:
        return residual * residual

    def score_spec(self) -> ScoreSpec:
        return ScoreSpec(kind="pca_squared_error")


@register_detector("pca")
class PCAReconstruction(SeriesDetectorMixin, _PCAReconstruction):
    """PCA reconstruction error of whole cycles."""

    def __init__(self, config: PCAConfig, backbone: Any = None, info: Any = None) -> None:
        super().__init__(config)


@register_detector("tensor_pca")
class TensorPCA(TensorInputMixin, _PCAReconstruction):
    """PCA reconstruction error of any modality's preprocessed tensor."""

    def __init__(self, config: TensorPCAConfig, backbone: Any = None, info: Any = None) -> None:
        super().__init__(config)


@register_detector("nearest_neighbor")
class NearestNeighbor(SeriesDetectorMixin, _ResidualDetector):
    """L1 distance to the closest training cycle (L1 beat L2 in the thesis)."""

    def __init__(self, config: NearestNeighborConfig, backbone: Any = None, info: Any = None):
        super().__init__(config, None, {})
        self.register_buffer("memory", torch.zeros(0, len(config.signals), int(config.length or 0)))

    def fit(self, batches: BatchSource, progress: ProgressFn | None = None) -> dict[str, Any]:
        self.memory = _training_tensors(batches)
        return {"memory": len(self.memory), "epochs": 1}

    def _load_from_state_dict(self, state_dict, prefix, *args: Any) -> None:
        # the memory's size is the training set's, known only from the weights file
        stored = state_dict.get(prefix + "memory")
        if stored is not None:
            self.memory = torch.empty_like(stored)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def latents(self, feats: Features) -> Latents:
        x = feats[0]
        distances = (x[:, None] - self.memory[None]).abs().flatten(2).sum(dim=2)
        nearest = self.memory[distances.argmin(dim=1)]
        return [x - nearest]

    def error(self, residual: torch.Tensor) -> torch.Tensor:
        return residual.abs()

    def score_spec(self) -> ScoreSpec:
        return ScoreSpec(kind="l1_nearest_neighbor")
