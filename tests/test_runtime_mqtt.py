"""Publishing against a real private mosquitto: order, content, broker restarts, credentials."""

from __future__ import annotations

import logging
import sys
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
from runtime_fakes import (  # noqa: E402
    open_station,
    station_config,
    stop_station,
    validator,
    wait_until,
    write_images,
)

pytestmark = pytest.mark.timeout(90)


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


@pytest.mark.broker
@pytest.mark.parametrize("protocol", ["auto", "3.1.1"])
def test_every_decision_arrives_in_order_with_schema(
    tmp_path: Path, broker: Broker, protocol: str
) -> None:
    write_images(tmp_path / "images", 10)
    (tmp_path / "images" / "img_0004.png").write_bytes(b"not an image")
    cfg = station_config(tmp_path, mqtt=mqtt_section(broker, protocol=protocol))
    sub = Subscriber(broker.port)
    station = open_station(cfg)
    station.start()
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
        stop_station(station)
    offline = sub.wait_for("line1/status", 2)[-1]
    assert offline["state"] == "offline" and offline["reason"] == "test over"
    assert station.spool.count() == 0
    sub.close()


@pytest.mark.broker
def test_broker_restart_mid_stream_loses_nothing(tmp_path: Path) -> None:
    """A broker SIGKILL and restart: every decision reaches the subscriber, in order. The
    broker keeps the subscriber's session on disk, so a decision published before the
    subscriber is back is queued for it rather than lost between the two reconnects."""
    (tmp_path / "broker").mkdir()
    broker = Broker(tmp_path / "broker", persistent=True).start()
    write_images(tmp_path / "images", 40)
    cfg = station_config(
        tmp_path,
        mqtt=mqtt_section(broker),
        sources=[
            {"name": "cam1", "kind": "folder", "path": str(tmp_path / "images"), "rate_hz": 10}
        ],
    )
    sub = Subscriber(broker.port, topic="flowedge/plant/+/+/decision", persistent=True)
    station = open_station(cfg)
    station.start()
    try:
        assert len(sub.wait_for("/decision", 5)) >= 5
        broker.stop()
        wait_until(lambda: not station.publisher.connected, 10, "the station to see the outage")
        wait_until(lambda: station.spool.count() > 0, 10, "decisions waiting in the spool")
        broker.start()
        docs = sub.wait_for("/decision", 40, timeout=30)
        assert_in_order_without_loss(sub.wait_for("/decision", 40), 40)
        assert len(docs) >= 40
        wait_until(lambda: station.spool.count() == 0, 10, "every decision acknowledged")
    finally:
        stop_station(station)
        sub.close()
        broker.stop()


@pytest.mark.broker
def test_wrong_credentials_are_reported_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_mosquitto()
    (tmp_path / "broker").mkdir()
    broker = Broker(tmp_path / "broker", users={"plc": "right"}).start()
    monkeypatch.setenv("FLOWEDGE_MQTT_PASSWORD", "wrong")
    write_images(tmp_path / "images", 2)
    cfg = station_config(tmp_path, mqtt=mqtt_section(broker, username="plc"))
    station = open_station(cfg)
    caplog.set_level(logging.ERROR, logger="flowedge.edge.sinks.mqtt")
    station.start()
    try:

        def refusals() -> list[str]:
            return [
                r.getMessage()
                for r in caplog.records
                if r.name == "flowedge.edge.sinks.mqtt"
                and "refused the connection" in r.getMessage()
            ]

        wait_until(lambda: len(refusals()) >= 2, 15, "a retry after a refused connection")
        message = refusals()[0]
        assert "FLOWEDGE_MQTT_PASSWORD" in message
        assert "not authori" in message.lower() or "bad user name" in message.lower()
        assert not station.publisher.connected
        assert station.pipeline.wait(10)  # the loop went on; decisions wait in the spool
        assert station.metrics.events.labels("broker_refused")._value.get() >= 2
        assert station.spool.count() >= 2
    finally:
        stop_station(station)
        broker.stop()


@pytest.mark.broker
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
    station = open_station(station_config(tmp_path, mqtt=mqtt_section(broker, tls=tls)))
    station.start()
    try:
        assert station.pipeline.wait(10)
        wait_until(
            lambda: station.publisher.connected and station.spool.count() == 0,
            10,
            "every decision acknowledged over TLS",
        )
    finally:
        stop_station(station)
        broker.stop()


@pytest.mark.broker
def test_protocol_auto_falls_back_to_311(tmp_path: Path, broker: Broker) -> None:
    proxy = Mqtt311Only(broker.port)
    write_images(tmp_path / "images", 3)
    section = mqtt_section(broker, protocol="auto")
    section["port"] = proxy.port
    sub = Subscriber(broker.port)
    station = open_station(station_config(tmp_path, mqtt=section))
    station.start()
    try:
        docs = sub.wait_for("/decision", 3)
        assert [d["seq"] for d in docs] == [1, 2, 3]
        assert proxy.refused >= 1 and sub.content_types == {None}  # sent as 3.1.1
    finally:
        stop_station(station)
        proxy.close()
        sub.close()


@pytest.mark.broker
def test_last_will_says_offline_when_the_connection_dies(tmp_path: Path, broker: Broker) -> None:
    import socket

    write_images(tmp_path / "images", 1)
    sub = Subscriber(broker.port, topic="flowedge/plant/line1/status")
    station = open_station(station_config(tmp_path, mqtt=mqtt_section(broker)))
    station.start()
    try:
        assert sub.wait_for("/status", 1)[0]["state"] == "online"
        station.publisher.client.socket().shutdown(socket.SHUT_RDWR)  # no DISCONNECT: a crash

        def since_the_will() -> list[tuple[str, str]]:
            """Statuses from the Last Will on (source changes republish the status too)."""
            states = [(d["state"], d["reason"]) for d in sub.on("/status")]
            offline = [i for i, (state, _) in enumerate(states) if state == "offline"]
            return states[offline[0] :] if offline else []

        wait_until(lambda: ("online", "running") in since_the_will(), 30, "the reconnection")
        assert "connection lost" in since_the_will()[0][1]  # the Last Will
        validator("status").validate(next(d for d in sub.on("/status") if d["state"] == "offline"))
    finally:
        stop_station(station)
        sub.close()
