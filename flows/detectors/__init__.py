"""Detector registry: ``build_detector`` turns the typed config into a ready (unfitted) model."""

from __future__ import annotations

from flowedge.core.errors import ConfigError
from flowedge.flows.config import DetectorConfig, TrainingConfig
from flowedge.flows.detectors.base import Detector


def _registry() -> dict[str, type[Detector]]:
    from flowedge.flows.detectors.csflow import CSFlow
    from flowedge.flows.detectors.gaussian import GaussianAD

    return {cls.name: cls for cls in (CSFlow, GaussianAD)}


DETECTOR_NAMES = ("csflow", "gaussian")


def build_detector(det: DetectorConfig, train: TrainingConfig) -> Detector:
    """Backbone + detector head; raises ConfigError naming the bad key."""
    from flowedge.flows.backbones import build_backbone

    registry = _registry()
    if det.kind not in registry:
        raise ConfigError(
            f"detector.kind: unknown detector {det.kind!r}; choose from {sorted(registry)}"
        )
    backbone, info = build_backbone(det.backbone)
    try:
        return registry[det.kind](det, train, backbone, info)
    except ValueError as exc:
        raise ConfigError(f"detector: {exc}") from None
