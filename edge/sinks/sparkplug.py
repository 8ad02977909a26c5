"""The Sparkplug B sink: the station as an Eclipse Sparkplug 3.0 edge node for SCADA hosts.

Group id = ``group_id`` (default: the site), edge node id = ``edge_node_id`` (default: the
station), one device per source. On every connection the edge node publishes NBIRTH (seq 0,
``bdSeq``, the station's health) and a DBIRTH per source that is not lost; each decision
becomes a DDATA of its source, each event an NDATA (``Event/*``); a ``source_lost`` record
is a DDEATH, the source's next record or ``source_reconnected`` a DBIRTH again. NDEATH is the
MQTT Will, with the ``bdSeq`` of the NBIRTH it ends; ``bdSeq`` is kept in a small file beside
the spool, so a restarted station never reuses the number of the session it replaces.

Sparkplug publishes data at QoS 0, so the broker acknowledges nothing: after each batch
the sender asks the broker for an UNSUBACK (of a topic it never subscribed) on the same
connection; the broker answers in order, so the UNSUBACK proves it took the whole batch,
and only then does this sink's cursor in the spool move. What was in flight when the
connection dropped goes out again after the next NBIRTH. A record decided before the
current NBIRTH is sent with ``is_historical`` and its original timestamp, so a host files
a replayed decision in its history and never shows it as the live value.

NCMD ``Node Control/Rebirth`` publishes the births again; a write of ``Station/Threshold``
(NCMD) or a device's ``Threshold`` (DCMD) is the station's ``set_threshold`` command,
refused unless ``commands.allowed`` names it; the next NDATA answers with the threshold
in force. With ``primary_host_id`` the edge node births only while that host's STATE says
online; meanwhile records wait in the spool and follow as history.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import socket
import threading
import time
from collections import deque
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

import paho.mqtt.client as mqtt
from pydantic import Field

from flowedge.core.broker import AUTH_FAILURES, MQTTConfig, new_client
from flowedge.core.errors import ConfigError
from flowedge.core.validation import Name
from flowedge.edge.checks import CheckResult, failed
from flowedge.edge.sinks import mqtt as mqtt_sink
from flowedge.edge.sinks.base import Delivery, SinkBaseConfig, SinkContext, SinkKind
from flowedge.edge.spool import Record

if TYPE_CHECKING:
    from flowedge.core.sparkplug import Metric, Value

log = logging.getLogger(__name__)

NAMESPACE = "spBv1.0"
DEAD_STATES = ("lost", "failed")  # a source in these states gets no DBIRTH at a birth
BARRIER = "flowedge-delivery-barrier"  # never subscribed: its UNSUBACK is the broker's receipt
BATCH = 64  # records per barrier


class SparkplugSinkConfig(SinkBaseConfig, MQTTConfig):
    """A Sparkplug B edge node under ``sinks`` (kind ``sparkplug``)."""

    kind: Literal["sparkplug"] = "sparkplug"
    protocol: Literal["3.1.1", "5"] = Field(
        "3.1.1", description="3.1.1 (every Sparkplug broker) or 5 (clean start, no session)"
    )
    group_id: Name | None = Field(None, description="Sparkplug group id; None: the site")
    edge_node_id: Name | None = Field(None, description="edge node id; None: the station")
    primary_host_id: Name | None = Field(
        None, description="birth (and send) only while this host's spBv1.0/STATE says online"
    )
    health_interval_s: float = Field(
        10.0, gt=0, description="how often changed health values go out as NDATA"
    )

    def client_id_for(self, site: str, station: str) -> str:
        """The configured client id, else flowedge-<site>-<station>-<sink name>."""
        return self.client_id or f"flowedge-{site}-{station}-{self.name}"


def _payload_module(name: str) -> ModuleType:
    """The protobuf encoding, or a clear error naming the extra that installs it."""
    try:
        # import_module, not `from ... import`: it asks sys.modules each time
        return importlib.import_module("flowedge.core.sparkplug")
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"sinks.{name} (kind sparkplug) needs protobuf: pip install 'flowedge[sparkplug]' "
            f"({exc.name} is not installed here)"
        ) from None


def _no_delay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """No Nagle: QoS 0 data gets no answer per message, so a small write would wait for the
    broker's delayed TCP acknowledgement of the one before (tens of milliseconds)."""
    with contextlib.suppress(OSError, AttributeError):  # not a TCP socket
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class BdSeq:
    """The next ``bdSeq`` (0-255) in a file beside the spool, written before it is used:
    every MQTT session gets a new number, also across crashes and restarts."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def take(self) -> int:
        """The number for the next session; the file then holds the one after it."""
        try:
            current = int(self.path.read_text(encoding="ascii")) % 256
        except FileNotFoundError:
            current = 0
        except ValueError:
            log.warning("%s is not a bdSeq number; starting again at 0", self.path)
            current = 0
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("w", encoding="ascii") as handle:
            handle.write(str((current + 1) % 256))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        folder = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
        return current


class SparkplugSink:
    """Owns the paho client and the sender thread, which alone publishes (so ``seq`` counts
    every message in order) and moves the delivery cursor."""

    def __init__(self, cfg: SparkplugSinkConfig, context: SinkContext, window: int = 256) -> None:
        self.sp = _payload_module(cfg.name)
        self.name, self.cfg, self.context, self.window = cfg.name, cfg, context, window
        self.group = cfg.group_id or context.site
        self.node = cfg.edge_node_id or context.station
        self.client_id = cfg.client_id_for(context.site, context.station)
        self.delivery = Delivery(context.spool, cfg.name, cfg.max_backlog)
        self.bdseq = BdSeq(Path(f"{context.spool.path}.{cfg.name}.bdseq"))
        try:
            self._will_bdseq = self.bdseq.take()
        except OSError as exc:
            raise ConfigError(
                f"sinks.{cfg.name}: cannot keep the Sparkplug bdSeq in {self.bdseq.path} "
                f"({exc.strerror}); the spool's directory must be writable by the flowedge user"
            ) from None
        self._protocol = mqtt.MQTTv5 if cfg.protocol == "5" else mqtt.MQTTv311
        self.connected = False
        self.last_error = ""
        self._session = 0  # connections accepted so far (on_connect)
        self._session_bdseq = self._will_bdseq
        self._born: int | None = None  # the session whose births are current
        self._rewound = 0  # the session whose in-flight records were sent again
        self._host_online = cfg.primary_host_id is None
        self._host_stamp = -1
        self._seq = 0
        self._birth_ms = 0
        self._alive: dict[str, bool] = {}  # device -> it has a DBIRTH and no DDEATH since
        self._device_values: dict[str, dict[str, Value]] = {}  # its latest values (DBIRTH)
        self._event_values: dict[str, Value] = dict.fromkeys(self.sp.NODE_EVENT)
        self._health_sent: dict[str, Value] = {}
        self._health_due = 0.0
        self._status_dirty = False
        self._answer_threshold = False
        self._kick = threading.Event()
        self._acks: deque[int] = deque()  # UNSUBACK mids (appended by paho)
        self._incoming: deque[tuple[str, bytes]] = deque()  # NCMD, DCMD, STATE
        self._barriers: dict[int, list[int]] = {}  # UNSUBSCRIBE mid -> record ids before it
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{cfg.name}-sender", daemon=True)
        self.client = self._make_client()
        context.spool.subscribe(self.wake)

    # --- topics and the client ----------------------------------------------------------
    def topic(self, kind: str, device: str | None = None) -> str:
        suffix = f"/{device}" if device else ""
        return f"{NAMESPACE}/{self.group}/{kind}/{self.node}{suffix}"

    def _ndeath(self, bdseq: int) -> bytes:
        return self.sp.encode([self.sp.Metric(self.sp.BDSEQ, self.sp.pb.Int64, bdseq)], None)

    def _make_client(self) -> mqtt.Client:
        client = new_client(self.cfg, self.client_id, self._protocol)
        client.will_set(self.topic("NDEATH"), self._ndeath(self._will_bdseq), qos=1, retain=False)
        client.reconnect_delay_set(self.cfg.reconnect_min_s, self.cfg.reconnect_max_s)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_unsubscribe = self._on_unsubscribe
        client.on_message = self._on_message
        client.on_socket_open = _no_delay
        return client

    def start(self) -> None:
        c = self.cfg
        log.info(
            "Sparkplug: edge node %s/%s connecting to %s:%d as %s",
            self.group,
            self.node,
            c.host,
            c.port,
            self.client_id,
        )
        clean = {"clean_start": True} if self._protocol == mqtt.MQTTv5 else {}
        self.client.connect_async(c.host, c.port, keepalive=c.keepalive_s, **clean)
        self.client.loop_start()
        self._thread.start()

    def health(self) -> str:
        if not self.connected:
            return f"broker DOWN ({self.last_error or 'connecting'})"
        if not self._host_online:
            return f"broker connected, waiting for primary host {self.cfg.primary_host_id}"
        return f"broker connected (edge node {self.group}/{self.node})"

    def status_changed(self, reason: str) -> None:
        self._status_dirty = True
        self.wake()

    def wake(self) -> None:
        self._kick.set()

    # --- callbacks (paho network thread: never block here) -------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        c = self.cfg
        if reason_code.is_failure:
            hint = (
                f"check sinks.{self.name}.username / ${c.username_env} and ${c.password_env}"
                if reason_code.value in AUTH_FAILURES
                else "check the broker configuration"
            )
            self.last_error = (
                f"broker {c.host}:{c.port} refused the connection: {reason_code} ({hint})"
            )
            log.error("Sparkplug: %s; retrying", self.last_error)
            self.context.emit(
                None, "broker_refused", self.last_error, reason_code=reason_code.value
            )
            return
        topics = [self.topic("NCMD"), self.topic("DCMD", "+")]
        if c.primary_host_id:
            topics.append(f"{NAMESPACE}/STATE/{c.primary_host_id}")
        client.subscribe([(topic, 1) for topic in topics])  # before any birth
        self._session_bdseq = self._will_bdseq
        self._host_online = c.primary_host_id is None  # a new session waits for STATE again
        self.last_error = ""
        self.connected = True
        self._session += 1
        log.info("Sparkplug: connected to %s:%d (bdSeq %d)", c.host, c.port, self._session_bdseq)
        self.wake()

    def _on_connect_fail(self, client, userdata) -> None:  # noqa: ANN001
        c = self.cfg
        error = f"cannot reach broker {c.host}:{c.port} (check sinks.{self.name}.host, port, tls)"
        if error != self.last_error:
            log.warning("Sparkplug: %s; records wait in the spool, retrying", error)
        self.last_error = error

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        if not self.connected:
            return
        self.connected = False
        if self._stop.is_set():  # a clean stop: the next start takes the next bdSeq
            return
        try:  # the next CONNECT carries the next bdSeq in its Will
            self._will_bdseq = self.bdseq.take()
        except OSError as exc:
            log.error("Sparkplug: cannot write %s (%s)", self.bdseq.path, exc.strerror)
            self._will_bdseq = (self._will_bdseq + 1) % 256
        client.will_set(self.topic("NDEATH"), self._ndeath(self._will_bdseq), qos=1, retain=False)
        log.warning(
            "Sparkplug: connection lost (%s); %d record(s) wait in the spool",
            reason_code,
            self.delivery.backlog(),
        )
        self.wake()

    def _on_unsubscribe(self, client, userdata, mid, reason_codes, properties) -> None:  # noqa: ANN001
        self._acks.append(mid)
        self._kick.set()

    def _on_message(self, client, userdata, message) -> None:  # noqa: ANN001
        self._incoming.append((message.topic, message.payload))
        self._kick.set()

    # --- sender ----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._kick.clear()  # cleared before looking: a later wake is never missed
            self._take_acks()
            self._handle_incoming()
            if self.connected and self._host_online:
                if self._born != self._session:
                    self._birth()
                self._follow_status()
                if self._send_records():
                    continue
            self._kick.wait(0.5)

    def _take_acks(self) -> None:
        acknowledged: list[int] = []
        while self._acks:
            acknowledged += self._barriers.pop(self._acks.popleft(), [])
        if acknowledged:
            self.delivery.acknowledged(acknowledged)

    def _publish(
        self, kind: str, device: str | None, metrics: list[Metric], stamp: int | None = None
    ) -> None:
        """One message of this session, numbered by ``seq`` (0-255, wrapping)."""
        payload = self.sp.encode(metrics, self._seq, stamp or _now_ms())
        self.client.publish(self.topic(kind, device), payload, qos=0)
        self._seq = (self._seq + 1) % 256

    def _birth(self) -> None:
        """NBIRTH and a DBIRTH per living source; after a new connection, what was in flight
        goes out again (a record decided before this NBIRTH is historical)."""
        if self._rewound != self._session:
            self._barriers.clear()
            self.delivery.rewind()
            self._rewound = self._session
        sp = self.sp
        status = self.context.status_fields()
        health = sp.health_metrics(status, self.context.commands.allowed)
        self._seq, self._birth_ms = 0, _now_ms()
        node = [
            sp.Metric(sp.BDSEQ, sp.pb.Int64, self._session_bdseq),
            sp.Metric(sp.REBIRTH, sp.pb.Boolean, False),
            *sp.metrics(health, sp.NODE_HEALTH),
            *sp.metrics(self._event_values, sp.NODE_EVENT),
        ]
        self._publish("NBIRTH", None, node, self._birth_ms)  # history: what is older
        self._health_sent = health
        self._health_due = time.monotonic() + self.cfg.health_interval_s
        self._alive = {}
        for device, state in status.get("sources", {}).items():
            if state not in DEAD_STATES:
                self._device_birth(device)
        self._born = self._session

    def _device_birth(self, device: str) -> None:
        values = self._device_values.get(device) or dict.fromkeys(self.sp.DEVICE)
        self._publish("DBIRTH", device, self.sp.metrics(values, self.sp.DEVICE))
        self._alive[device] = True

    def _alive_now(self, device: str) -> None:
        if not self._alive.get(device):
            self._device_birth(device)

    def _follow_status(self) -> None:
        """NDATA with the health values that changed, when due or when the state changed."""
        if not self._status_dirty and time.monotonic() < self._health_due:
            return
        self._status_dirty = False
        self._health_due = time.monotonic() + self.cfg.health_interval_s
        health = self.sp.health_metrics(self.context.status_fields(), self.context.commands.allowed)
        changed = {k: v for k, v in health.items() if self._health_sent.get(k) != v}
        if self._answer_threshold:  # a threshold write is answered even when it was refused
            changed[self.sp.STATION_THRESHOLD] = health[self.sp.STATION_THRESHOLD]
            self._answer_threshold = False
        if changed:
            self._publish("NDATA", None, self.sp.metrics(changed, self.sp.NODE_HEALTH))
            self._health_sent.update(changed)

    def _send_records(self) -> bool:
        """The next batch after the cursor, then its barrier; False when there was none."""
        room = self.window - self.delivery.in_flight()
        records = self.delivery.next(min(room, BATCH)) if room > 0 else []
        for record in records:
            try:
                self._send(record)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                log.error(
                    "Sparkplug: record %d (%s) is not a valid document (%s); passed over",
                    record.id,
                    record.kind,
                    exc,
                )
        if records:
            _, mid = self.client.unsubscribe(self.topic("NCMD", BARRIER))
            if mid is not None:
                self._barriers[mid] = [record.id for record in records]
        return bool(records)

    def _send(self, record: Record) -> None:
        sp, doc = self.sp, record.doc()
        device = record.source or doc.get("sensor")
        stamp = sp.epoch_ms(doc["decided_utc"] if record.kind == "decision" else doc["utc"])
        historical = stamp < self._birth_ms
        if record.kind == "decision" or (device and doc["kind"] == "drift"):
            values = (
                sp.decision_metrics(doc) if record.kind == "decision" else sp.drift_metrics(doc)
            )
            self._alive_now(device)
            self._publish("DDATA", device, sp.metrics(values, sp.DEVICE, stamp, historical))
            self._device_values.setdefault(device, dict.fromkeys(sp.DEVICE)).update(values)
            return
        values = sp.event_metrics(doc)
        self._publish("NDATA", None, sp.metrics(values, sp.NODE_EVENT, stamp, historical))
        self._event_values = values
        if device and doc["kind"] == "source_lost" and self._alive.get(device):
            self._publish("DDEATH", device, [])
            self._alive[device] = False
        elif device and doc["kind"] == "source_reconnected":
            self._alive_now(device)

    # --- commands from the host -------------------------------------------------------------
    def _handle_incoming(self) -> None:
        state_topic = f"{NAMESPACE}/STATE/{self.cfg.primary_host_id}"
        while self._incoming:
            topic, data = self._incoming.popleft()
            if self.cfg.primary_host_id and topic == state_topic:
                self._host_state(data)
                continue
            kind = "NCMD" if topic == self.topic("NCMD") else "DCMD"
            try:
                writes = self.sp.commands(data)
            except ValueError as exc:
                log.warning("Sparkplug: %s on %s ignored: %s", kind, topic, exc)
                continue
            for name, value in writes:
                self._command(kind, topic, name, value)

    def _command(self, kind: str, topic: str, name: str, value: Any) -> None:
        sp = self.sp
        if kind == "NCMD" and name == sp.REBIRTH:
            if value is True:
                log.info("Sparkplug: rebirth requested on %s", topic)
                self._born = None
            return
        if (kind, name) in (("NCMD", sp.STATION_THRESHOLD), ("DCMD", sp.DEVICE_THRESHOLD)):
            origin = f"sparkplug sink {self.name} ({kind} {topic})"
            self._answer_threshold = self._status_dirty = True
            self.context.commands.run("set_threshold", {"value": value}, origin)
            return
        log.warning(
            "Sparkplug: %s metric %r on %s is not a command here; ignored", kind, name, topic
        )

    def _host_state(self, data: bytes) -> None:
        state = self.sp.state_online(data)
        if state is None:
            log.warning(
                "Sparkplug: STATE of %s is not Sparkplug 3.0 JSON; ignored",
                self.cfg.primary_host_id,
            )
            return
        online, stamp = state
        if stamp < self._host_stamp:
            return  # an older STATE arriving late
        self._host_stamp = stamp
        if online != self._host_online:
            log.log(
                logging.INFO if online else logging.WARNING,
                "Sparkplug: primary host %s is %s",
                self.cfg.primary_host_id,
                "online: births follow" if online else "offline: records wait in the spool",
            )
            self._host_online, self._born = online, None

    # --- stopping -----------------------------------------------------------------------------
    def flush(self, timeout_s: float) -> bool:
        """Wait until this sink has acknowledged every record; False on timeout."""
        return self.delivery.wait_until_delivered(timeout_s, self.wake)

    def stop(self, reason: str, flush_timeout_s: float = 5.0) -> None:
        """Send what the broker takes within the timeout, then NDEATH and DISCONNECT (a Will
        is not published on a clean disconnect, so the edge node says it itself)."""
        if self.connected:
            self.flush(flush_timeout_s)
        self._stop.set()
        self.wake()
        self._thread.join(timeout=2.0)
        if self.connected:
            info = self.client.publish(
                self.topic("NDEATH"), self._ndeath(self._session_bdseq), qos=1
            )
            try:
                info.wait_for_publish(timeout=2.0)
            except (RuntimeError, ValueError) as exc:  # the connection went meanwhile
                log.debug("Sparkplug: NDEATH not confirmed: %s", exc)
        log.info("Sparkplug: edge node %s/%s offline (%s)", self.group, self.node, reason)
        self.client.disconnect()
        self.client.loop_stop()


def check(c: SparkplugSinkConfig, site: str, station: str, timeout_s: float) -> CheckResult:
    """The protobuf encoding is installed, and the broker takes the station's credentials."""
    try:
        _payload_module(c.name)
    except ConfigError as exc:
        return failed(f"sparkplug {c.name}", str(exc))
    return mqtt_sink.check(c, site, station, timeout_s)  # type: ignore[arg-type]  # same keys


KIND = SinkKind(SparkplugSinkConfig, SparkplugSink, check)
