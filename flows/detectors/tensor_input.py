"""What detectors of the preprocessed tensor itself share: no backbone, the tensor is the
feature, the input spec comes from the config (for any modality: its ``input``, completed
from the training files; series detectors rebuild theirs from signals and statistics)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from flowedge.core.card import InputSpec
from flowedge.flows.detectors.base import Features


class TensorInputMixin:
    """Input spec from the config's ``input``; the features are the preprocessed tensor."""

    needs_backbone: ClassVar[bool] = False
    config: Any

    def input_spec(self) -> InputSpec:
        return self.config.input_spec()

    def features(self, x: torch.Tensor) -> Features:
        return [x]
