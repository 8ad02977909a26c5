"""Detector registry: ``build_detector`` turns the typed config into a ready (unfitted) model."""

from __future__ import annotations

from flows.config import DetectorConfig, TrainingConfig
from flows.detectors.base import Detector
from flows.errors import ConfigError


def _registry() -> dict[str, type[Detector]]:
    from flows.detectors.csflow import CSFlow
    from flows.detectors.gaussian import GaussianAD

    return {cls.name: cls for cls in (CSFlow, GaussianAD)}


DETECTOR_NAMES = ("csflow", "gaussian")


def build_detector(det: DetectorConfig, train: TrainingConfig) -> Detector:
    """Backbone + detector head; raises ConfigError naming the bad key."""
    from flows.backbones import build_backbone

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
