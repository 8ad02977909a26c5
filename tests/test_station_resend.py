"""The station's side of the historian's re-send: only when commands.allowed names it, only a
request signed with the shared secret, answered from the history byte for byte on a topic
of its own; every request, accepted or refused, an event."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from mqtt_broker import Subscriber  # noqa: E402
from runtime_fakes import (  # noqa: E402
    open_station,
    station_config,
    stop_station,
    wait_until,
    write_images,
)

from flowedge.calibration.history.resend import ResendRequest  # noqa: E402
from flowedge.calibration.history.store import HistoryDB  # noqa: E402
from flowedge.core.errors import ConfigError  # noqa: E402
from flowedge.edge.config import FlowedgeConfig, station_problems  # noqa: E402

SECRET = "0123456789abcdef" * 4
COMMAND_TOPIC = "flowedge/plant/line1/command/resend"


def resend_config(tmp_path: Path, port: int, allowed: list[str], **resend: object):  # noqa: ANN201
    return station_config(
        tmp_path,
        mqtt={"port": port, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5},
        sinks=[
            {
                "kind": "history",
                "name": "history",
                "path": str(tmp_path / "history"),
                "min_free_mb": 0,
            }
        ],
        commands={"allowed": allowed, "resend": {"historian": "fleet", **resend}},
    )


def request(first: int, last: int, secret: str = SECRET) -> bytes:
    return ResendRequest.new("fleet", "plant", "line1", "cam1", first, last).signed(secret.encode())


def publish(port: int, payload: bytes) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.publish(COMMAND_TOPIC, payload, qos=1).wait_for_publish(10)
    client.disconnect()
    client.loop_stop()


def command_events(cfg: FlowedgeConfig) -> list[dict]:
    """The command events the history sink stored (the spool forgets what every sink has)."""
    if not (cfg.resend_history() / "history.sqlite").is_file():
        return []
    with HistoryDB(cfg.resend_history()) as db:
        rows = db.rows("SELECT document FROM events WHERE kind LIKE 'command%' ORDER BY id")
    return [json.loads(row[0]) for row in rows]


def test_a_signed_request_gets_the_decisions_again_and_nothing_else_does(
    tmp_path: Path,
    broker,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    monkeypatch.setenv("FLOWEDGE_HISTORIAN_SECRET", SECRET)
    write_images(tmp_path / "images", 5)
    cfg = resend_config(tmp_path, broker.port, ["resend"])
    seen = Subscriber(broker.port, topic="flowedge/plant/line1/+/decision/#")  # and .../resent
    station = open_station(cfg)
    try:
        station.start()
        assert station.pipeline.wait(15) and all(sink.flush(10) for sink in station.sinks)
        published = {doc["seq"]: doc for doc in seen.wait_for("/decision", 5)}
        publish(broker.port, request(2, 4))
        assert [doc["seq"] for doc in seen.wait_for("/resent", 3)] == [2, 3, 4]
        assert all(doc == published[doc["seq"]] for doc in seen.on("/resent"))
        replay = request(5, 5)
        publish(broker.port, replay)
        publish(broker.port, replay)  # the same request again: refused
        publish(broker.port, request(1, 1, secret="f" * 64))  # another secret: refused
        publish(broker.port, b"\xff not json")
        wait_until(lambda: len(command_events(cfg)) >= 5, 15, "five command events")
    finally:
        stop_station(station)
        seen.close()
    assert [doc["seq"] for doc in seen.on("/resent")] == [2, 3, 4, 5]
    assert len(seen.on("/decision")) == 5  # a PLC on the live topic sees nothing twice
    events = command_events(cfg)
    assert [e["kind"] for e in events] == ["command", "command", *["command_refused"] * 3]
    assert "re-sending 3 decision(s) of cam1 #2..#4 to historian 'fleet'" in events[0]["message"]
    assert "replayed request" in events[2]["message"]
    assert "signature does not match" in events[3]["message"]
    assert "missing" in events[4]["message"]
    assert all(e["details"]["origin"] == f"mqtt sink mqtt ({COMMAND_TOPIC})" for e in events)


def test_without_resend_allowed_the_station_does_not_listen(tmp_path: Path, broker) -> None:  # noqa: ANN001
    write_images(tmp_path / "images", 2)
    cfg = resend_config(tmp_path, broker.port, [])
    resent = Subscriber(broker.port, topic="flowedge/plant/line1/+/decision/resent")
    station = open_station(cfg)
    try:
        station.start()
        assert station.pipeline.wait(15) and all(sink.flush(10) for sink in station.sinks)
        publish(broker.port, request(1, 2))
        answer = station.commands.run("resend", json.loads(request(1, 2)), "test")
        assert not answer.accepted and "add it to commands.allowed" in answer.message
        wait_until(lambda: command_events(cfg) != [], 15, "the refusal's event")
    finally:
        stop_station(station)
        resent.close()
    assert resent.on("/resent") == []
    assert [e["kind"] for e in command_events(cfg)] == ["command_refused"]  # the direct call


def test_resend_needs_a_history_an_mqtt_sink_and_a_private_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands = {"allowed": ["resend"]}
    with pytest.raises(ConfigError, match="enable a sink of kind history"):
        station_config(tmp_path, mqtt={"port": 1884}, commands=commands)
    history = [{"kind": "history", "name": "history", "path": str(tmp_path / "h")}]
    with pytest.raises(ConfigError, match="requests arrive over MQTT"):
        station_config(tmp_path, sinks=history, commands=commands)
    monkeypatch.delenv("FLOWEDGE_HISTORIAN_SECRET", raising=False)
    cfg = resend_config(tmp_path, 1884, ["resend"])
    assert any("FLOWEDGE_HISTORIAN_SECRET" in p for p in station_problems(cfg))
    with pytest.raises(ConfigError, match="FLOWEDGE_HISTORIAN_SECRET"):
        open_station(cfg)
    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    os.chmod(secret, 0o640)
    cfg = resend_config(tmp_path, 1884, ["resend"], secret_file=str(secret))
    assert any("chmod 600" in p for p in station_problems(cfg))
    os.chmod(secret, 0o600)
    assert station_problems(cfg) == []
