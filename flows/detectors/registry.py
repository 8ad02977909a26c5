"""The detector registry: ``@register_detector("name")`` on the class, one name per config model.

Names come from :data:`flows.config.DETECTOR_KINDS` (light, for validating config.yaml
without torch); registering a class under a name without a config model is refused, and
a test checks that every config model has a registered class.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from flowedge.flows.config import DETECTOR_KINDS, detector_config_model

if TYPE_CHECKING:
    from flowedge.flows.detectors.base import Detector

D = TypeVar("D", bound="type[Detector]")

_REGISTRY: dict[str, type[Detector]] = {}
_NOT_DETECTORS = frozenset({"base", "registry"})


def register_detector(kind: str) -> Callable[[D], D]:
    """Class decorator: the detector named ``kind`` in config files and model cards."""
    if kind not in DETECTOR_KINDS:
        raise ValueError(
            f"detector {kind!r} has no config model: add one to flows.config.DETECTOR_CONFIGS"
        )

    def register(cls: D) -> D:
        if _REGISTRY.get(kind, cls) is not cls:
            raise ValueError(f"detector {kind!r} is registered twice ({_REGISTRY[kind]}, {cls})")
        cls.name = kind
        cls.config_model = detector_config_model(kind)
        _REGISTRY[kind] = cls
        return cls

    return register


def registered_detectors() -> dict[str, type[Detector]]:
    """Every detector class by name; imports the detector modules (torch) on first use."""
    import flowedge.flows.detectors as package

    for module in pkgutil.iter_modules(package.__path__):
        if module.name not in _NOT_DETECTORS:
            importlib.import_module(f"{package.__name__}.{module.name}")
    return dict(_REGISTRY)
