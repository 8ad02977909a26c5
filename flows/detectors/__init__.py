"""Detectors: ``build_detector`` turns a validated detector config into a ready (unfitted) model."""

from __future__ import annotations

from flowedge.core.errors import ConfigError
from flowedge.flows.config import DetectorConfigBase
from flowedge.flows.detectors.base import Detector
from flowedge.flows.detectors.registry import register_detector, registered_detectors

__all__ = ["Detector", "build_detector", "register_detector", "registered_detectors"]


def build_detector(config: DetectorConfigBase) -> Detector:
    """Backbone (when the detector needs one) + detector head; ConfigError names the bad key."""
    registry = registered_detectors()
    if config.kind not in registry:
        raise ConfigError(
            f"detector.kind: no detector class registered as {config.kind!r}; "
            f"choose from {', '.join(sorted(registry))}"
        )
    cls = registry[config.kind]
    backbone, info = None, {}
    if cls.needs_backbone:
        from flowedge.flows.backbones import build_backbone  # heavy (timm)

        backbone, info = build_backbone(config.backbone)
    try:
        return cls(config, backbone, info)
    except ValueError as exc:
        raise ConfigError(f"detector: {exc}") from None
