"""PyTorch backend: the reference, running the checkpoint exactly as trained.

The only backend that imports torch (a station without it uses ONNX Runtime or TensorRT).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from flowedge.backends.base import Backend, as_model_batch
from flowedge.core.card import ModelCard
from flowedge.flows.checkpoint import load_checkpoint, torch_device
from flowedge.flows.detectors.base import Detector

log = logging.getLogger(__name__)


class TorchBackend(Backend):
    name = "torch"

    def __init__(
        self, detector: Detector, card: ModelCard, device: torch.device, source: str
    ) -> None:
        super().__init__(card)
        self.detector = detector
        self.device = device
        self.source = source

    @classmethod
    def open(cls, path: Path, device: str = "cpu", threads: int = 0) -> TorchBackend:
        if threads:
            torch.set_num_threads(threads)
        detector, card = load_checkpoint(path, device=device)
        log.info(
            "torch: %s (%s) on %s, %d thread(s)",
            path,
            card.model_id,
            device,
            torch.get_num_threads(),
        )
        return cls(detector, card, torch_device(device), str(path))

    @torch.inference_mode()
    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = as_model_batch(batch, self.input_shape, self.source)
        x = torch.from_numpy(batch).to(self.device)
        score, amap = self.detector(x)
        return (score.float().cpu().numpy(), amap.float().cpu().numpy())
