"""The historian at work: MQTT in, rows committed, then acknowledged; gaps asked for.

paho's network thread only queues what arrives (manual acknowledgement: the broker keeps
each QoS 1 message unacknowledged). The writer, the caller's thread, takes what has
queued up as one batch, commits it, and only then sends the PUBACKs; then it updates the
sensors' sequences and sends the requests that are due. A historian killed before a
commit has acknowledged nothing of that batch: the broker sends it again (the session is
persistent: clean start off, a session expiry). One killed after the commit and before
the PUBACKs gets the batch again and stores nothing twice.
"""

from __future__ import annotations

import importlib
import logging
import queue
import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from flowedge.calibration.history.resend import ResendRequest
from flowedge.core.broker import AUTH_FAILURES, new_client
from flowedge.core.errors import CheckFailedError
from flowedge.historian.config import HistorianConfig
from flowedge.historian.gaps import GapTracker
from flowedge.historian.rows import Decision, parse
from flowedge.historian.sparkplug_rows import NAMESPACE as SPARKPLUG_NAMESPACE
from flowedge.historian.sparkplug_rows import SUBSCRIPTION as SPARKPLUG_DATA
from flowedge.historian.sparkplug_rows import parse_sparkplug
from flowedge.historian.store import Rejected, Store, Written

log = logging.getLogger(__name__)

TICK_S = 0.5  # how often the writer looks for due requests while nothing arrives
REPORT_EVERY_S = 60.0
RETRY_MIN_S, RETRY_MAX_S = 1.0, 30.0
LOGGED_REJECTIONS = 100  # the first ones each get a log line; then every 1000th


@dataclass(frozen=True)
class Message:
    generation: int  # the connection it arrived on: acknowledged only on that one
    mid: int
    qos: int
    topic: str
    payload: bytes


@dataclass
class Totals:
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    requests: int = 0


class Historian:
    def __init__(self, cfg: HistorianConfig) -> None:
        if "sparkplug" in cfg.mqtt.inputs:
            importlib.import_module("flowedge.core.sparkplug")  # protobuf: a clear error now
        self.cfg = cfg
        self.prefix = cfg.mqtt.topic_prefix
        self.secret = cfg.resend.secret() if cfg.resend.enabled else b""
        self.store = Store(cfg.database)
        self.tracker = GapTracker(cfg.resend)
        self.totals = Totals()
        self.inbox: queue.Queue[Message] = queue.Queue()
        self.connected = False
        self._generation = 0
        self._next_report = time.monotonic() + REPORT_EVERY_S
        self.client = self._make_client()

    # --- MQTT (paho's network thread: queue, never block) -----------------------------------
    def _make_client(self) -> mqtt.Client:
        c = self.cfg.mqtt
        client = new_client(c, c.client_id, mqtt.MQTTv5)
        client.manual_ack_set(True)  # PUBACK only after the commit (Historian._acknowledge)
        client.reconnect_delay_set(c.reconnect_min_s, c.reconnect_max_s)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        c = self.cfg.mqtt
        if reason_code.is_failure:
            hint = (
                f"check mqtt.username / ${c.username_env} and ${c.password_env} and the ACL"
                if reason_code.value in AUTH_FAILURES
                else "check the broker configuration"
            )
            log.error("historian: broker %s:%d refused: %s (%s)", c.host, c.port, reason_code, hint)
            return
        self._generation += 1
        # again on every connection: a broker that lost the session lost the subscriptions
        client.subscribe(self._subscriptions())
        self.connected = True
        log.info(
            "historian: connected to %s:%d (%s)",
            c.host,
            c.port,
            "session resumed" if flags.session_present else "new session",
        )

    def _subscriptions(self) -> list[tuple[str, int]]:
        topics = []
        if "mqtt" in self.cfg.mqtt.inputs:
            topics += [f"{self.prefix}/+/+/+/decision", f"{self.prefix}/+/+/+/decision/resent"]
        if "sparkplug" in self.cfg.mqtt.inputs:
            topics.append(SPARKPLUG_DATA)
        return [(topic, 1) for topic in topics]

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        if self.connected:
            log.warning("historian: broker connection lost (%s); reconnecting", reason_code)
        self.connected = False

    def _on_message(self, client, userdata, message) -> None:  # noqa: ANN001
        self.inbox.put(
            Message(self._generation, message.mid, message.qos, message.topic, message.payload)
        )

    def start(self) -> None:
        """Connect to the database (a clear error if it cannot) and to the broker."""
        try:
            self.store.connection()
        except psycopg.Error as exc:
            raise CheckFailedError(
                f"cannot use PostgreSQL at '{self.cfg.database.dsn}' ({exc}); check "
                f"database.dsn, that the server runs, and ${self.cfg.database.password_env}"
            ) from None
        if self.store.layout == "hypertable" and len(self.cfg.mqtt.inputs) > 1:
            log.warning(
                "historian: the hypertable's key holds captured_utc, which JSON and Sparkplug "
                "give at different precision: a decision arriving both ways may be stored "
                "twice; keep one of mqtt.inputs"
            )
        c = self.cfg.mqtt
        session = Properties(PacketTypes.CONNECT)
        session.SessionExpiryInterval = c.session_expiry_s
        session.ReceiveMaximum = c.receive_maximum
        self.client.connect_async(
            c.host, c.port, keepalive=c.keepalive_s, clean_start=False, properties=session
        )
        self.client.loop_start()

    def stop(self) -> None:
        """What is not committed stays unacknowledged: the broker keeps it for the next start."""
        self.client.disconnect()
        self.client.loop_stop()
        self.store.close()

    # --- the writer --------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            batch = self._take()
            if batch:
                self._store(batch, stop)
            self._ask(time.monotonic())
            self._report()

    def _take(self) -> list[Message]:
        """What arrives within ``batch_wait_s`` of the first message (none after a tick), up
        to ``batch``: fewer, larger transactions cost less per decision than one per message."""
        try:
            batch = [self.inbox.get(timeout=TICK_S)]
        except queue.Empty:
            return []
        until = time.monotonic() + self.cfg.batch_wait_s
        while len(batch) < self.cfg.batch:
            try:
                batch.append(self.inbox.get(timeout=max(0.0, until - time.monotonic())))
            except queue.Empty:
                break
        return batch

    def _store(self, batch: list[Message], stop: threading.Event) -> None:
        parsed: list[tuple[Message, Decision]] = []
        rejected: list[Rejected] = []
        for message in batch:
            try:
                decision = self._parse(message)
            except ValueError as exc:
                rejected.append(Rejected(message.topic, str(exc), message.payload))
                continue
            if decision is not None:
                parsed.append((message, decision))
        retry = RETRY_MIN_S
        while True:
            try:
                written = self._write(parsed, rejected)
                break
            except psycopg.OperationalError as exc:  # the server is away: keep the batch
                log.error("historian: PostgreSQL unusable (%s); retrying in %.0f s", exc, retry)
                self.store.close()
                if stop.wait(retry):
                    return  # nothing acknowledged: the broker sends it again
                retry = min(retry * 2, RETRY_MAX_S)
        self._acknowledge(batch)
        self._count(written, rejected)
        now = time.monotonic()
        for _, decision in parsed:
            self._seen(decision, now)

    def _parse(self, message: Message) -> Decision | None:
        """The message's row; None for a Sparkplug DDATA that is no decision (drift)."""
        if message.topic.startswith(SPARKPLUG_NAMESPACE + "/"):
            return parse_sparkplug(message.topic, message.payload)
        return parse(message.topic, message.payload, self.prefix)

    def _write(self, parsed: list[tuple[Message, Decision]], rejected: list[Rejected]) -> Written:
        """The batch in one transaction; when PostgreSQL refuses something in it (a value it
        cannot take), each decision alone, and the refused ones kept as rejected."""
        try:
            return self.store.write([decision for _, decision in parsed], rejected)
        except psycopg.OperationalError:
            raise
        except psycopg.Error as batch_error:
            log.warning(
                "historian: batch refused (%s); storing its decisions one by one", batch_error
            )
        total = Written()
        refused = list(rejected)
        for message, decision in parsed:
            try:
                one = self.store.write([decision], [])
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:
                refused.append(
                    Rejected(message.topic, f"refused by PostgreSQL: {exc}", message.payload)
                )
                continue
            total.stored += one.stored
            total.duplicates += one.duplicates
            total.conflicts += one.conflicts
        if refused:
            self.store.write([], refused)
        total.rejected = len(refused)
        return total

    def _acknowledge(self, batch: list[Message]) -> None:
        for message in batch:
            if message.qos and message.generation == self._generation:
                self.client.ack(message.mid, message.qos)

    def _count(self, written: Written, rejected: list[Rejected]) -> None:
        totals = self.totals
        totals.stored += written.stored
        totals.duplicates += written.duplicates
        for item in rejected:
            totals.rejected += 1
            if totals.rejected <= LOGGED_REJECTIONS or totals.rejected % 1000 == 0:
                log.warning(
                    "historian: message on %s is no decision (%s); kept in flowedge_rejected "
                    "(%d so far)",
                    item.topic,
                    item.reason,
                    totals.rejected,
                )
        if written.conflicts:
            log.warning(
                "historian: %d decision(s) arrived under a key the table holds with another "
                "decision (%s): the station's numbering restarted (spool deleted?); the first "
                "one stored is kept",
                len(written.conflicts),
                ", ".join(written.conflicts[:5]),
            )

    def _seen(self, decision: Decision, now: float) -> None:
        stream = decision.stream
        if stream not in self.tracker.streams:  # the table's view, this batch included
            known = self.store.known(stream, self.cfg.resend.backfill)
            self.tracker.start(stream, known.highest, known.gaps, now)
            if known.gaps:
                log.info(
                    "historian: %s has %d gap(s) in the table", "/".join(stream), len(known.gaps)
                )
        self.tracker.seen(stream, decision.seq, now)

    # --- asking stations -------------------------------------------------------------------
    def _ask(self, now: float) -> None:
        if not self.cfg.resend.enabled or not self.connected:
            return
        for ask in self.tracker.due(now):
            site, station, sensor = ask.stream
            request = ResendRequest.new(
                self.cfg.resend.historian, site, station, sensor, ask.first, ask.last
            )
            self.client.publish(
                f"{self.prefix}/{site}/{station}/command/resend", request.signed(self.secret), qos=1
            )
            self.totals.requests += 1
            log.log(
                logging.DEBUG if ask.probe else logging.WARNING,
                "historian: asked %s for %s #%d..#%d%s",
                f"{site}/{station}",
                sensor,
                ask.first,
                ask.last,
                " (after its last decision)" if ask.probe else " (missing)",
            )

    def _report(self) -> None:
        if time.monotonic() < self._next_report:
            return
        self._next_report = time.monotonic() + REPORT_EVERY_S
        t = self.totals
        log.info(
            "historian: %d stored, %d duplicates, %d rejected; %d gap(s) open (%d decisions), "
            "%d given up; %d request(s) sent",
            t.stored,
            t.duplicates,
            t.rejected,
            self.tracker.open_gaps(),
            self.tracker.missing(),
            self.tracker.lost,
            t.requests,
        )
