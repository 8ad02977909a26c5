"""The PLC handshake over MQTT topics, for PLCs that speak MQTT but not OPC UA.

A thin transport over :class:`flowedge.edge.handshake.Handshake` (the OPC UA one is in the
``opcua`` sink): the PLC publishes a part id on ``trigger_topic`` (plain text, or JSON
``{"part_id": "..."}``); the station answers on ``result_topic`` (QoS 1, JSON: part id,
decision, score, threshold, normalised score, seq, error, decided_utc) and on
``state_topic`` (retained ``ready``/``busy``/``result_ready``/``stopped``); the PLC acknowledges on ``ack_topic``
(empty, the part id, or JSON ``{"part_id": "..."}``). It uses its own client on the
station's broker (the ``mqtt`` section's host, credentials and TLS).
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any, Literal

import paho.mqtt.client as mqtt
from pydantic import Field

from flowedge.core.broker import MQTTConfig, MqttString, new_client
from flowedge.core.validation import Strict
from flowedge.edge.handshake import RESULT_READY, STOPPED, Handshake, Snapshot

log = logging.getLogger(__name__)

STOPPED_PUBLISH_S = 2.0  # how long a stopping source waits for its "stopped" state to go out
RESULT_FIELDS = ("part_id", "decision", "score", "threshold", "normalised_score", "seq", "error")


class HandshakeTopics(Strict):
    """The handshake's topics on the station's broker (each PLC line its own)."""

    trigger_topic: MqttString = Field(min_length=1)
    result_topic: MqttString = Field(min_length=1)
    ack_topic: MqttString = Field(min_length=1)
    state_topic: MqttString | None = Field(None, description="retained state; None: not sent")
    qos: Literal[0, 1] = 1


def part_id_of(payload: bytes) -> str:
    """The part id a PLC sent: plain text or JSON ``{"part_id": ...}``; '' when there is none."""
    text = payload.decode("utf-8", "replace").strip()
    if text.startswith("{"):
        try:
            value = json.loads(text).get("part_id")
        except (ValueError, AttributeError):
            return ""
        return "" if value is None else str(value).strip()
    return text


def result_message(snapshot: Snapshot) -> bytes:
    """The answer to a trigger: the PLC's part id echoed with the decision."""
    doc = snapshot.result or {}
    body = {key: doc.get(key) for key in RESULT_FIELDS}
    body["part_id"] = snapshot.part_id
    body["decided_utc"] = doc.get("decided_utc")
    body["source"] = snapshot.source
    return json.dumps(body, separators=(",", ":")).encode()


class MqttHandshake:
    """Subscribes to the trigger and ack topics; publishes results (and the state) on change."""

    def __init__(self, handshake: Handshake, broker: MQTTConfig, topics: HandshakeTopics) -> None:
        self.handshake, self.topics = handshake, topics
        protocol = mqtt.MQTTv5 if broker.protocol == "5" else mqtt.MQTTv311
        # one per process and source: two stations on one broker never take each other's place
        client_id = f"{broker.client_id or 'flowedge'}-{handshake.source}-hs-{uuid.uuid4().hex[:6]}"
        self.client = new_client(broker, client_id, protocol)
        self.client.on_connect = self._subscribe
        self.client.on_message = self._message
        self.client.reconnect_delay_set(broker.reconnect_min_s, broker.reconnect_max_s)
        self.client.connect_async(broker.host, broker.port, broker.keepalive_s)
        self.client.loop_start()
        handshake.listen(self._changed)

    def _subscribe(self, client: mqtt.Client, *_args: Any) -> None:
        t = self.topics
        client.subscribe([(t.trigger_topic, t.qos), (t.ack_topic, t.qos)])  # again on reconnect

    def _message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.retain:  # an old trigger or ack kept by the broker is not this part's
            log.warning("handshake: retained message on %s ignored", message.topic)
            return
        part_id = part_id_of(message.payload)
        origin = f"mqtt {message.topic}"
        if message.topic == self.topics.trigger_topic:
            self.handshake.trigger(part_id, origin)
        else:
            self.handshake.acknowledge(origin, part_id or None)

    def _changed(self, snapshot: Snapshot) -> None:
        t = self.topics
        if snapshot.state == RESULT_READY and not snapshot.timed_out:
            self.client.publish(t.result_topic, result_message(snapshot), qos=t.qos)
        if t.state_topic:
            sent = self.client.publish(t.state_topic, snapshot.state, qos=t.qos, retain=True)
            if snapshot.state == STOPPED:  # the last word before the transport closes
                try:
                    sent.wait_for_publish(STOPPED_PUBLISH_S)
                except (RuntimeError, ValueError) as exc:  # not connected: the retained
                    log.warning("handshake: %s not sent: %s", t.state_topic, exc)  # state stays

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
