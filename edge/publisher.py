"""MQTT publishing from the spool: in order, QoS 1, deleted only on PUBACK.

The sender thread walks the spool by row id and keeps up to ``window`` messages
in flight. paho keeps unacknowledged messages across reconnects and re-sends them
in order, so while the broker is away rows simply accumulate in the spool and
go out, in order, when it returns; after a process restart everything still in
the spool is sent again (at-least-once: a PLC de-duplicates by ``seq``).
The retained status topic doubles as the Last Will, set before connecting.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from flowedge.edge.config import FlowedgeConfig
from flowedge.edge.metrics import Metrics
from flowedge.edge.mqtt_client import new_client
from flowedge.edge.sample import utc_now
from flowedge.edge.spool import Spool
from flowedge.edge.topics import Topics

log = logging.getLogger(__name__)

STATUS_SCHEMA = "flowedge.status/1"
CONTENT_TYPE = "application/json"
# MQTT 5 "Unsupported protocol version"; a 3.1.1-only broker answers 1 ("unacceptable version")
UNSUPPORTED_PROTOCOL = {1, 132}
AUTH_FAILURES = {4, 5, 134, 135}  # 3.1.1 and 5 codes for bad credentials / not authorised


def _protocol(name: str) -> int:
    return mqtt.MQTTv311 if name == "3.1.1" else mqtt.MQTTv5


class Publisher:
    """Owns the paho client and the sender thread; safe to call ``wake`` from any thread."""

    def __init__(
        self,
        cfg: FlowedgeConfig,
        spool: Spool,
        metrics: Metrics,
        status_fields: Callable[[], dict[str, Any]],
        on_event: Callable[..., None],
        window: int = 64,
    ) -> None:
        self.cfg, self.mqtt_cfg, self.spool, self.metrics = cfg, cfg.mqtt, spool, metrics
        self.topics = Topics(cfg)
        self.status_fields, self.on_event, self.window = status_fields, on_event, window
        self.client_id = cfg.mqtt.client_id or f"flowedge-{cfg.site}-{cfg.station}"
        self.connected = False
        self.last_error = ""
        self._protocol = _protocol(cfg.mqtt.protocol)
        self._kick = threading.Event()  # new rows, acks, connection changes
        self._acks: deque[int] = deque()  # mids acknowledged by the broker (appended by paho)
        self._inflight: dict[int, int] = {}  # paho mid -> spool row id
        self._cursor = 0  # highest spool row id handed to paho in this process
        self._stop = threading.Event()
        self._stopping_reason = ""  # set by stop(): a reconnect then announces offline
        self._rebuild = False
        self._thread = threading.Thread(target=self._run, name="mqtt-sender", daemon=True)
        self.client = self._make_client()

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
            "site": self.cfg.site,
            "station": self.cfg.station,
            "state": state,
            "reason": reason,
            "utc": utc_now(),
            **self.status_fields(),
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
            self.on_event(None, "broker_refused", self.last_error, reason_code=code)
            return
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
                self.spool.count(),
            )

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:  # noqa: ANN001
        # paho holds its message lock here: only lock-free appends and an Event, never our locks
        self._acks.append(mid)
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
        """Only this thread touches ``_inflight`` and ``_cursor``."""
        while not self._stop.is_set():
            self._kick.clear()  # cleared before looking: a later wake is never missed
            while self._acks:
                row_id = self._inflight.pop(self._acks.popleft(), None)
                if row_id is not None:
                    self.spool.delete(row_id)
            if self._rebuild:
                self._switch_to_311()
                continue
            room = self.window - len(self._inflight)
            if self.connected and room > 0:
                rows = self.spool.after(self._cursor, room)
                for row in rows:
                    expiry = row.topic.endswith("/decision")
                    info = self.client.publish(
                        row.topic,
                        row.payload,
                        qos=1,
                        retain=row.retain,
                        properties=self._props(expiry),
                    )
                    self._inflight[info.mid] = row.id
                    self._cursor = row.id
                self.metrics.spool_messages.set(self.spool.count())
                if rows:
                    continue
            self._kick.wait(0.5)

    def _switch_to_311(self) -> None:
        self._rebuild = False
        self.client.loop_stop()
        self._protocol = mqtt.MQTTv311
        self._inflight.clear()
        self._cursor = 0
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
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.spool.count() == 0:
                return True
            self.wake()
            time.sleep(0.02)
        return self.spool.count() == 0

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
