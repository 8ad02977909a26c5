"""MTS-Flow (thesis ch. 8, "MVT-Flow" in its paper and code): a normalizing flow on whole cycles.

Density estimation directly on the standardised multivariate series ``[signals, steps]``:
each coupling block permutes the signals (fixed, random), splits them in two halves
and transforms one half affinely with scales and shifts computed by 1-D
convolutions along time from the other (and back). No windowing, no feature
extractor, no positional encoding: time structure comes from the convolutions.

Where thesis and official code disagree (notes/seed-thesis.md §7, §11), this follows:

* subnet depth: the thesis's three convolutions (kernels 13, 1, 1; dilations 2, 1, 1),
  not the code's default two; the config can give either;
* hidden width: the code's ``signal_scaling x signals`` (the thesis says "reduce by r",
  but the published numbers come from the code, which widens);
* clamp 1.2 in FrEIA's ``clamp * 0.636 * atan(s)`` form (code; not in the thesis);
* loss and score: the true NLL ``||z||^2 / 2 - log|det J|`` (thesis); the code's
  loss drops the 1/2, which is the NLL under N(0, I/2), not the model that is scored;
* padding "same" with replicate mode (code), so the cycle's edges are not zeros;
* the last convolution of each subnet starts at zero, so every block starts as the
  identity (stable start; our choice, like CS-Flow's gamma trick).

Score and map. The score is the full NLL, log-determinant included. The map is the
NLL's decomposition over time steps, ``m_t = ||z_t||^2 / 2 - sum_blocks log-scale_t``
(exact: the map sums to the score), spread evenly over the signals: after the
permutations and couplings no latent channel belongs to one input signal, so the
graph says *when*, not *which*. The thesis's temporal analysis, the input gradient
aggregated per time step (eq. 8.6), needs backpropagation, which an exported graph
(ONNX, TensorRT) cannot do; it is :func:`input_gradient_map`, a torch-side analysis
that also says which signals drove the score. The station names the signals of an
anomalous cycle by occlusion instead (``flowedge.modalities.series_explain``, docs/robot.md).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from flowedge.core.card import ScoreSpec
from flowedge.flows.config import MTSFlowConfig
from flowedge.flows.detectors.base import Features, GradientDetector, Latents
from flowedge.flows.detectors.registry import register_detector
from flowedge.flows.detectors.series_common import SeriesDetectorMixin

_ATAN_SCALE = 0.636  # 2 / pi, as FrEIA writes it


def subnet(
    channels_in: int, channels_out: int, hidden: int, kernels: list[int], dilations: list[int]
) -> nn.Sequential:
    """Conv1d along time with ReLU between, the last one zero-initialised."""
    layers: list[nn.Module] = []
    widths = [channels_in, *([hidden] * (len(kernels) - 1)), channels_out]
    for i, (kernel, dilation) in enumerate(zip(kernels, dilations, strict=True)):
        conv = nn.Conv1d(
            widths[i],
            widths[i + 1],
            kernel,
            dilation=dilation,
            padding="same",
            padding_mode="replicate",
        )
        layers += [conv, nn.ReLU()]
    last = layers[-2]
    assert isinstance(last, nn.Conv1d)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*layers[:-1])


class SignalCoupling(nn.Module):
    """Permute the signals, then a two-sided affine coupling between the halves."""

    def __init__(self, signals: int, config: MTSFlowConfig, generator: torch.Generator) -> None:
        super().__init__()
        self.register_buffer("permutation", torch.randperm(signals, generator=generator))
        self.split = signals // 2
        rest = signals - self.split
        hidden = max(1, round(config.signal_scaling * signals))
        args = (hidden, config.kernel_sizes, config.dilations)
        self.first = subnet(self.split, 2 * rest, *args)  # conditions the second half
        self.second = subnet(rest, 2 * self.split, *args)
        self.clamp = config.clamp

    def _soft_clamp(self, s: torch.Tensor) -> torch.Tensor:
        return self.clamp * _ATAN_SCALE * torch.atan(s)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(y [B, S, T], log-scales [B, S, T]: their sum is the block's log-det)."""
        x = x[:, self.permutation]
        x1, x2 = x[:, : self.split], x[:, self.split :]
        s1, t1 = self.first(x1).chunk(2, dim=1)
        s1 = self._soft_clamp(s1)
        y2 = x2 * torch.exp(s1) + t1
        s2, t2 = self.second(y2).chunk(2, dim=1)
        s2 = self._soft_clamp(s2)
        y1 = x1 * torch.exp(s2) + t2
        return torch.cat([y1, y2], dim=1), torch.cat([s2, s1], dim=1)


@register_detector("mtsflow")
class MTSFlow(SeriesDetectorMixin, GradientDetector):
    caches_features = True  # the features are the cycles themselves

    def __init__(self, config: MTSFlowConfig, backbone: Any = None, info: Any = None) -> None:
        super().__init__(config, None, {})
        signals = len(config.signals)
        generator = torch.Generator().manual_seed(config.seed)
        self.blocks = nn.ModuleList(
            SignalCoupling(signals, config, generator) for _ in range(config.n_blocks)
        )

    def latents(self, feats: Features) -> Latents:
        """[z [B, S, T], every block's log-scales [B, blocks x S, T]].

        The log-scales are latents, not summed here, so that the log-det sums belong to
        :meth:`reduce`, which an fp16 export keeps in fp32 (each value is at most
        ``clamp`` in size and exact enough in fp16; their sum over hundreds is not).
        """
        z = feats[0]
        log_scales = []
        for block in self.blocks:
            z, block_log_scales = block(z)
            log_scales.append(block_log_scales)
        return [z, torch.cat(log_scales, dim=1)]

    def step_nll(self, latents: Latents) -> torch.Tensor:
        """NLL per time step [B, T]: ``||z_t||^2 / 2 - log-det_t`` (sums to the cycle's NLL)."""
        z, log_scales = (t.float() for t in latents)
        return 0.5 * (z * z).sum(dim=1) - log_scales.sum(dim=1)

    def reduce(
        self, latents: Latents, map_shape: tuple[int, ...]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        per_step = self.step_nll(latents)
        signals = map_shape[0]
        amap = (per_step / signals)[:, None, :].expand(-1, signals, -1)
        return per_step.sum(dim=1), amap.contiguous()

    def loss(self, feats: Features, labels: torch.Tensor | None) -> torch.Tensor:
        """Mean NLL per value (divided by signals x steps so the rate is size-independent)."""
        x = feats[0]
        return self.step_nll(self.latents(feats)).sum(dim=1).mean() / (x.shape[1] * x.shape[2])

    def score_spec(self) -> ScoreSpec:
        return ScoreSpec(kind="nll", uses_logdet=True, logdet_in_latents=True)


def input_gradient_map(detector: MTSFlow, x: torch.Tensor) -> torch.Tensor:
    """|d NLL / d x| per signal and time step [B, S, T] (thesis eq. 8.6 before summing).

    Sum over signals for the thesis's temporal profile; sum over time (or over a
    time range) to rank the signals. Torch only: graphs cannot backpropagate.
    """
    detector.eval()
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        score, _ = detector(x)
        (grad,) = torch.autograd.grad(score.sum(), x)
    return grad.abs()
