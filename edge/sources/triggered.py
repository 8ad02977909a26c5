"""``kind: triggered``: another source whose samples are taken only when the PLC triggers.

The PLC gives a part id and a trigger (OPC UA nodes of the ``opcua`` sink, or the MQTT
topics of ``mqtt`` here); the wrapped source's next sample is taken under that part id,
and its decision answers the PLC (:mod:`flowedge.edge.handshake`). Samples the wrapped
source offers between triggers wait in it (a folder's next file, a camera's next frame).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any, Literal

from pydantic import Field, PrivateAttr, model_validator

from flowedge.core.validation import DAY_S
from flowedge.edge.checks import CheckResult
from flowedge.edge.handshake import Handshake
from flowedge.edge.handshake_mqtt import HandshakeTopics, MqttHandshake
from flowedge.edge.sources.base import (
    Frame,
    Source,
    SourceBaseConfig,
    SourceContext,
    SourceKind,
    replayed,
)
from flowedge.edge.spool import IntakeRow


class TriggeredConfig(SourceBaseConfig):
    """A source taken by PLC trigger; ``source`` is the wrapped source (any other kind)."""

    kind: Literal["triggered"] = "triggered"
    source: dict[str, Any] = Field(
        description="the wrapped source's keys (kind, path, uri, ...); its name is this one's"
    )
    ack_timeout_s: float = Field(
        10.0, gt=0, le=DAY_S, description="a result not acknowledged this long: an event"
    )
    mqtt: HandshakeTopics | None = Field(
        None, description="the handshake over MQTT topics (PLCs without OPC UA); None: OPC UA only"
    )
    _inner: Any = PrivateAttr(None)

    @model_validator(mode="after")
    def _wrapped(self) -> TriggeredConfig:
        from flowedge.edge.sources import parse_source  # the registry imports this module

        if self.source.get("kind") == "triggered":
            raise ValueError("a triggered source cannot wrap another triggered source")
        if self.backpressure != "block":  # a dropped sample would leave the PLC waiting
            raise ValueError("a triggered source needs backpressure: block (each trigger answered)")
        self._inner = parse_source({**self.source, "name": self.name})
        return self

    @property
    def inner(self) -> SourceBaseConfig:
        return self._inner


class TriggeredSource:
    """Yields the wrapped source's next frame per accepted trigger, under the PLC's part id."""

    def __init__(self, cfg: TriggeredConfig, context: SourceContext) -> None:
        from flowedge.edge.sources import make_source

        self.name, self.cfg = cfg.name, cfg
        self.inner: Source = make_source(cfg.inner, context)
        self.modality = self.inner.modality
        self.handshake = context.handshakes.add(
            Handshake(cfg.name, cfg.ack_timeout_s, context.events)
        )
        self.transport = None
        if cfg.mqtt is not None and context.broker is not None:
            self.transport = MqttHandshake(self.handshake, context.broker, cfg.mqtt)

    def replay(self, row: IntakeRow) -> Frame:
        """A journal row left by a crash: the wrapped source reads it again."""
        return getattr(self.inner, "replay", replayed)(row)

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        inner = self.inner.frames(stop)
        try:
            while not stop.is_set():
                part_id = self.handshake.wait_trigger(stop)
                if part_id is None:
                    return
                frame = next(inner, None)
                if frame is None:  # the wrapped source ended: the trigger gets no sample
                    return
                yield replace(frame, part_id=part_id)
        finally:
            if self.transport is not None:
                self.transport.close()
            self.handshake.close()


def check(cfg: TriggeredConfig, timeout_s: float) -> CheckResult:
    """The wrapped source's own check (a trigger is not needed to see it deliver)."""
    from flowedge.edge.sources import SOURCE_KINDS

    return SOURCE_KINDS[cfg.inner.kind].check(cfg.inner, timeout_s)


KIND = SourceKind(TriggeredConfig, TriggeredSource, check)
