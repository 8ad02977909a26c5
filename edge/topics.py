"""The MQTT topic layout: ``<prefix>/<site>/<station>/[<sensor>/]{decision,event,status}``.

One place for it, because the pipeline writes topics into the spool long before the
publisher (if any) sends them.
"""

from __future__ import annotations

from flowedge.edge.config import FlowedgeConfig


class Topics:
    def __init__(self, cfg: FlowedgeConfig) -> None:
        self.base = f"{cfg.mqtt.topic_prefix}/{cfg.site}/{cfg.station}"

    def decision(self, sensor: str) -> str:
        return f"{self.base}/{sensor}/decision"

    def event(self, sensor: str | None) -> str:
        return f"{self.base}/{sensor}/event" if sensor else f"{self.base}/event"

    @property
    def status(self) -> str:
        return f"{self.base}/status"
