"""CNF: conditional flows + a pixel classifier on a shared, fine-tuned backbone (paper 001).

A U-Net decoder on the backbone's feature pyramid learns to segment synthetic defects
(:mod:`flows.synthetic_defects`) and fine-tunes the deepest backbone stages on the way.
One conditional flow per feature map (FrEIA ``AllInOneBlock``, conditioned on a 2-D
sinusoidal position code) learns the density of normal feature vectors.

Score map (the paper's Eqs. 3-9): per scale the per-dimension log-likelihood ``l``,
``n = exp(l - u)`` with ``u`` the largest ``l`` over the training images, upsampled and
summed to ``N``; ``A_nf = n_max - N`` with ``n_max`` the largest ``N`` over the training
images; ``A = A_nf + w * A_p`` with ``A_p`` the classifier's defect probability. The
image score is the maximum of ``A``. Unlike the paper's code, ``u`` and ``n_max`` come
from the training images only (measured after the last epoch, :meth:`after_fit`), so a
score never depends on the other images under test.

The detector makes its own defects from the images, and its backbone changes during
training: ``features`` is therefore the image itself and the backbone runs inside
``latents`` (the training loop streams images every epoch, ``caches_features=False``).
"""

from __future__ import annotations

import math
from typing import Any

import FrEIA.framework as Ff
import FrEIA.modules as Fm
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from flowedge.core.card import ScoreSpec
from flowedge.flows.config import CNFConfig
from flowedge.flows.detectors.base import BatchSource, Features, GradientDetector, Latents
from flowedge.flows.detectors.registry import register_detector
from flowedge.flows.positional import positional_encoding
from flowedge.flows.synthetic_defects import DefectRecipe, synthesize


def _subnet(d_in: int, d_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, 2 * d_in), nn.ReLU(), nn.Linear(2 * d_in, d_out))


def conditional_flow(channels: int, config: CNFConfig) -> Ff.SequenceINN:
    """``n_blocks`` conditional all-in-one couplings on one feature vector (the paper's code)."""
    flow = Ff.SequenceINN(channels)
    for _ in range(config.n_blocks):
        flow.append(
            Fm.AllInOneBlock,
            cond=0,
            cond_shape=(config.condition_dim,),
            subnet_constructor=_subnet,
            affine_clamping=config.clamp,
            global_affine_type="SOFTPLUS",
            permute_soft=True,
        )
    return flow


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class UNetDecoder(nn.Module):
    """Coarsest map -> 1x1 transition, then upsample + skip concat + conv block per finer map,
    one more x2 stage without a skip, a 1-channel logit map (width halves per finer map)."""

    def __init__(self, channels: list[int], width: int) -> None:
        super().__init__()
        n = len(channels)
        widths = [width * 2 ** (n - 1 - k) for k in range(n)]
        self.transition = nn.Sequential(
            nn.Conv2d(channels[-1], widths[-1], 1), nn.ReLU(inplace=True)
        )
        self.stages = nn.ModuleList(
            _conv_block(widths[k + 1] + channels[k], widths[k]) for k in range(n - 1)
        )
        last = max(widths[0] // 2, 4)
        self.head = _conv_block(widths[0], last)
        self.out = nn.Conv2d(last, 1, 3, padding=1)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        x = self.transition(maps[-1])
        for k in reversed(range(len(self.stages))):
            x = F.interpolate(x, size=maps[k].shape[-2:], mode="bilinear", align_corners=False)
            x = self.stages[k](torch.cat([x, maps[k]], dim=1))
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.out(self.head(x))


def finetuned_parameters(backbone: nn.Module, n_stages: int) -> list[nn.Parameter]:
    """The parameters of the deepest ``n_stages`` feature stages (everything after the module of
    the stage before them, in registration order); all of them when n_stages covers every stage."""
    model = backbone.model
    named = list(model.named_parameters())
    stages = model.feature_info.module_name()
    if n_stages == 0:
        return []
    if n_stages >= len(stages):
        return [p for _, p in named]
    boundary = stages[-n_stages - 1] + "."
    last = max(i for i, (name, _) in enumerate(named) if name.startswith(boundary))
    return [p for _, p in named[last + 1 :]]


@register_detector("cnf")
class CNF(GradientDetector):
    """Shared backbone -> (U-Net defect probability, conditional-flow log-likelihoods)."""

    config: CNFConfig
    caches_features = False  # the backbone is fine-tuned and the defects are made per batch

    def __init__(self, config: CNFConfig, backbone: nn.Module, backbone_info: dict[str, Any]):
        super().__init__(config, backbone, backbone_info)
        reductions, channels = backbone_info["reductions"], backbone_info["channels"]
        n_stages = len(channels)
        if config.finetune_stages > n_stages:
            raise ValueError(
                f"detector.finetune_stages is {config.finetune_stages} but backbone.out_indices "
                f"gives {n_stages} stages: choose 0 to {n_stages}"
            )
        height, width = config.input_hw
        if height % reductions[-1] or width % reductions[-1]:
            raise ValueError(
                f"detector.image_size must be a multiple of {reductions[-1]} (the deepest "
                f"stage's stride), got {config.image_size}"
            )
        # batch norm keeps its ImageNet statistics (the backbone stays in eval mode, as in
        # the paper); only the chosen stages' weights learn
        self.finetuned = finetuned_parameters(backbone, config.finetune_stages)
        for parameter in self.finetuned:
            parameter.requires_grad_(True)
        self.decoder = UNetDecoder(channels, config.decoder_channels)
        self.flows = nn.ModuleList(conditional_flow(c, config) for c in channels)
        for k, r in enumerate(reductions):
            code = positional_encoding(config.condition_dim, height // r, width // r)
            self.register_buffer(f"code{k}", code, persistent=False)
        # training-set normalisation (after_fit): largest log-likelihood per scale, largest N
        self.register_buffer("loglik_max", torch.zeros(n_stages))
        self.register_buffer("normality_max", torch.zeros(()))
        self.recipe = DefectRecipe(
            in_domain_p=config.in_domain_p,
            max_beta=config.max_beta,
            perlin_max_exponent=config.perlin_max_exponent,
            object_side=config.object_mask,
            label_gain=config.label_gain,
        )

    def score_spec(self) -> ScoreSpec:
        return ScoreSpec(kind="cnf_max_flow_plus_classifier", uses_logdet=True)

    def features(self, x: torch.Tensor) -> Features:
        return [x]  # the backbone is part of the learned model here (see the module docstring)

    def loglik(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-dimension log-likelihood of every feature vector, one B x h x w map per scale."""
        out = []
        for k, (f, flow) in enumerate(zip(maps, self.flows, strict=True)):
            b, c, h, w = f.shape
            vectors = f.permute(0, 2, 3, 1).reshape(-1, c)
            code = getattr(self, f"code{k}").unsqueeze(0).expand(b, -1, -1, -1)
            cond = code.permute(0, 2, 3, 1).reshape(b * h * w, -1)
            z, log_jac = flow(vectors, c=[cond])
            log_p = -0.5 * (z**2).sum(1) - 0.5 * c * math.log(2 * math.pi) + log_jac
            out.append((log_p / c).reshape(b, h, w))
        return out

    def latents(self, feats: Features) -> Latents:
        x = feats[0]
        maps = self.backbone(x)
        logits = self.decoder(maps)
        prob = torch.sigmoid(F.interpolate(logits, size=x.shape[-2:], mode="bilinear"))
        return [prob[:, 0], *self.loglik(maps)]

    def normality(self, logliks: list[torch.Tensor], map_shape: tuple[int, ...]) -> torch.Tensor:
        """N: the sum over scales of exp(l - u), upsampled to the map (Eqs. 5-7)."""
        total = 0.0
        for k, loglik in enumerate(logliks):
            n = torch.exp(loglik.float() - self.loglik_max[k]).unsqueeze(1)
            total = total + F.interpolate(n, size=map_shape, mode="bilinear", align_corners=True)
        return total[:, 0]

    def reduce(
        self, latents: Latents, map_shape: tuple[int, ...]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        prob, logliks = latents[0].float(), latents[1:]
        prob = F.interpolate(prob.unsqueeze(1), size=map_shape, mode="bilinear")[:, 0]
        amap = self.normality_max - self.normality(logliks, map_shape)
        amap = amap + self.config.classifier_weight * prob
        return amap.flatten(1).amax(dim=1), amap

    def parameter_groups(self, lr: float) -> list[dict[str, Any]]:
        mine = {id(p) for p in self.finetuned}
        rest = [p for p in self.trainable_parameters() if id(p) not in mine]
        groups = [{"params": rest, "lr": lr}]
        if self.finetuned:
            groups.append({"params": self.finetuned, "lr": lr * self.config.backbone_lr_scale})
        return groups

    def loss(self, feats: Features, labels: torch.Tensor | None) -> torch.Tensor:
        """Classifier BCE + the flows' log-sigmoid NLL, from one backbone pass.

        The first half of the batch (at least one image) stays clean: it is the classifier's
        negative example and the flows' training data (detached, so the flows never shape the
        backbone); the rest gets synthetic defects. One pass instead of the paper's two
        (defective batch, then clean features for the flows) halves the CPU cost.
        """
        x = feats[0]
        n_clean = max(1, len(x) // 2)
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ())))
        defective, target = synthesize(x[n_clean:].detach().cpu().numpy(), rng, self.recipe)
        images = torch.cat([x[:n_clean], torch.from_numpy(defective).to(x.device)])
        targets = torch.cat(
            [torch.zeros_like(x[:n_clean, :1]), torch.from_numpy(target).to(x.device)]
        )
        maps = self.backbone(images)
        logits = F.interpolate(self.decoder(maps), size=x.shape[-2:], mode="bilinear")
        cls = F.binary_cross_entropy_with_logits(logits, targets)
        clean = [m[:n_clean].detach() for m in maps]
        nll = sum(-F.logsigmoid(ll).mean() for ll in self.loglik(clean))
        return cls + nll

    def after_fit(self, batches: BatchSource) -> dict[str, Any]:
        """Set u (largest per-dimension log-likelihood per scale) and n_max (largest N) from the
        training images, so test scores never depend on test data."""
        self.loglik_max.zero_()
        logliks = [self.loglik(self.backbone(feats[0])) for feats, _ in batches()]
        per_scale = [torch.cat(parts) for parts in zip(*logliks, strict=True)]
        self.loglik_max.copy_(torch.stack([ll.max() for ll in per_scale]))
        shape = self.map_shape()
        self.normality_max.copy_(max(self.normality(list(ls), shape).max() for ls in logliks))
        return {"normality_max": float(self.normality_max)} | {
            f"loglik_max{k}": float(u) for k, u in enumerate(self.loglik_max)
        }
