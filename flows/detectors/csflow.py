"""CS-Flow: a fully convolutional cross-scale normalizing flow (Rudolph et al., WACV 2022).

The frozen backbone sees the image at n scales (made inside the model from the
top-scale input, so the station preprocesses once). Coupling blocks transform
the whole feature pyramid jointly: their subnetworks exchange information
between neighbouring scales. Normal features map to a standard normal latent
space; the image score is the mean of z**2/2 over all latent values (no
log-determinant, as in the paper and its code), the map comes from the
top-scale latent.
"""

from __future__ import annotations

import math
from typing import Any

import FrEIA.framework as Ff
import torch
import torch.nn.functional as F
from FrEIA.modules import InvertibleModule
from torch import nn

from flowedge.core.card import ScoreSpec
from flowedge.flows.config import CSFlowConfig
from flowedge.flows.detectors.base import Features, GradientDetector, Latents
from flowedge.flows.detectors.registry import register_detector


def soft_clamp(s: torch.Tensor, alpha: float) -> torch.Tensor:
    """Restrict scale outputs to (-alpha, alpha) smoothly, so exp() never explodes."""
    return (2.0 * alpha / math.pi) * torch.atan(s / alpha)


class CrossScaleSubnet(nn.Module):
    """Predicts [s, t] for every scale from every scale's input (the "cross-convolutions").

    Level 1: conv + LeakyReLU(0.1) per scale. Level 2, per scale: a conv of the
    same scale, plus a bilinear-upsampled coarser scale through a conv, plus the
    finer scale through a stride-2 conv, summed. Each scale's output is scaled
    by a learnable gamma initialised to 0, so every block starts as the identity.
    """

    def __init__(self, c_in: int, c_out: int, hidden: int, n_scales: int, kernel: int) -> None:
        super().__init__()
        pad = kernel // 2
        self.n_scales = n_scales
        self.level1 = nn.ModuleList(
            nn.Conv2d(c_in, hidden, kernel, padding=pad) for _ in range(n_scales)
        )
        self.same = nn.ModuleList(
            nn.Conv2d(hidden, c_out, kernel, padding=pad) for _ in range(n_scales)
        )
        self.from_coarser = nn.ModuleList(
            nn.Conv2d(hidden, c_out, kernel, padding=pad) for _ in range(n_scales - 1)
        )
        self.from_finer = nn.ModuleList(
            nn.Conv2d(hidden, c_out, kernel, padding=pad, stride=2) for _ in range(n_scales - 1)
        )
        self.gamma = nn.Parameter(torch.zeros(n_scales))
        self.act = nn.LeakyReLU(0.1)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        hidden = [self.act(conv(x)) for conv, x in zip(self.level1, xs, strict=True)]
        outs = []
        for k, h in enumerate(hidden):
            out = self.same[k](h)
            if k + 1 < self.n_scales:
                coarser = F.interpolate(
                    hidden[k + 1], size=h.shape[-2:], mode="bilinear", align_corners=False
                )
                out = out + self.from_coarser[k](coarser)
            if k > 0:
                out = out + self.from_finer[k - 1](hidden[k - 1])
            outs.append(out * self.gamma[k])
        return outs


class CrossScaleCoupling(InvertibleModule):
    """Affine coupling over a feature pyramid: a fixed channel permutation per scale, an even
    split, then ``b' = b*exp(s1(a)) + t1(a)`` and ``a' = a*exp(s2(b')) + t2(b')`` on all scales at once."""

    def __init__(
        self, dims_in: list[tuple[int, ...]], hidden: int, kernel: int, clamp: float, seed: int
    ) -> None:
        super().__init__(dims_in)
        channels = dims_in[0][0]
        if any(d[0] != channels for d in dims_in):
            raise ValueError("all scales must have the same number of channels")
        self.split = channels // 2
        self.clamp = clamp
        n_scales = len(dims_in)
        generator = torch.Generator().manual_seed(seed)
        for k in range(n_scales):
            perm = torch.randperm(channels, generator=generator)
            self.register_buffer(f"perm{k}", perm)
            self.register_buffer(f"inv_perm{k}", torch.argsort(perm))
        self.r1 = CrossScaleSubnet(
            self.split, 2 * (channels - self.split), hidden, n_scales, kernel
        )
        self.r2 = CrossScaleSubnet(channels - self.split, 2 * self.split, hidden, n_scales, kernel)

    def _affine(
        self, xs: list[torch.Tensor], params: list[torch.Tensor], rev: bool
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        outs, log_jac = [], 0.0
        for x, p in zip(xs, params, strict=True):
            s, t = p.chunk(2, dim=1)
            s = soft_clamp(s, self.clamp)
            outs.append((x - t) * torch.exp(-s) if rev else x * torch.exp(s) + t)
            log_jac = log_jac + s.flatten(1).sum(1)
        return outs, (-log_jac if rev else log_jac)

    def forward(
        self, x: list[torch.Tensor], c: list | None = None, rev: bool = False, jac: bool = True
    ):
        n = len(x)
        if not rev:
            permuted = [xk[:, getattr(self, f"perm{k}")] for k, xk in enumerate(x)]
            a = [p[:, : self.split] for p in permuted]
            b = [p[:, self.split :] for p in permuted]
            b, jac1 = self._affine(b, self.r1(a), rev=False)
            a, jac2 = self._affine(a, self.r2(b), rev=False)
            out = [torch.cat([a[k], b[k]], dim=1) for k in range(n)]
            return out, jac1 + jac2
        a = [xk[:, : self.split] for xk in x]
        b = [xk[:, self.split :] for xk in x]
        a, jac2 = self._affine(a, self.r2(b), rev=True)
        b, jac1 = self._affine(b, self.r1(a), rev=True)
        out = [torch.cat([a[k], b[k]], dim=1)[:, getattr(self, f"inv_perm{k}")] for k in range(n)]
        return out, jac1 + jac2

    def output_dims(self, input_dims: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        return input_dims


def coupling_graph(dims: list[tuple[int, int, int]], det: CSFlowConfig) -> Ff.GraphINN:
    """FrEIA graph: one input node per scale, the coupling blocks in a chain, one output per scale."""
    inputs = [Ff.InputNode(*d, name=f"scale{k}") for k, d in enumerate(dims)]
    nodes, previous = list(inputs), [(node, 0) for node in inputs]
    for index, kernel in enumerate(det.kernel_sizes):
        block = Ff.Node(
            previous,
            CrossScaleCoupling,
            {"hidden": det.hidden_channels, "kernel": kernel, "clamp": det.clamp, "seed": index},
            name=f"block{index}",
        )
        nodes.append(block)
        previous = [(block, k) for k in range(len(dims))]
    outputs = [Ff.OutputNode([p], name=f"z{k}") for k, p in enumerate(previous)]
    return Ff.GraphINN(nodes + outputs)


@register_detector("csflow")
class CSFlow(GradientDetector):
    """Frozen backbone at n input scales + a stack of cross-scale coupling blocks."""

    config: CSFlowConfig

    def __init__(
        self, config: CSFlowConfig, backbone: nn.Module, backbone_info: dict[str, Any]
    ) -> None:
        super().__init__(config, backbone, backbone_info)
        if len(config.backbone.out_indices) != 1:
            raise ValueError(
                "csflow uses one backbone stage at several input scales: give one out_index"
            )
        if len(config.kernel_sizes) != config.n_blocks:
            raise ValueError(
                f"detector.kernel_sizes needs {config.n_blocks} entries (one per block), "
                f"got {config.kernel_sizes}"
            )
        reduction = backbone_info["reductions"][0]
        step = reduction * 2 ** (config.n_scales - 1)
        height, width = config.input_hw
        if height % step or width % step:
            raise ValueError(
                f"detector.image_size must be a multiple of {step} for {config.n_scales} scales "
                f"of a stride-{reduction} backbone stage (got {config.image_size})"
            )
        channels = backbone_info["channels"][0]
        rows, cols = height // reduction, width // reduction
        dims = [(channels, rows >> k, cols >> k) for k in range(config.n_scales)]
        self.graph = coupling_graph(dims, config)

    def score_spec(self) -> ScoreSpec:
        return ScoreSpec(kind="mean_z2_half", uses_logdet=False)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> Features:
        feats = []
        for k in range(self.config.n_scales):
            # area downscaling (2^k x 2^k means), like the preprocessing's resize: plain bilinear
            # sampling at 1/4 would alias; AveragePool also exports cleanly to ONNX/TensorRT
            scaled = x if k == 0 else F.avg_pool2d(x, 2**k)
            feats.append(self.backbone(scaled)[0])
        return feats

    def flow(self, feats: Features, rev: bool = False) -> tuple[Latents, torch.Tensor]:
        """Run the blocks (forward: features -> z; rev: z -> features) with the summed log-det."""
        out, log_jac = self.graph(feats, rev=rev)
        return list(out), log_jac

    def latents(self, feats: Features) -> Latents:
        return self.flow(feats)[0]

    def reduce(
        self, latents: Latents, map_shape: tuple[int, ...]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z = [zk.float() for zk in latents]
        score = torch.cat([(zk**2).flatten(1) for zk in z], dim=1).mean(dim=1) * 0.5
        top = (z[0] ** 2).mean(dim=1, keepdim=True) * 0.5
        amap = F.interpolate(top, size=map_shape, mode="bilinear", align_corners=False)[:, 0]
        return score, amap

    def loss(self, feats: Features, labels: torch.Tensor | None) -> torch.Tensor:
        """Per-dimension negative log-likelihood of normal features, as in the reference code."""
        z, log_jac = self.flow(feats)
        dim = sum(zk[0].numel() for zk in z)
        sq = sum((zk**2).flatten(1).sum(1) for zk in z)
        return (0.5 * sq - log_jac).mean() / dim
