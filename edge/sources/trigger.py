"""The PLC's motion trigger over MQTT: a subscription that turns messages into marks.

Message format (documented in docs/audio.md): ``start``/``stop``, a digital input's
``1``/``0`` (also ``on``/``off``, ``true``/``false``), or JSON
``{"state": "start"|"stop", "motion": "fold"}`` where ``motion`` names the label. A
message that is none of these is logged and ignored: the PLC's next mark still counts.
The subscription uses its own client on the station's broker (same credentials and
TLS), so a slow publisher never delays a mark; paho reconnects and resubscribes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

import paho.mqtt.client as mqtt
from pydantic import Field

from flowedge.core.broker import MQTTConfig, MqttString, new_client
from flowedge.core.validation import Strict
from flowedge.modalities.audio_trigger import parse_trigger

log = logging.getLogger(__name__)


class TriggerConfig(Strict):
    """Motions cut where the PLC says (an MQTT topic on the station's broker), not by energy.

    Payloads: ``start``/``stop`` (also ``1``/``0``, ``on``/``off``, ``true``/``false``: a
    digital input), or JSON ``{"state": "start"|"stop", "motion": "fold"}``; see docs/audio.md.
    """

    topic: MqttString = Field(min_length=1)
    qos: Literal[0, 1] = 1


class MqttTrigger:
    """Subscribes to ``trigger.topic`` until closed; ``on_mark(state, label)`` per valid message."""

    def __init__(
        self,
        c: MQTTConfig,
        trigger: TriggerConfig,
        on_mark: Callable[[str, str | None], None],
        on_error: Callable[[str], None] = log.warning,
    ) -> None:
        self.trigger, self.on_mark, self.on_error = trigger, on_mark, on_error
        protocol = mqtt.MQTTv5 if c.protocol == "5" else mqtt.MQTTv311
        self.client = new_client(c, f"{c.client_id or 'flowedge'}-trigger", protocol)
        self.client.on_connect = self._subscribe
        self.client.on_message = self._message
        self.client.reconnect_delay_set(c.reconnect_min_s, c.reconnect_max_s)
        self.client.connect_async(c.host, c.port, c.keepalive_s)
        self.client.loop_start()

    def _subscribe(self, client: mqtt.Client, *_args: Any) -> None:
        client.subscribe(self.trigger.topic, qos=self.trigger.qos)  # again after a reconnect

    def _message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            state, label = parse_trigger(message.payload)
        except ValueError as exc:
            self.on_error(f"trigger topic {message.topic}: {exc}; message ignored")
            return
        self.on_mark(state, label)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
