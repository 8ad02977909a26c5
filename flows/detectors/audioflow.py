"""The hierarchical ("hybrid") cross-scale flow for motion sound (seed 000, Lee et al. 2023).

The mel spectrogram of one motion is resized to an image (256 x 384 in the paper) and
replicated to three channels inside the model, so the station preprocesses in numpy
and the exported graph does the rest. A frozen backbone gives feature maps; a
cross-scale flow (:mod:`flows.detectors.csflow`, generalised to different channel
counts per scale) maps them to a standard normal. The three input types of the
paper's Table 2:

``hybrid``        the full and the half image, two stages each (strides 16 and 32):
                  full/16, concat(full/32, half/16), half/32 -> maps of H/16, H/32, H/64
``multiscale``    the stride-32 stage of the full, half and quarter image (CS-Flow)
``multifeature``  the full image's stages of strides 8, 16 and 32

Both passes of the hybrid use the same frozen weights (the paper says "each feature
extractor"; one network halves the parameters and gives identical features).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from flowedge.core.card import AudioInput
from flowedge.flows.config import AudioFlowConfig
from flowedge.flows.detectors.base import Features
from flowedge.flows.detectors.csflow import (
    CrossScaleFlowDetector,
    check_kernel_sizes,
    coupling_graph,
)
from flowedge.flows.detectors.registry import register_detector

STRIDES = (8, 16, 32)  # the three backbone stages the config's out_indices must give


def pyramid_dims(
    input_type: str, channels: list[int], height: int, width: int
) -> list[tuple[int, int, int]]:
    """(channels, rows, cols) of the three maps the flow sees, finest first."""
    c8, c16, c32 = channels
    if input_type == "hybrid":
        shapes = [(c16, 16), (c32 + c16, 32), (c32, 64)]
    elif input_type == "multiscale":
        shapes = [(c32, 32), (c32, 64), (c32, 128)]
    else:
        shapes = [(c8, 8), (c16, 16), (c32, 32)]
    return [(c, height // stride, width // stride) for c, stride in shapes]


@register_detector("audioflow")
class AudioFlow(CrossScaleFlowDetector):
    """Spectrogram image -> frozen backbone (one or two image scales) -> cross-scale flow."""

    config: AudioFlowConfig

    def __init__(
        self, config: AudioFlowConfig, backbone: nn.Module, backbone_info: dict[str, Any]
    ) -> None:
        super().__init__(config, backbone, backbone_info)
        check_kernel_sizes(config)
        if tuple(backbone_info["reductions"]) != STRIDES:
            raise ValueError(
                "audioflow needs three backbone stages of strides 8, 16 and 32 (Lite0: "
                f"out_indices [2, 3, 4]); {config.backbone.out_indices} give strides "
                f"{backbone_info['reductions']}"
            )
        height, width = config.image_size
        dims = pyramid_dims(config.input_type, backbone_info["channels"], height, width)
        self.graph = coupling_graph(dims, config)

    def input_spec(self) -> AudioInput:
        return self.config.front_end.spec()

    def image(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 1, mels, frames] -> the [B, 3, H, W] spectrogram image of the paper."""
        resized = F.interpolate(
            x, size=self.config.image_size, mode="bilinear", align_corners=False
        )
        return resized.expand(-1, 3, -1, -1)

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> Features:
        image = self.image(x)
        full = self.backbone(image)  # strides 8, 16, 32
        kind = self.config.input_type
        if kind == "multifeature":
            return full
        # area downscaling, like CS-Flow's scales (bilinear sampling at 1/2 would alias)
        half = self.backbone(F.avg_pool2d(image, 2))
        if kind == "hybrid":
            return [full[1], torch.cat([full[2], half[1]], dim=1), half[2]]
        quarter = self.backbone(F.avg_pool2d(image, 4))
        return [full[2], half[2], quarter[2]]
