"""The modality registry: a model card's ``input.kind`` names the modality that handles its samples.

Modules load on first use, so a station only imports what its model needs
(audio or series decoders never load on an image station).
"""

from __future__ import annotations

import importlib
from functools import cache

from flowedge.core.errors import ConfigError
from flowedge.modalities.base import Modality

# input kind -> module defining ``MODALITY``, an instance of :class:`Modality`
MODALITIES: dict[str, str] = {
    "image": "flowedge.modalities.image",
    "audio": "flowedge.modalities.audio",
    "series": "flowedge.modalities.series",
}


@cache
def get_modality(name: str) -> Modality:
    """The modality called ``name`` (a card's ``input.kind``)."""
    if name not in MODALITIES:
        raise ConfigError(
            f"no modality {name!r} in this flowedge (available: {', '.join(sorted(MODALITIES))}); "
            "check the source's modality, or upgrade flowedge for a model of another modality"
        )
    return importlib.import_module(MODALITIES[name]).MODALITY


__all__ = ["MODALITIES", "Modality", "get_modality"]
