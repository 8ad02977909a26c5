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
from collections.abc import Sequence
from typing import Any

import FrEIA.framework as Ff
import torch
import torch.nn.functional as F
from FrEIA.modules import InvertibleModule
from torch import nn

from flowedge.core.card import ScoreSpec
from flowedge.flows.config import AudioFlowConfig, CSFlowConfig, NFBMRConfig
from flowedge.flows.detectors.base import Features, GradientDetector, Latents
from flowedge.flows.detectors.registry import register_detector


def soft_clamp(s: torch.Tensor, alpha: float) -> torch.Tensor:
    """Restrict scale outputs to (-alpha, alpha) smoothly, so exp() never explodes."""
    return (2.0 * alpha / math.pi) * torch.atan(s / alpha)


class CrossScaleSubnet(nn.Module):
    """Predicts [s, t] for every scale from every scale's input (the "cross-convolutions").

    Level 1: conv + LeakyReLU(0.1) per scale, to a common hidden width. Level 2, per
    scale: a conv of the same scale, plus a bilinear-upsampled coarser scale through a
    conv, plus the finer scale through a stride-2 conv, summed. Scales may have different
    channel counts (``c_in[k]`` in, ``c_out[k]`` out): the exchange happens at the hidden
    width, so stacked stages of a backbone (seed 000's hybrid input) couple like one stage
    at several image scales. Each scale's output is scaled by a learnable gamma
    initialised to 0, so every block starts as the identity.
    """

    def __init__(self, c_in: Sequence[int], c_out: Sequence[int], hidden: int, kernel: int) -> None:
        super().__init__()
        pad = kernel // 2
        self.n_scales = n_scales = len(c_in)
        self.level1 = nn.ModuleList(nn.Conv2d(c, hidden, kernel, padding=pad) for c in c_in)
        self.same = nn.ModuleList(nn.Conv2d(hidden, c, kernel, padding=pad) for c in c_out)
        # into scale k from scale k + 1 (coarser) and from scale k - 1 (finer)
        self.from_coarser = nn.ModuleList(
            nn.Conv2d(hidden, c_out[k], kernel, padding=pad) for k in range(n_scales - 1)
        )
        self.from_finer = nn.ModuleList(
            nn.Conv2d(hidden, c_out[k], kernel, padding=pad, stride=2) for k in range(1, n_scales)
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
        channels = [d[0] for d in dims_in]
        self.splits = [c // 2 for c in channels]  # per scale: scales may differ in channels
        self.clamp = clamp
        generator = torch.Generator().manual_seed(seed)
        for k, c in enumerate(channels):
            perm = torch.randperm(c, generator=generator)
            self.register_buffer(f"perm{k}", perm)
            self.register_buffer(f"inv_perm{k}", torch.argsort(perm))
        rest = [c - h for c, h in zip(channels, self.splits, strict=True)]
        self.r1 = CrossScaleSubnet(self.splits, [2 * r for r in rest], hidden, kernel)
        self.r2 = CrossScaleSubnet(rest, [2 * h for h in self.splits], hidden, kernel)

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
            a = [p[:, :h] for p, h in zip(permuted, self.splits, strict=True)]
            b = [p[:, h:] for p, h in zip(permuted, self.splits, strict=True)]
            b, jac1 = self._affine(b, self.r1(a), rev=False)
            a, jac2 = self._affine(a, self.r2(b), rev=False)
            out = [torch.cat([a[k], b[k]], dim=1) for k in range(n)]
            return out, jac1 + jac2
        a = [xk[:, :h] for xk, h in zip(x, self.splits, strict=True)]
        b = [xk[:, h:] for xk, h in zip(x, self.splits, strict=True)]
        a, jac2 = self._affine(a, self.r2(b), rev=True)
        b, jac1 = self._affine(b, self.r1(a), rev=True)
        out = [torch.cat([a[k], b[k]], dim=1)[:, getattr(self, f"inv_perm{k}")] for k in range(n)]
        return out, jac1 + jac2

    def output_dims(self, input_dims: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        return input_dims


FlowBlocks = CSFlowConfig | AudioFlowConfig | NFBMRConfig  # configs with the coupling-block keys


def coupling_graph(dims: list[tuple[int, int, int]], det: FlowBlocks) -> Ff.GraphINN:
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
    # a tuple even for one scale: a lone tensor would be split along the batch by list()
    return Ff.GraphINN(nodes + outputs, force_tuple_output=True)


def check_kernel_sizes(config: FlowBlocks) -> None:
    if len(config.kernel_sizes) != config.n_blocks:
        raise ValueError(
            f"detector.kernel_sizes needs {config.n_blocks} entries (one per block), "
            f"got {config.kernel_sizes}"
        )


def flow_nll(z: Latents, log_jac: torch.Tensor) -> torch.Tensor:
    """Per-dimension negative log-likelihood under a standard normal, batch mean."""
    dim = sum(zk[0].numel() for zk in z)
    sq = sum((zk**2).flatten(1).sum(1) for zk in z)
    return (0.5 * sq - log_jac).mean() / dim


class CrossScaleFlowDetector(GradientDetector):
    """A stack of cross-scale coupling blocks on a feature pyramid: latents, score, map, loss.

    Subclasses build ``self.graph`` (:func:`coupling_graph`) and their ``features``.
    """

    graph: Ff.GraphINN

    def score_spec(self) -> ScoreSpec:
        return ScoreSpec(kind="mean_z2_half", uses_logdet=False)

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
        return flow_nll(*self.flow(feats))


@register_detector("csflow")
class CSFlow(CrossScaleFlowDetector):
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
        check_kernel_sizes(config)
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

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> Features:
        feats = []
        for k in range(self.config.n_scales):
            # area downscaling (2^k x 2^k means), like the preprocessing's resize: plain bilinear
            # sampling at 1/4 would alias; AveragePool also exports cleanly to ONNX/TensorRT
            scaled = x if k == 0 else F.avg_pool2d(x, 2**k)
            feats.append(self.backbone(scaled)[0])
        return feats
