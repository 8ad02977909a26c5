"""The MQTT sink: each record as JSON on ``<prefix>/<site>/<station>/[<sensor>/]{decision,event}``.

The sender thread walks the spool from this sink's cursor and keeps up to ``window``
messages in flight at QoS 1. paho keeps unacknowledged messages across reconnects and
re-sends them in order, so while the broker is away records simply accumulate in the
spool and go out, in order, when it returns; after a process restart everything past
the cursor is sent again (at-least-once: a PLC de-duplicates by ``seq``). The retained
status topic doubles as the Last Will, set before connecting.

When ``commands.allowed`` names ``resend``, the sink also subscribes to
``<prefix>/<site>/<station>/command/resend``: the fleet historian's signed requests
(edge/resend.py checks them), answered by publishing the decisions again, byte for byte,
on ``<prefix>/<site>/<station>/<sensor>/decision/resent``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from typing import Annotated, Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import AfterValidator, Field

from flowedge.calibration.history.resend import MAX_REQUEST_BYTES
from flowedge.core.broker import (
    AUTH_FAILURES,
    MQTT_MAX_STRING_BYTES,
    UNSUPPORTED_PROTOCOL,
    MQTTConfig,
    mqtt_string,
    new_client,
    protocol_number,
)
from flowedge.edge.checks import CheckResult, failed, passed
from flowedge.edge.sinks.base import Delivery, SinkBaseConfig, SinkContext, SinkKind
from flowedge.edge.spool import Record
from flowedge.edge.timestamps import utc_now

log = logging.getLogger(__name__)

STATUS_SCHEMA = "flowedge.status/1"
CONTENT_TYPE = "application/json"
MQTT_MAX_EXPIRY_S = 2**32 - 1  # MQTT 5 Message Expiry Interval: four-byte integer
LONGEST_TOPIC_SUFFIX = "/decision/resent"  # the longest per-sensor topic the sink publishes
RESEND = "resend"


def _topic_prefix(value: str) -> str:
    """Topic levels the station publishes under: no wildcards, no '$', no empty level."""
    mqtt_string(value)
    if not value:
        raise ValueError("must not be empty (the default is 'flowedge')")
    if "+" in value or "#" in value:
        raise ValueError("must not contain the MQTT wildcards '+' or '#'")
    if value.startswith("$"):
        raise ValueError("must not start with '$' (reserved for broker topics such as $SYS)")
    if "" in value.split("/"):
        raise ValueError("must not start or end with '/' or contain '//' (an empty topic level)")
    return value


class MqttSinkConfig(SinkBaseConfig, MQTTConfig):
    """The ``mqtt`` section (the default sink), or a further broker under ``sinks``."""

    kind: Literal["mqtt"] = "mqtt"
    name: str = Field("mqtt", pattern=r"^[A-Za-z0-9_.-]+$", min_length=1, max_length=64)
    topic_prefix: Annotated[str, AfterValidator(_topic_prefix)] = "flowedge"
    message_expiry_s: int = Field(
        0, ge=0, le=MQTT_MAX_EXPIRY_S, description="MQTT 5 expiry for decisions; 0: none"
    )

    def client_id_for(self, site: str, station: str) -> str:
        """The configured client id, else flowedge-<site>-<station> (plus the sink's name
        when it is not the default sink, so two brokers' sessions stay apart)."""
        if self.client_id:
            return self.client_id
        suffix = "" if self.name == "mqtt" else f"-{self.name}"
        return f"flowedge-{site}-{station}{suffix}"

    def station_problems(self, site: str, station: str, sources: list[str]) -> list[str]:
        longest = max(sources, key=len, default="")
        topic = f"{Topics(self.topic_prefix, site, station).base}/{longest}{LONGEST_TOPIC_SUFFIX}"
        size = len(topic.encode("utf-8"))
        if size > MQTT_MAX_STRING_BYTES:
            return [
                f"{self.name}.topic_prefix is too long: topics would be {size} bytes in UTF-8, "
                f"MQTT allows {MQTT_MAX_STRING_BYTES}"
            ]
        return []


class Topics:
    """The topic layout: ``<prefix>/<site>/<station>/[<sensor>/]{decision,event,status}``."""

    def __init__(self, prefix: str, site: str, station: str) -> None:
        self.base = f"{prefix}/{site}/{station}"

    def record(self, record: Record) -> str:
        """A decision's or an event's topic (a station-wide event has no sensor level)."""
        sensor = f"{record.source}/" if record.source else ""
        return f"{self.base}/{sensor}{record.kind}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    def command(self, name: str) -> str:
        """Where the station takes command ``name`` (only when commands.allowed names it)."""
        return f"{self.base}/command/{name}"

    def resent(self, sensor: str) -> str:
        """Where decisions sent again on a historian's request go (not the live topic, so a
        PLC never sees an old decision twice)."""
        return f"{self.base}/{sensor}/decision/resent"


def request_arguments(payload: bytes) -> dict[str, Any]:
    """A request's fields, or a short account of a payload that is none (which the command
    then refuses, with this in its event)."""
    if len(payload) > MAX_REQUEST_BYTES:
        return {"payload": f"{len(payload)} bytes, more than a request ({MAX_REQUEST_BYTES})"}
    try:
        doc = json.loads(payload)
    except ValueError:
        doc = None
    return doc if isinstance(doc, dict) else {"payload": payload[:200].decode("utf-8", "replace")}


class MqttSink:
    """Owns the paho client and the sender thread; safe to call ``wake`` from any thread."""

    def __init__(self, cfg: MqttSinkConfig, context: SinkContext, window: int = 64) -> None:
        self.name, self.mqtt_cfg, self.context = cfg.name, cfg, context
        self.metrics = context.metrics
        self.topics = Topics(cfg.topic_prefix, context.site, context.station)
        self.window = window
        self.client_id = cfg.client_id_for(context.site, context.station)
        self.delivery = Delivery(context.spool, cfg.name, cfg.max_backlog)
        self.connected = False
        self.last_error = ""
        self._protocol = protocol_number(cfg.protocol)
        self._kick = threading.Event()  # new records, acks, connection changes
        self._acks: deque[int] = deque()  # mids acknowledged by the broker (appended by paho)
        self._inflight: dict[int, int] = {}  # paho mid -> record id
        self._requests: deque[tuple[str, bytes]] = deque()  # (topic, payload) of commands
        self._takes_resend = RESEND in context.commands.allowed
        self._stop = threading.Event()
        self._stopping_reason = ""  # set by stop(): a reconnect then announces offline
        self._rebuild = False
        self._thread = threading.Thread(target=self._run, name=f"{cfg.name}-sender", daemon=True)
        self.client = self._make_client()
        context.spool.subscribe(self.wake)

    # --- client ---------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        c = self.mqtt_cfg
        client = new_client(c, self.client_id, self._protocol)
        will = self._status_payload("offline", "connection lost (process died or network down)")
        client.will_set(
            self.topics.status, will, qos=1, retain=True, properties=self._props(expiry=False)
        )
        client.reconnect_delay_set(c.reconnect_min_s, c.reconnect_max_s)  # floats work
        client.max_inflight_messages_set(self.window)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_connect_fail = self._on_connect_fail
        client.on_message = self._on_message
        return client

    def _props(self, expiry: bool) -> Properties | None:
        if self._protocol != mqtt.MQTTv5:
            return None
        props = Properties(PacketTypes.PUBLISH)
        props.ContentType = CONTENT_TYPE
        if expiry and self.mqtt_cfg.message_expiry_s:
            props.MessageExpiryInterval = self.mqtt_cfg.message_expiry_s
        return props

    def _status_payload(self, state: str, reason: str) -> bytes:
        doc = {
            "schema": STATUS_SCHEMA,
            "site": self.context.site,
            "station": self.context.station,
            "state": state,
            "reason": reason,
            "utc": utc_now(),
            **self.context.status_fields(),
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    def start(self) -> None:
        c = self.mqtt_cfg
        log.info(
            "MQTT: connecting to %s:%d as %s (%s)",
            c.host,
            c.port,
            self.client_id,
            "MQTT 5" if self._protocol == mqtt.MQTTv5 else "MQTT 3.1.1",
        )
        self.client.connect_async(c.host, c.port, keepalive=c.keepalive_s)
        self.client.loop_start()
        self._thread.start()

    def health(self) -> str:
        if self.connected:
            return "broker connected"
        return f"broker DOWN ({self.last_error or 'connecting'})"

    def status_changed(self, reason: str) -> None:
        if self.connected:
            self.publish_status("online", reason)

    # --- callbacks (paho network thread: never block here) -----------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        if reason_code.is_failure:
            code = reason_code.value
            c = self.mqtt_cfg
            if (
                code in UNSUPPORTED_PROTOCOL
                and c.protocol == "auto"
                and self._protocol == mqtt.MQTTv5
            ):
                log.warning("MQTT: broker does not speak MQTT 5; falling back to 3.1.1")
                self._rebuild = True
                self.wake()
                return
            hint = (
                f"check mqtt.username / ${c.username_env} and ${c.password_env} (or the broker's ACL)"
                if code in AUTH_FAILURES
                else "check the broker configuration"
            )
            self.last_error = (
                f"broker {c.host}:{c.port} refused the connection: {reason_code} ({hint})"
            )
            log.error(
                "MQTT: %s; retrying with backoff up to %.0f s", self.last_error, c.reconnect_max_s
            )
            self.context.emit(None, "broker_refused", self.last_error, reason_code=code)
            return
        if self._takes_resend:  # before "online": a historian may ask as soon as it sees it
            client.subscribe(self.topics.command(RESEND), qos=1)
        self.connected = True
        self.last_error = ""
        self.metrics.broker_connected.set(1)
        log.info("MQTT: connected to %s:%d", self.mqtt_cfg.host, self.mqtt_cfg.port)
        if self._stopping_reason:
            self.publish_status("offline", self._stopping_reason)
        else:
            self.publish_status("online", "running")
        self.wake()

    def _on_connect_fail(self, client, userdata) -> None:  # noqa: ANN001
        c = self.mqtt_cfg
        error = (
            f"cannot reach broker {c.host}:{c.port} (broker down, network, firewall or TLS "
            "certificates: check mqtt.host, mqtt.port, mqtt.tls)"
        )
        if error != self.last_error:  # once per outage, not once per retry
            log.warning("MQTT: %s; decisions wait in the spool, retrying", error)
        self.last_error = error

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        was = self.connected
        self.connected = False
        self.metrics.broker_connected.set(0)
        if was and not self._stop.is_set():
            log.warning(
                "MQTT: connection lost (%s); %d message(s) wait in the spool, reconnecting",
                reason_code,
                self.delivery.backlog(),
            )

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:  # noqa: ANN001
        # paho holds its message lock here: only lock-free appends and an Event, never our locks
        self._acks.append(mid)
        self._kick.set()

    def _on_message(self, client, userdata, message) -> None:  # noqa: ANN001
        self._requests.append((message.topic, message.payload))
        self._kick.set()

    # --- sender ----------------------------------------------------------------------
    def wake(self) -> None:
        self._kick.set()

    def publish_status(self, state: str, reason: str) -> mqtt.MQTTMessageInfo:
        return self.client.publish(
            self.topics.status,
            self._status_payload(state, reason),
            qos=1,
            retain=True,
            properties=self._props(expiry=False),
        )

    def _run(self) -> None:
        """Only this thread touches ``_inflight`` and the delivery cursor."""
        while not self._stop.is_set():
            self._kick.clear()  # cleared before looking: a later wake is never missed
            acked = []
            while self._acks:
                record_id = self._inflight.pop(self._acks.popleft(), None)
                if record_id is not None:
                    acked.append(record_id)
            if acked:
                self.delivery.acknowledged(acked)
            self._answer_requests()
            if self._rebuild:
                self._switch_to_311()
                continue
            room = self.window - len(self._inflight)
            if self.connected and room > 0:
                records = self.delivery.next(room)
                for record in records:
                    info = self.client.publish(
                        self.topics.record(record),
                        record.body,
                        qos=1,
                        properties=self._props(expiry=record.kind == "decision"),
                    )
                    self._inflight[info.mid] = record.id
                self.metrics.spool_messages.set(self.context.spool.count())
                if records:
                    continue
            self._kick.wait(0.5)

    def _answer_requests(self) -> None:
        """Run each request through the station's commands (checked, logged, an event) and
        publish what an accepted one returns on the sensor's resent topic."""
        while self._requests:
            topic, payload = self._requests.popleft()
            args = request_arguments(payload)
            result = self.context.commands.run(RESEND, args, f"mqtt sink {self.name} ({topic})")
            for document in result.documents:
                self.client.publish(
                    self.topics.resent(args["sensor"]),
                    document,
                    qos=1,
                    properties=self._props(expiry=True),
                )

    def _switch_to_311(self) -> None:
        self._rebuild = False
        self.client.loop_stop()
        self._protocol = mqtt.MQTTv311
        self._inflight.clear()
        self.delivery.rewind()
        self.client = self._make_client()
        c = self.mqtt_cfg
        self.client.connect_async(c.host, c.port, keepalive=c.keepalive_s)
        self.client.loop_start()

    def _announce_offline(self, reason: str, deadline: float) -> bool:
        """Publish the retained ``offline`` status until the broker acknowledges it or time is up."""
        while time.monotonic() < deadline:
            if self.connected:
                info = self.publish_status("offline", reason)
                try:
                    info.wait_for_publish(timeout=max(0.0, deadline - time.monotonic()))
                except (RuntimeError, ValueError) as exc:  # lost the connection meanwhile
                    log.debug("MQTT: offline status not confirmed yet: %s", exc)
                if info.is_published():
                    return True
            time.sleep(0.05)
        return False

    def flush(self, timeout_s: float) -> bool:
        """Wait until the spool is empty (all acknowledged); False on timeout."""
        return self.delivery.wait_until_delivered(timeout_s, self.wake)

    def stop(self, reason: str, flush_timeout_s: float = 5.0) -> None:
        """Send what the broker takes within the timeout, make the retained status ``offline``,
        disconnect.

        A broker that is away when the station stops gets ``offline`` if it is back
        within the timeout (paho keeps reconnecting meanwhile); after that the retained
        status keeps its last value, and only a connection that dies without DISCONNECT
        leaves it to the Last Will (docs/pipeline.md). Whatever is not acknowledged stays
        in the spool for the next start.
        """
        self._stopping_reason = reason
        deadline = time.monotonic() + flush_timeout_s
        if self.connected:
            self.flush(flush_timeout_s)
        else:
            log.info(
                "MQTT: broker away while stopping; offline status sent if it is back within %.0f s",
                flush_timeout_s,
            )
        if not self._announce_offline(reason, max(deadline, time.monotonic() + 2.0)):
            log.warning(
                "MQTT: broker %s:%d unreachable while stopping: the retained status may still "
                "read online until the station starts again",
                self.mqtt_cfg.host,
                self.mqtt_cfg.port,
            )
        self._stop.set()
        self.wake()
        self._thread.join(timeout=2.0)
        self.client.disconnect()
        self.client.loop_stop()
        self.metrics.broker_connected.set(0)


def check(c: MqttSinkConfig, site: str, station: str, timeout_s: float) -> CheckResult:
    """Connect and disconnect with the station's credentials and TLS; show the CONNACK."""
    name = f"broker {c.host}:{c.port}"
    protocols = {"5": [mqtt.MQTTv5], "3.1.1": [mqtt.MQTTv311]}.get(
        c.protocol, [mqtt.MQTTv5, mqtt.MQTTv311]
    )
    # under a '-check' client id, so a running station is not disconnected
    client_id = f"{c.client_id_for(site, station)}-check"
    for protocol in protocols:  # auto: MQTT 5, then 3.1.1 if the broker does not speak 5
        result, reason = _connect_once(c, client_id, name, protocol, timeout_s)
        if reason is None or reason.value not in UNSUPPORTED_PROTOCOL:
            break
    return result


def _connect_once(
    c: MqttSinkConfig, client_id: str, name: str, protocol: int, timeout_s: float
) -> tuple[CheckResult, Any]:
    """One CONNECT: the result and the CONNACK reason code (None without a CONNACK)."""
    version = "MQTT 5" if protocol == mqtt.MQTTv5 else "MQTT 3.1.1"
    connack: list[Any] = []
    answered = threading.Event()

    def on_connect(_client, _userdata, _flags, reason_code, _properties) -> None:  # noqa: ANN001
        connack.append(reason_code)
        answered.set()

    try:
        client = new_client(c, client_id, protocol)
        client.on_connect = on_connect
        client.connect(c.host, c.port, keepalive=c.keepalive_s)
    except (OSError, ValueError) as exc:  # refused, unreachable, DNS, TLS handshake/certificates
        return failed(
            name,
            f"cannot connect ({exc}): check mqtt.host, mqtt.port, the firewall and mqtt.tls",
        ), None
    client.loop_start()
    try:
        if not answered.wait(timeout_s):
            return failed(
                name, f"no CONNACK within {timeout_s:g} s ({version}): is it an MQTT broker?"
            ), None
        reason = connack[0]
        if reason.is_failure:
            hint = (
                f"check mqtt.username / ${c.username_env} and ${c.password_env} and the ACL"
                if reason.value in AUTH_FAILURES
                else "check the broker configuration"
            )
            return failed(name, f"refused ({version}, CONNACK {reason}): {hint}"), reason
        return passed(name, f"connected ({version}, CONNACK {reason}) as {client_id}"), reason
    finally:
        client.disconnect()
        client.loop_stop()


KIND = SinkKind(MqttSinkConfig, MqttSink, check)
