"""NF-BMR: a flow target space and bidirectional residual mapping networks (paper 004).

A frozen backbone stage is the source domain y. A single-scale coupling flow (CS-Flow's
blocks on one scale) maps normal y to the target domain z ~ N(0, I). Two residual
networks learn the mappings between the domains: TMNN y -> z and SMNN z -> y, sharing
their middle residual block. On normal parts both mappings are learnt; an anomaly
breaks them, so the per-position mapping error is the anomaly map and its mean the
image score (the paper does not say; on MTD the mean beats the maximum, 0.95 vs 0.90
image AUROC: docs/image_detectors.md).

The paper trains in phases (flow first, then the mappings with the flow frozen). Here
one loss trains both at once: the mapping losses see the flow's output through a stop
gradient, so the flow is trained by its likelihood alone, exactly as in phase one, and
the mappings chase a target that settles as the flow converges. This needs no phase
support in the training loop (docs/image_detectors.md).

The two residuals live on different scales (z is unit normal, y is whatever the
backbone gives). Each is divided by its mean on the training data, tracked during
training like batch-norm running statistics, so both domains weigh the same in the map.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from flowedge.core.card import ScoreSpec
from flowedge.flows.config import NFBMRConfig
from flowedge.flows.detectors.base import Features, GradientDetector, Latents
from flowedge.flows.detectors.csflow import check_kernel_sizes, coupling_graph, flow_nll
from flowedge.flows.detectors.registry import register_detector

# running-mean momentum of the residual scales; early steps take the plain mean (1 / n)
SCALE_MOMENTUM = 0.05


class ResidualBlock(nn.Module):
    """The paper's block: 1x1 conv, ReLU, 3x3 conv, ReLU, 1x1 conv, ReLU, around an identity skip."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class MappingNetwork(nn.Module):
    """1x1 conv in, n residual blocks, the shared middle block, n residual blocks, 1x1 conv out."""

    def __init__(self, channels: int, width: int, n_residual: int, shared: ResidualBlock) -> None:
        super().__init__()
        blocks = [ResidualBlock(width) for _ in range(n_residual)]
        after = [ResidualBlock(width) for _ in range(n_residual)]
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 1), *blocks, shared, *after, nn.Conv2d(width, channels, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def channel_mse(residual: torch.Tensor) -> torch.Tensor:
    """Mean over channels of the squared residual: one value per position [B, 1, h, w]."""
    return (residual.float() ** 2).mean(dim=1, keepdim=True)


@register_detector("nfbmr")
class NFBMR(GradientDetector):
    """Frozen backbone stage (y) + coupling flow (z) + mappings y -> z and z -> y."""

    config: NFBMRConfig

    def __init__(
        self, config: NFBMRConfig, backbone: nn.Module, backbone_info: dict[str, Any]
    ) -> None:
        super().__init__(config, backbone, backbone_info)
        if len(config.backbone.out_indices) != 1:
            raise ValueError("nfbmr maps one backbone stage: give one backbone.out_indices entry")
        check_kernel_sizes(config)
        reduction = backbone_info["reductions"][0]
        height, width = config.input_hw
        if height % reduction or width % reduction:
            raise ValueError(
                f"detector.image_size must be a multiple of {reduction}, the backbone stage's "
                f"stride (got {config.image_size})"
            )
        channels = backbone_info["channels"][0]
        self.graph = coupling_graph([(channels, height // reduction, width // reduction)], config)
        shared = ResidualBlock(config.mapping_channels)
        self.to_target = MappingNetwork(  # TMNN
            channels, config.mapping_channels, config.n_residual, shared
        )
        self.to_source = MappingNetwork(  # SMNN
            channels, config.mapping_channels, config.n_residual, shared
        )
        # mean training residual of [source, target], for the map's per-domain normalisation
        self.register_buffer("residual_scale", torch.ones(2))
        self.register_buffer("scale_updates", torch.zeros((), dtype=torch.long))

    def score_spec(self) -> ScoreSpec:
        return ScoreSpec(kind="mean_mapping_residual", uses_logdet=False)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> Features:
        return self.backbone(x)

    def target(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z = TNF(y) and the flow's log-determinant."""
        out, log_jac = self.graph([y])
        return out[0], log_jac

    def latents(self, feats: Features) -> Latents:
        """The two mapping residuals, y - SMNN(z) and z - TMNN(y)."""
        y = feats[0]
        z, _ = self.target(y)
        return [y - self.to_source(z), z - self.to_target(y)]

    def reduce(
        self, latents: Latents, map_shape: tuple[int, ...]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        source, target = (channel_mse(r) for r in latents)
        scale = self.residual_scale.float()
        asm = 0.5 * (source / scale[0] + target / scale[1])
        amap = F.interpolate(asm, size=map_shape, mode="bilinear", align_corners=False)[:, 0]
        return asm.flatten(1).mean(dim=1), amap

    def loss(self, feats: Features, labels: torch.Tensor | None) -> torch.Tensor:
        """Flow NLL + the two mapping MSEs; the mappings see z through a stop gradient."""
        y = feats[0]
        z, log_jac = self.target(y)
        nll = flow_nll([z], log_jac)
        z = z.detach()
        source = channel_mse(y - self.to_source(z))
        target = channel_mse(z - self.to_target(y))
        self._track_scales(source.mean().detach(), target.mean().detach())
        return nll + source.mean() + target.mean()

    @torch.no_grad()
    def _track_scales(self, source: torch.Tensor, target: torch.Tensor) -> None:
        self.scale_updates += 1
        momentum = max(SCALE_MOMENTUM, 1.0 / float(self.scale_updates))
        self.residual_scale.lerp_(torch.stack([source, target]), momentum)
