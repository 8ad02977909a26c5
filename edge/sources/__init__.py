"""The source kinds a station config may name (``sources[].kind``), one module each.

Adding a kind: a module defining its config (a ``SourceBaseConfig`` with a ``kind``
literal), its source (``frames(stop)`` yielding :class:`Frame`) and its ``check``,
ending in ``KIND = SourceKind(Config, open, check)``; then one line below. The
station, ``flowedge check`` and the config schema all read this table.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from flowedge.core.validation import tagged_union
from flowedge.edge.sources import camera, ethercat, folder, microphone, tail, triggered, watch
from flowedge.edge.sources.base import (
    Frame,
    Source,
    SourceBaseConfig,
    SourceContext,
    SourceKind,
    SourceMemory,
)

SOURCE_KINDS: dict[str, SourceKind] = {
    kind.name: kind
    for kind in (
        folder.KIND,
        watch.KIND,
        camera.KIND,
        tail.KIND,
        ethercat.KIND,
        microphone.KIND,
        triggered.KIND,
    )
}

# one config model per kind, told apart by ``kind`` (errors name only that kind's keys)
SourceConfig = tagged_union(kind.config for kind in SOURCE_KINDS.values())


def make_source(cfg: Any, context: SourceContext) -> Source:
    """Open the source ``cfg`` describes."""
    return SOURCE_KINDS[cfg.kind].open(cfg, context)


__all__ = [
    "SOURCE_KINDS",
    "Frame",
    "Source",
    "SourceBaseConfig",
    "SourceConfig",
    "SourceContext",
    "SourceKind",
    "SourceMemory",
    "make_source",
    "parse_source",
]


def parse_source(data: dict[str, Any]) -> SourceBaseConfig:
    """One ``sources[]`` entry validated as its kind's config (tests, tools)."""
    return _SOURCE_ADAPTER.validate_python(data)


_SOURCE_ADAPTER: TypeAdapter[Any] = TypeAdapter(SourceConfig)
