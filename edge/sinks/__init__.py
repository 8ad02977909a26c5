"""The sink kinds a station config may name (the ``mqtt`` section and ``sinks[].kind``).

Adding a kind: a module defining its config (a ``SinkBaseConfig`` with a ``kind``
literal), the sink (see :class:`Sink`) and its ``check``, ending in
``KIND = SinkKind(Config, open, check)``; then one line below. Each sink delivers
from its own cursor in the spool (:class:`Delivery`), so it is loss-free on its own.
"""

from __future__ import annotations

from typing import Any

from flowedge.core.validation import tagged_union
from flowedge.edge.sinks import history, mqtt, opcua, sparkplug, web
from flowedge.edge.sinks.base import Delivery, Sink, SinkBaseConfig, SinkContext, SinkKind

SINK_KINDS: dict[str, SinkKind] = {
    kind.name: kind for kind in (mqtt.KIND, sparkplug.KIND, history.KIND, opcua.KIND, web.KIND)
}

# one config model per kind, told apart by ``kind``
SinkConfig = tagged_union(kind.config for kind in SINK_KINDS.values())


def make_sink(cfg: Any, context: SinkContext) -> Sink:
    """Open the sink ``cfg`` describes (it attaches its cursor to the spool)."""
    return SINK_KINDS[cfg.kind].open(cfg, context)


__all__ = [
    "SINK_KINDS",
    "Delivery",
    "Sink",
    "SinkBaseConfig",
    "SinkConfig",
    "SinkContext",
    "SinkKind",
    "make_sink",
]
