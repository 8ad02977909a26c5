"""DifferNet: a fully connected flow on multi-scale pooled feature vectors (thesis ch. 4).

The frozen backbone sees each image under a fixed set of test-time transforms (the
dihedral rotations and flips, each with its own brightness factor, for MTD's
illumination) at n scales (made inside the model from the top-scale input, like
CS-Flow). Each scale's feature map is globally average-pooled and the scales are
concatenated into one vector per transformed copy. GLOW couplings with FC subnets
map normal vectors to a standard normal; the image score is the mean of z**2/2 over
the transforms and dimensions (no log-determinant, as in the thesis and its code).

The same transforms build the training set: the feature cache holds every training
image under every transform (a fixed augmented bank, computed once), so the flow
trains on cached vectors and train and test see identical transforms (thesis 4.3).

Maps: the thesis localises with |G * d score / d x|. The exported graph cannot hold
autograd, so :meth:`graph_outputs` (the graph, and what export parity compares)
gives a constant map equal to the image score; :meth:`forward` (``flowedge eval``,
the torch backend) replaces it by the gradient map. docs/image_detectors.md says why.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import FrEIA.framework as Ff
import FrEIA.modules as Fm
import torch
import torch.nn.functional as F
from torch import nn

from flowedge.core.card import ScoreSpec
from flowedge.flows.config import DifferNetConfig
from flowedge.flows.detectors.base import Features, GradientDetector, Latents
from flowedge.flows.detectors.csflow import soft_clamp
from flowedge.flows.detectors.registry import register_detector

# (quarter turns, mirrored) in the order transforms are taken: 2 = identity + half turn,
# 4 = the four rotations, 8 = the dihedral group (all exact on the pixel grid, no borders)
DIHEDRAL = (
    (0, False),
    (2, False),
    (1, False),
    (3, False),
    (0, True),
    (2, True),
    (1, True),
    (3, True),
)


def quarter_turns(x: torch.Tensor, turns: int) -> torch.Tensor:
    """``torch.rot90(x, turns, dims=(-2, -1))`` from transposes and flips, which export to
    ONNX (Transpose, Slice); rot90 itself does not."""
    turns %= 4
    if turns == 1:
        return x.transpose(-2, -1).flip(-2)
    if turns == 2:
        return x.flip(-2, -1)
    if turns == 3:
        return x.transpose(-2, -1).flip(-1)
    return x


def dihedral(x: torch.Tensor, turns: int, mirrored: bool) -> torch.Tensor:
    """Rotate the last two axes by ``turns`` quarter turns, then mirror the last axis."""
    x = quarter_turns(x, turns)
    return x.flip(-1) if mirrored else x


def undo_dihedral(x: torch.Tensor, turns: int, mirrored: bool) -> torch.Tensor:
    return quarter_turns(x.flip(-1) if mirrored else x, -turns)


def fc_subnet(dims_in: int, dims_out: int, hidden: int, layers: int) -> nn.Sequential:
    """Linear + ReLU ``layers`` times, then a linear output initialised to zero so that every
    coupling starts as the identity (stable first steps at a CPU-sized learning rate)."""
    widths = [dims_in] + [hidden] * layers
    modules: list[nn.Module] = []
    for a, b in zip(widths, widths[1:], strict=False):
        modules += [nn.Linear(a, b), nn.ReLU()]
    out = nn.Linear(widths[-1], dims_out)
    nn.init.zeros_(out.weight)
    nn.init.zeros_(out.bias)
    return nn.Sequential(*modules, out)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing of [B, C, H, W] per channel (reflected borders)."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    rows = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), rows, groups=channels)
    x = F.conv2d(
        F.pad(x, (radius, radius, 0, 0), mode="reflect"), rows.transpose(2, 3), groups=channels
    )
    return x


@register_detector("differnet")
class DifferNet(GradientDetector):
    """Frozen backbone on transformed copies at n scales, pooled, + an FC coupling flow."""

    config: DifferNetConfig

    def __init__(
        self, config: DifferNetConfig, backbone: nn.Module, backbone_info: dict[str, Any]
    ) -> None:
        super().__init__(config, backbone, backbone_info)
        smallest = min(config.input_hw) >> (config.n_scales - 1)
        if smallest < max(backbone_info["reductions"]):
            raise ValueError(
                f"image_size {config.image_size} at {config.n_scales} scales gives a "
                f"{smallest} px smallest scale, below the backbone's stride "
                f"{max(backbone_info['reductions'])}: enlarge image_size or lower n_scales"
            )
        spec = self.input_spec()
        # brightness is a factor on pixel values; the tensor is (pixel - mean) / std
        self.register_buffer(
            "pixel_mean",
            torch.tensor(spec.mean).view(1, -1, 1, 1) / torch.tensor(spec.std).view(1, -1, 1, 1),
        )
        n = config.n_transforms
        steps = torch.linspace(-1.0, 1.0, n) if n > 1 else torch.zeros(1)
        self.factors = [1.0 + config.brightness * float(s) for s in steps]
        self.dim = sum(backbone_info["channels"]) * config.n_scales
        clamp = partial(soft_clamp, alpha=config.clamp)
        subnet = partial(fc_subnet, hidden=config.hidden_features, layers=config.hidden_layers)
        self.flow = Ff.SequenceINN(self.dim)
        for index in range(config.n_blocks):
            self.flow.append(Fm.PermuteRandom, seed=index)
            # clamp=1: FrEIA multiplies the activation by it; soft_clamp already bounds to +-alpha
            self.flow.append(
                Fm.GLOWCouplingBlock, subnet_constructor=subnet, clamp=1.0, clamp_activation=clamp
            )

    def score_spec(self) -> ScoreSpec:
        return ScoreSpec(kind="mean_z2_half", uses_logdet=False)

    def views(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The transformed copies of a preprocessed batch: one per (dihedral, brightness) pair."""
        out = []
        for (turns, mirrored), factor in zip(DIHEDRAL, self.factors, strict=False):
            view = dihedral(x, turns, mirrored)
            out.append(view if factor == 1.0 else view * factor + self.pixel_mean * (factor - 1.0))
        return out

    def embed(self, views: list[torch.Tensor]) -> torch.Tensor:
        """[B, transforms, dim]: per copy, the pooled stage outputs of every scale, concatenated."""
        vectors = []
        for view in views:
            parts = []
            for k in range(self.config.n_scales):
                scaled = view if k == 0 else F.avg_pool2d(view, 2**k)
                parts += [f.mean(dim=(2, 3)) for f in self.backbone(scaled)]
            vectors.append(torch.cat(parts, dim=1))
        return torch.stack(vectors, dim=1)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> Features:
        return [self.embed(self.views(x))]

    def run_flow(self, feats: Features) -> tuple[torch.Tensor, torch.Tensor]:
        """z [B, transforms, dim] and the log-det per copy [B * transforms]."""
        (f,) = feats
        z, log_jac = self.flow(f.reshape(-1, self.dim))
        return z.reshape(f.shape), log_jac

    def latents(self, feats: Features) -> Latents:
        return [self.run_flow(feats)[0]]

    def reduce(
        self, latents: Latents, map_shape: tuple[int, ...]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z = latents[0].float()
        score = (z**2).mean(dim=(1, 2)) * 0.5
        # no localisation in a graph (see the module docstring): the score, everywhere
        return score, score.reshape(-1, 1, 1).expand(-1, *map_shape)

    def loss(self, feats: Features, labels: torch.Tensor | None) -> torch.Tensor:
        """Per-dimension NLL of every transformed copy (thesis: ||z||^2/2 - log|det J|)."""
        z, log_jac = self.run_flow(feats)
        sq = (z**2).reshape(-1, self.dim).sum(dim=1)
        return (0.5 * sq - log_jac).mean() / self.dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Score as the graph, map = mean over transforms of sum_c |G * d score / d view_c|,
        each copy's map turned back (thesis Eq. 4.14), at any grad or inference mode."""
        with torch.inference_mode(False), torch.enable_grad():
            views = [v.detach().requires_grad_(True) for v in self.views(x.clone())]
            score, _ = self.reduce([self.run_flow([self.embed(views)])[0]], self.map_shape())
            grads = torch.autograd.grad(score.sum(), views)
        maps = []
        for grad, (turns, mirrored) in zip(grads, DIHEDRAL, strict=False):
            amap = gaussian_blur(grad, self.config.map_sigma).abs().sum(dim=1)
            maps.append(undo_dihedral(amap, turns, mirrored))
        return score.detach(), torch.stack(maps).mean(dim=0)
