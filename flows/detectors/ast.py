"""AST: an asymmetric student-teacher pair on frozen features (Rudolph et al., WACV 2023; thesis ch. 6).

The teacher is a conditional normalizing flow (FrEIA GLOW couplings, each conditioned
on a 2D sinusoidal encoding of the position) trained by likelihood on normal
features. The student is a plain residual CNN trained afterwards to regress the
frozen teacher's latents z from the same features. On normal features it learns to
match; on anomalies the two networks disagree: the flow maps unusual features far
from the student's guess, which cannot follow since it is not injective and never
saw such features. The map is the per-position distance ||z_t - z_s||^2 (a sum over
channels), the image score its mean (or maximum) over positions.

Training runs in two phases (:meth:`AST.training_phases`): teacher, then student.
Both see the same frozen, unaugmented backbone features, so the loop's feature
cache is exact: caching changes nothing but the time.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import FrEIA.framework as Ff
import FrEIA.modules as Fm
import torch
import torch.nn.functional as F
from torch import nn

from flowedge.core.card import ScoreSpec
from flowedge.flows.config import ASTConfig
from flowedge.flows.detectors.base import Features, GradientDetector, Latents, TrainingPhase
from flowedge.flows.detectors.csflow import soft_clamp
from flowedge.flows.detectors.registry import register_detector
from flowedge.flows.positional import positional_encoding


def unit_soft_clamp(s: torch.Tensor, alpha: float) -> torch.Tensor:
    """FrEIA multiplies its clamp activation by ``clamp``: this makes the product csflow's
    ``soft_clamp`` (FrEIA's own "ATAN" would be alpha * 0.636 * atan(s), without s / alpha)."""
    return soft_clamp(s, alpha) / alpha


class CouplingSubnet(nn.Module):
    """conv -> ReLU -> conv predicting [s, t] (replicate padding, as the AST code), scaled by a
    learnable gamma initialised to 0 so that every block starts as the identity."""

    def __init__(self, c_in: int, c_out: int, hidden: int, kernel: int) -> None:
        super().__init__()
        pad = kernel // 2
        mode = "replicate" if pad else "zeros"  # a 1x1 conv would still call a (no-op) pad
        self.layers = nn.Sequential(
            nn.Conv2d(c_in, hidden, kernel, padding=pad, padding_mode=mode),
            nn.ReLU(),
            nn.Conv2d(hidden, c_out, kernel, padding=pad, padding_mode=mode),
        )
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x) * self.gamma


def teacher_graph(
    dims: tuple[int, int, int], condition_channels: int, config: ASTConfig
) -> Ff.GraphINN:
    """FrEIA graph: per block a fixed random channel permutation and a GLOW coupling whose
    subnets see their half of the channels concatenated with the positional encoding."""
    condition = Ff.ConditionNode(condition_channels, *dims[1:], name="position")
    nodes: list[Ff.Node] = [Ff.InputNode(*dims, name="features")]
    for index, kernel in enumerate(config.kernel_sizes):
        nodes.append(Ff.Node(nodes[-1], Fm.PermuteRandom, {"seed": index}, name=f"perm{index}"))
        coupling = {
            "subnet_constructor": partial(
                CouplingSubnet, hidden=config.teacher_hidden, kernel=kernel
            ),
            "clamp": config.clamp,
            "clamp_activation": partial(unit_soft_clamp, alpha=config.clamp),
        }
        nodes.append(
            Ff.Node(
                nodes[-1],
                Fm.GLOWCouplingBlock,
                coupling,
                conditions=condition,
                name=f"block{index}",
            )
        )
    nodes.append(Ff.OutputNode(nodes[-1], name="z"))
    return Ff.GraphINN([*nodes, condition])


class ResidualBlock(nn.Module):
    """[conv3x3 -> BN -> LeakyReLU] x 2 plus the skip (thesis Fig. 6.5)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            *(
                layer
                for _ in range(2)
                for layer in (
                    nn.Conv2d(channels, channels, 3, padding=1),
                    nn.BatchNorm2d(channels),
                    nn.LeakyReLU(),
                )
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


def student_network(c_in: int, c_out: int, hidden: int, n_blocks: int) -> nn.Sequential:
    """conv3x3 + LeakyReLU, residual blocks, conv3x3 to the teacher's channels. LeakyReLU's
    default slope 0.01 as in the official code (the thesis says 0.2)."""
    return nn.Sequential(
        nn.Conv2d(c_in, hidden, 3, padding=1),
        nn.LeakyReLU(),
        *(ResidualBlock(hidden) for _ in range(n_blocks)),
        nn.Conv2d(hidden, c_out, 3, padding=1),
    )


@register_detector("ast")
class AST(GradientDetector):
    """Frozen backbone stage(s) + a conditional flow teacher + a residual CNN student."""

    config: ASTConfig

    def __init__(
        self, config: ASTConfig, backbone: nn.Module, backbone_info: dict[str, Any]
    ) -> None:
        super().__init__(config, backbone, backbone_info)
        reduction = backbone_info["reductions"][0]
        height, width = config.input_hw
        if height % reduction or width % reduction:
            raise ValueError(
                f"detector.image_size must be a multiple of {reduction} (the stride of the first "
                f"backbone stage, out_indices[0]), got {config.image_size}"
            )
        grid = (height // reduction, width // reduction)
        channels = sum(backbone_info["channels"])
        position = positional_encoding(config.pos_enc_channels, *grid)
        self.register_buffer("position", position, persistent=False)  # derived from the config
        self.teacher = teacher_graph((channels, *grid), config.pos_enc_channels, config)
        self.student = student_network(
            channels + config.pos_enc_channels,
            channels,
            config.student_hidden,
            config.student_blocks,
        )

    def score_spec(self) -> ScoreSpec:
        return ScoreSpec(kind=f"{self.config.image_score}_student_teacher_sq", uses_logdet=False)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> Features:
        return self.backbone(x)

    def _inputs(self, feats: Features) -> tuple[torch.Tensor, torch.Tensor]:
        """The stages resampled to the first one's grid and stacked, and the position map."""
        grid = feats[0].shape[-2:]
        stacked = torch.cat(
            [
                f if f.shape[-2:] == grid else F.interpolate(f, size=grid, mode="bilinear")
                for f in feats
            ],
            dim=1,
        )
        return stacked, self.position.expand(stacked.shape[0], -1, -1, -1)

    def _teach(
        self, f: torch.Tensor, position: torch.Tensor, jac: bool
    ) -> tuple[torch.Tensor, Any]:
        z, log_jac = self.teacher(f, c=[position], jac=jac)
        return z, log_jac

    def _student(self, f: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        return self.student(torch.cat([f, position], dim=1))

    def latents(self, feats: Features) -> Latents:
        f, position = self._inputs(feats)
        return [self._teach(f, position, jac=False)[0], self._student(f, position)]

    def reduce(
        self, latents: Latents, map_shape: tuple[int, ...]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        z_teacher, z_student = (z.float() for z in latents)
        distance = ((z_teacher - z_student) ** 2).sum(dim=1, keepdim=True)
        flat = distance.flatten(1)
        score = flat.amax(dim=1) if self.config.image_score == "max" else flat.mean(dim=1)
        # bilinear (the AST code: bicubic) like every other detector's map: no overshoot
        amap = F.interpolate(distance, size=map_shape, mode="bilinear", align_corners=False)
        return score, amap[:, 0]

    def teacher_loss(self, feats: Features, labels: torch.Tensor | None) -> torch.Tensor:
        """Negative log-likelihood per dimension, ||z||^2/2 - log|det J| (thesis Eq. 6.3)."""
        f, position = self._inputs(feats)
        z, log_jac = self._teach(f, position, jac=True)
        return (0.5 * (z**2).flatten(1).sum(1) - log_jac).mean() / z[0].numel()

    def student_loss(self, feats: Features, labels: torch.Tensor | None) -> torch.Tensor:
        """Squared distance to the frozen teacher's z, a mean over channels (the code; the
        thesis sums them: a constant factor) and positions."""
        f, position = self._inputs(feats)
        with torch.no_grad():
            target = self._teach(f, position, jac=False)[0]
        return ((self._student(f, position) - target) ** 2).mean()

    def loss(self, feats: Features, labels: torch.Tensor | None) -> torch.Tensor:
        """Both objectives at once; the student's target is detached, so each term moves only
        its own network. Training runs them as phases instead: the student must regress a
        converged teacher, not a moving one."""
        return self.teacher_loss(feats, labels) + self.student_loss(feats, labels)

    def training_phases(self, lr: float) -> list[TrainingPhase]:
        teacher = [{"params": list(self.teacher.parameters()), "lr": lr}]
        student = [{"params": list(self.student.parameters()), "lr": lr}]
        return [
            TrainingPhase("teacher", self.teacher_loss, teacher, self.config.teacher_epochs),
            TrainingPhase("student", self.student_loss, student, self.config.student_epochs),
        ]
