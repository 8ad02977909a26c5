"""The modality registry: a model card's ``input.kind`` names the modality that handles its samples.

A modality is one module defining ``MODALITY`` (a :class:`Modality`) plus one line:

    register_modality("image", "flowedge.modalities.image", ImageInput)

which also lets model cards name the kind (:func:`flowedge.core.card.register_input_kind`).
Modules given by path load on first use, so a station only imports what its model needs
(audio or series decoders never load on an image station).
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any

from flowedge.core.card import AudioInput, ImageInput, InputSpec, SeriesInput, register_input_kind
from flowedge.core.errors import ConfigError
from flowedge.modalities.base import Modality

# input kind -> its Modality, or the module path whose ``MODALITY`` it is (loaded when asked for)
MODALITIES: dict[str, Modality[Any, Any, Any] | str] = {}


def register_modality(
    name: str, modality: Modality[Any, Any, Any] | str, spec: type[InputSpec]
) -> None:
    """Make ``name`` a modality: ``modality`` handles its samples (an instance, or the path of
    the module defining ``MODALITY``), ``spec`` is its cards' input spec (``input.kind`` name).
    Registering the same again is a no-op; another modality under a taken name is refused."""
    if MODALITIES.get(name, modality) != modality:
        raise ValueError(f"modality {name!r} is registered twice ({MODALITIES[name]}, {modality})")
    register_input_kind(name, spec)
    MODALITIES[name] = modality
    get_modality.cache_clear()


@cache
def get_modality(name: str) -> Modality[Any, Any, Any]:
    """The modality called ``name`` (a card's ``input.kind``)."""
    if name not in MODALITIES:
        raise ConfigError(
            f"no modality {name!r} in this flowedge (available: {', '.join(sorted(MODALITIES))}); "
            "check the source's modality, or upgrade flowedge for a model of another modality"
        )
    entry = MODALITIES[name]
    return importlib.import_module(entry).MODALITY if isinstance(entry, str) else entry


register_modality("image", "flowedge.modalities.image", ImageInput)
register_modality("audio", "flowedge.modalities.audio", AudioInput)
register_modality("series", "flowedge.modalities.series", SeriesInput)

__all__ = ["MODALITIES", "Modality", "get_modality", "register_modality"]
