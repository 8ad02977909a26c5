"""Publishing against a real private mosquitto: order, content, broker restarts, credentials."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from mqtt_broker import (  # noqa: E402
    Broker,
    Mqtt311Only,
    Subscriber,
    make_certificates,
    require_mosquitto,
)
from runtime_fakes import FakeBackend, station_config, validator, write_images  # noqa: E402

from flowedge.edge.decision import Policy  # noqa: E402
from flowedge.edge.metrics import Metrics  # noqa: E402
from flowedge.edge.pipeline import Pipeline  # noqa: E402
from flowedge.edge.publisher import Publisher  # noqa: E402
from flowedge.edge.spool import Spool  # noqa: E402

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def broker(tmp_path: Path):  # noqa: ANN201
    require_mosquitto()
    (tmp_path / "broker").mkdir()
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


class Station:
    """Pipeline + publisher in-process, the way ``flowedge run`` wires them."""

    def __init__(self, cfg, backend=None) -> None:  # noqa: ANN001
        self.spool = Spool(cfg.spool.path, cfg.spool.max_messages, cfg.spool.overflow)
        self.metrics = Metrics()
        self.publisher: Publisher | None = None
        self.pipeline = Pipeline(
            cfg,
            backend or FakeBackend(),
            Policy(cfg.model.threshold),
            self.spool,
            self.metrics,
            on_published=self._wake,
        )
        self.publisher = Publisher(
            cfg, self.spool, self.metrics, lambda: {"model_id": "fake"}, self.pipeline.event
        )

    def _wake(self) -> None:
        if self.publisher is not None:
            self.publisher.wake()

    def run(self) -> None:
        self.publisher.start()
        self.pipeline.start()

    def stop(self) -> None:
        self.pipeline.stop()
        self.pipeline.wait(10)
        self.publisher.stop("test over", flush_timeout_s=5)
        self.spool.close()


def mqtt_section(broker: Broker, **extra) -> dict:  # noqa: ANN003
    return {
        "enabled": True,
        "port": broker.port,
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 1,
        **extra,
    }


def assert_in_order_without_loss(docs: list[dict], count: int) -> None:
    """At-least-once: duplicates are allowed after a reconnect, loss and reordering are not."""
    first_seen: list[int] = []
    for doc in docs:
        if doc["seq"] not in first_seen:
            first_seen.append(doc["seq"])
    assert first_seen == list(range(1, count + 1))


@pytest.mark.parametrize("protocol", ["auto", "3.1.1"])
def test_every_decision_arrives_in_order_with_schema(
    tmp_path: Path, broker: Broker, protocol: str
) -> None:
    write_images(tmp_path / "images", 10)
    (tmp_path / "images" / "img_0004.png").write_bytes(b"not an image")
    cfg = station_config(tmp_path, mqtt=mqtt_section(broker, protocol=protocol))
    sub = Subscriber(broker.port)
    station = Station(cfg)
    station.run()
    try:
        docs = sub.wait_for("/decision", 10)
        assert [d["part_id"] for d in docs] == [f"img_{i:04d}.png" for i in range(10)]
        assert [d["seq"] for d in docs] == list(range(1, 11))
        check = validator("decision")
        for doc in docs:
            check.validate(doc)
            assert (doc["site"], doc["station"], doc["sensor"]) == ("plant", "line1", "cam1")
        assert docs[4]["decision"] == "ERROR"
        assert sub.content_types == ({"application/json"} if protocol == "auto" else {None})
        bad = sub.wait_for("cam1/event", 1)
        validator("event").validate(bad[0])
        assert bad[0]["kind"] == "bad_input" and "img_0004.png" in bad[0]["message"]
        status = sub.wait_for("line1/status", 1)
        validator("status").validate(status[0])
        assert status[0]["state"] == "online"
    finally:
        station.stop()
    offline = sub.wait_for("line1/status", 2)[-1]
    assert offline["state"] == "offline" and offline["reason"] == "test over"
    assert station.spool.count() == 0
    sub.close()


def test_broker_restart_mid_stream_loses_nothing(tmp_path: Path, broker: Broker) -> None:
    write_images(tmp_path / "images", 40)
    cfg = station_config(
        tmp_path,
        mqtt=mqtt_section(broker),
        sources=[
            {"name": "cam1", "kind": "folder", "path": str(tmp_path / "images"), "rate_hz": 40}
        ],
    )
    sub = Subscriber(broker.port, topic="plant/+/+/decision".replace("plant", "flowedge/plant"))
    station = Station(cfg)
    station.run()
    try:
        assert len(sub.wait_for("/decision", 5)) >= 5
        broker.stop()
        time.sleep(0.6)  # decisions accumulate in the spool meanwhile
        assert station.spool.count() > 0
        broker.start()
        docs = sub.wait_for("/decision", 40, timeout=30)
        assert_in_order_without_loss(sub.wait_for("/decision", 40), 40)
        assert len(docs) >= 40
        deadline = time.monotonic() + 10
        while station.spool.count() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert station.spool.count() == 0
    finally:
        station.stop()
        sub.close()


def test_wrong_credentials_are_reported_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_mosquitto()
    (tmp_path / "broker").mkdir()
    broker = Broker(tmp_path / "broker", users={"plc": "right"}).start()
    monkeypatch.setenv("FLOWEDGE_MQTT_PASSWORD", "wrong")
    write_images(tmp_path / "images", 2)
    cfg = station_config(tmp_path, mqtt=mqtt_section(broker, username="plc"))
    station = Station(cfg)
    caplog.set_level(logging.ERROR, logger="flowedge.edge.publisher")
    station.run()
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            refusals = [
                r
                for r in caplog.records
                if r.name == "flowedge.edge.publisher"
                and "refused the connection" in r.getMessage()
            ]
            if len(refusals) >= 2:
                break
            time.sleep(0.1)
        assert len(refusals) >= 2, "no retry after a refused connection"
        message = refusals[0].getMessage()
        assert "FLOWEDGE_MQTT_PASSWORD" in message
        assert "not authori" in message.lower() or "bad user name" in message.lower()
        assert not station.publisher.connected
        assert station.pipeline.wait(10)  # the loop went on; decisions wait in the spool
        assert station.metrics.events.labels("broker_refused")._value.get() >= 2
        assert station.spool.count() >= 2
    finally:
        station.stop()
        broker.stop()


def test_tls_with_client_certificate(tmp_path: Path) -> None:
    require_mosquitto()
    certs = make_certificates(tmp_path / "certs")
    (tmp_path / "broker").mkdir()
    broker = Broker(
        tmp_path / "broker",
        tls={"ca": certs["ca.crt"], "cert": certs["server.crt"], "key": certs["server.key"]},
    ).start()
    write_images(tmp_path / "images", 3)
    tls = {
        "ca_file": str(certs["ca.crt"]),
        "cert_file": str(certs["client.crt"]),
        "key_file": str(certs["client.key"]),
    }
    station = Station(station_config(tmp_path, mqtt=mqtt_section(broker, tls=tls)))
    station.run()
    try:
        assert station.pipeline.wait(10)
        deadline = time.monotonic() + 10
        while (
            station.spool.count() or not station.publisher.connected
        ) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert station.publisher.connected and station.spool.count() == 0  # all acknowledged
    finally:
        station.stop()
        broker.stop()


def test_protocol_auto_falls_back_to_311(tmp_path: Path, broker: Broker) -> None:
    proxy = Mqtt311Only(broker.port)
    write_images(tmp_path / "images", 3)
    section = mqtt_section(broker, protocol="auto")
    section["port"] = proxy.port
    sub = Subscriber(broker.port)
    station = Station(station_config(tmp_path, mqtt=section))
    station.run()
    try:
        docs = sub.wait_for("/decision", 3)
        assert [d["seq"] for d in docs] == [1, 2, 3]
        assert proxy.refused >= 1 and sub.content_types == {None}  # sent as 3.1.1
    finally:
        station.stop()
        proxy.close()
        sub.close()


def test_last_will_says_offline_when_the_connection_dies(tmp_path: Path, broker: Broker) -> None:
    import socket

    write_images(tmp_path / "images", 1)
    sub = Subscriber(broker.port, topic="flowedge/plant/line1/status")
    station = Station(station_config(tmp_path, mqtt=mqtt_section(broker)))
    station.run()
    try:
        assert sub.wait_for("/status", 1)[0]["state"] == "online"
        station.publisher.client.socket().shutdown(socket.SHUT_RDWR)  # no DISCONNECT: a crash
        states = [(d["state"], d["reason"]) for d in sub.wait_for("/status", 3)]
        assert states[1][0] == "offline" and "connection lost" in states[1][1]  # the Last Will
        assert states[2] == ("online", "running")  # reconnected by itself
        validator("status").validate(sub.on("/status")[1])
    finally:
        station.stop()
        sub.close()
