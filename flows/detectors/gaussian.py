"""PCA + multivariate Gaussian on frozen features, Mahalanobis distance (paper 003, after Rippel et al.).

No training by gradient: fitting estimates, per backbone layer, a mean and a
Ledoit-Wolf shrunk covariance after PCA. The whitening is stored as one matrix
W (channels x channels, dropped components as zero columns) so that
``||(x - mu) W||^2`` is the squared Mahalanobis distance; inference is then a
matrix product and a sum of squares, the same shape of graph as a flow's.
Two Gaussians per layer: one on globally pooled features (image score, the
sum of layer distances) and one shared over all positions (the map).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flowedge.core.card import ScoreSpec
from flowedge.core.errors import DataError
from flowedge.flows.config import GaussianConfig
from flowedge.flows.detectors.base import (
    BatchSource,
    ClosedFormDetector,
    Features,
    Latents,
    ProgressFn,
)
from flowedge.flows.detectors.registry import register_detector

MAX_POSITIONS = 200_000  # positions sampled per layer for the map Gaussian (memory bound)
MIN_IMAGES = 2  # one image has no spread: its covariance does not exist


def whitening(vectors: np.ndarray, variance: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and W such that ||(x - mean) W||^2 is the Mahalanobis distance after PCA."""
    from sklearn.covariance import LedoitWolf

    x = vectors.astype(np.float64)
    mean = x.mean(axis=0)
    centred = x - mean
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    explained = singular**2 / max((singular**2).sum(), 1e-12)
    keep = int(np.searchsorted(np.cumsum(explained), variance) + 1)
    keep = max(1, min(keep, vt.shape[0]))
    basis = vt[:keep].T  # channels x keep
    precision = LedoitWolf().fit(centred @ basis).precision_
    chol = np.linalg.cholesky(precision)  # precision = L L^T
    w = np.zeros((x.shape[1], x.shape[1]))
    w[:, :keep] = basis @ chol
    return mean.astype(np.float32), w.astype(np.float32)


@register_detector("gaussian")
class GaussianAD(ClosedFormDetector):
    config: GaussianConfig

    def __init__(
        self, config: GaussianConfig, backbone: nn.Module, backbone_info: dict[str, Any]
    ) -> None:
        super().__init__(config, backbone, backbone_info)
        for layer, channels in enumerate(backbone_info["channels"]):
            for kind in ("pool", "map"):
                self.register_buffer(f"{kind}_mean{layer}", torch.zeros(channels))
                self.register_buffer(f"{kind}_w{layer}", torch.eye(channels))

    def score_spec(self) -> ScoreSpec:
        return ScoreSpec(kind="sum_layer_mahalanobis", uses_logdet=False)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> Features:
        return self.backbone(x)

    def latents(self, feats: Features) -> Latents:
        out: Latents = []
        for layer, f in enumerate(feats):
            pooled = f.mean(dim=(2, 3))
            out.append(
                (pooled - getattr(self, f"pool_mean{layer}")) @ getattr(self, f"pool_w{layer}")
            )
            centred = f - getattr(self, f"map_mean{layer}")[None, :, None, None]
            out.append(torch.einsum("bchw,cd->bdhw", centred, getattr(self, f"map_w{layer}")))
        return out

    def reduce(
        self, latents: Latents, map_shape: tuple[int, ...]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z = [zk.float() for zk in latents]
        score = sum(torch.sqrt((zp**2).sum(dim=1)) for zp in z[0::2])
        maps = [
            F.interpolate(
                torch.sqrt((zm**2).sum(dim=1, keepdim=True)),
                size=map_shape,
                mode="bilinear",
                align_corners=False,
            )
            for zm in z[1::2]
        ]
        return score, torch.stack(maps).mean(dim=0)[:, 0]

    @torch.no_grad()
    def fit(self, batches: BatchSource, progress: ProgressFn | None = None) -> dict[str, Any]:
        pooled: list[list[np.ndarray]] = [[] for _ in self.backbone_info["channels"]]
        positions: list[list[np.ndarray]] = [[] for _ in self.backbone_info["channels"]]
        generator = np.random.default_rng(0)
        n_images = steps = 0
        for feats, _ in batches():
            n_images += feats[0].shape[0]
            steps += 1
            for layer, f in enumerate(feats):
                pooled[layer].append(f.mean(dim=(2, 3)).cpu().numpy())
                flat = f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]).cpu().numpy()
                positions[layer].append(flat)
            if progress:
                progress({"loss": 0.0, "epoch": 0, "step": steps})
        if n_images < MIN_IMAGES:
            raise DataError(
                f"gaussian: {n_images} usable training image(s) cannot give a covariance; "
                f"give at least {MIN_IMAGES} normal images (tens or more for a useful model)"
            )
        kept = {}
        for layer in range(len(pooled)):
            all_positions = np.concatenate(positions[layer])
            if len(all_positions) > MAX_POSITIONS:
                all_positions = all_positions[
                    generator.choice(len(all_positions), MAX_POSITIONS, replace=False)
                ]
            for kind, data in (("pool", np.concatenate(pooled[layer])), ("map", all_positions)):
                try:
                    mean, w = whitening(data, self.config.pca_variance)
                except np.linalg.LinAlgError:
                    raise DataError(
                        f"gaussian: the features of the {n_images} training images do not "
                        "vary (identical images?); give more, and different, normal images"
                    ) from None
                getattr(self, f"{kind}_mean{layer}").copy_(torch.from_numpy(mean))
                getattr(self, f"{kind}_w{layer}").copy_(torch.from_numpy(w))
                kept[f"{kind}{layer}_components"] = int((np.abs(w).sum(axis=0) > 0).sum())
        return {"final_loss": 0.0, "epochs": 1, "steps": steps, "n_images": n_images, **kept}
