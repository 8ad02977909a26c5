"""The Sparkplug B sink against an independent host application and a real mosquitto.

The host in this file decodes every message with the official schema's generated classes
(``sparkplug_b_pb2``), never with the station's encoder, and checks the Sparkplug 3.0
session rules on what it received: births before data, ``seq`` 0-255 per edge node, NDEATH
with the ``bdSeq`` of its NBIRTH, every decision exactly once live or marked historical.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from mqtt_broker import Broker, free_port  # noqa: E402
from runtime_fakes import (  # noqa: E402
    open_station,
    station_config,
    stop_station,
    wait_for_first_listing,
    wait_until,
    write_images,
    write_onnx_model,
)

from flowedge.core import sparkplug_b_pb2 as pb  # noqa: E402
from flowedge.core.errors import EXIT_CHECK, ConfigError  # noqa: E402
from flowedge.edge.config import parse_config  # noqa: E402
from flowedge.edge.sinks import SINK_KINDS  # noqa: E402
from flowedge.edge.sinks.sparkplug import BdSeq  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# the descriptor that pysparkplug 0.6.1, mqtt-spb-wrapper 2.1.2, tahutils 0.1.11 and
# esio-spb-builder 0.1.0 ship in their generated sparkplug_b_pb2 (docs/plant-protocols.md)
OFFICIAL_DESCRIPTOR_SHA256 = "042cd0f2c14625bf62763a5f02dc6b6f9191b170481b58543d0a9d4e2b71c069"
HOST_ID = "scada"
FAST = {"reconnect_min_s": 0.1, "reconnect_max_s": 0.5}


@dataclass(frozen=True)
class Seen:
    kind: str  # NBIRTH, DBIRTH, NDATA, DDATA, DDEATH, NDEATH
    device: str | None
    payload: Any  # pb.Payload

    def values(self) -> dict[str, Any]:
        """Metric name -> value (None for is_null), decoded with the official classes."""
        found = {}
        for metric in self.payload.metrics:
            field = metric.WhichOneof("value")
            found[metric.name] = None if metric.is_null or field is None else getattr(metric, field)
        return found


class SparkplugHost:
    """A Sparkplug 3.0 primary host application: publishes its STATE (retained, with its
    Will), subscribes to the group and keeps every edge-node message, decoded, in order."""

    def __init__(self, port: int, group: str = "plant", node: str = "line1") -> None:
        self.group, self.node = group, node
        self.seen: list[Seen] = []
        self.lock = threading.Condition()
        self.state_topic = f"spBv1.0/STATE/{HOST_ID}"
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"host-{port}", protocol=mqtt.MQTTv311
        )
        self.client.will_set(self.state_topic, self._state(False), qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    @staticmethod
    def _state(online: bool) -> bytes:
        return json.dumps({"online": online, "timestamp": time.time_ns() // 10**6}).encode()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        client.subscribe(f"spBv1.0/{self.group}/#", qos=1)
        client.publish(self.state_topic, self._state(True), qos=1, retain=True)

    def _on_message(self, client, userdata, message) -> None:  # noqa: ANN001
        parts = message.topic.split("/")
        if parts[2] in ("NCMD", "DCMD"):
            return  # the host's own commands
        seen = Seen(parts[2], parts[4] if len(parts) > 4 else None, pb.Payload())
        seen.payload.ParseFromString(message.payload)
        with self.lock:
            self.seen.append(seen)
            self.lock.notify_all()

    def of(self, kind: str, device: str | None = None) -> list[Seen]:
        with self.lock:
            return [
                s for s in self.seen if s.kind == kind and (device is None or s.device == device)
            ]

    def wait(self, what: str, predicate: Any, timeout: float = 30.0) -> None:
        with self.lock:
            if not self.lock.wait_for(predicate, timeout):
                raise AssertionError(f"the host timed out waiting for {what}; saw {self.kinds()}")

    def kinds(self) -> list[str]:
        return [f"{s.kind}/{s.device}" if s.device else s.kind for s in self.seen]

    def command(self, kind: str, metrics: dict[str, Any], device: str | None = None) -> None:
        """An NCMD or DCMD built with the official classes (Double or Boolean metrics)."""
        payload = pb.Payload(timestamp=time.time_ns() // 10**6)
        for name, value in metrics.items():
            if isinstance(value, bool):
                payload.metrics.add(name=name, datatype=pb.Boolean, boolean_value=value)
            else:
                payload.metrics.add(name=name, datatype=pb.Double, double_value=value)
        self.send(kind, payload.SerializeToString(), device)

    def send(self, kind: str, data: bytes, device: str | None = None) -> None:
        topic = f"spBv1.0/{self.group}/{kind}/{self.node}" + (f"/{device}" if device else "")
        self.client.publish(topic, data, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def check_sessions(seen: list[Seen]) -> int:
    """Sparkplug's rules on one edge node's messages; returns how often ``seq`` wrapped.

    NBIRTH has seq 0 and ``bdSeq``; every later message of the session has the next seq
    (mod 256); device messages need their DBIRTH; NDEATH (no seq) ends the session whose
    ``bdSeq`` it carries; each DDATA metric is historical exactly when it is older than the
    session's NBIRTH."""
    born, bdseq, expected, birth_ms, devices, wraps = False, None, 0, 0, set(), 0
    for index, message in enumerate(seen):
        where = f"message {index} ({message.kind}/{message.device})"
        values = message.values()
        if message.kind == "NDEATH":
            assert not message.payload.HasField("seq"), where
            if values["bdSeq"] == bdseq:
                born = False
            continue
        if message.kind == "NBIRTH":
            assert message.payload.seq == 0 and "bdSeq" in values, where
            born, bdseq, expected, devices = True, values["bdSeq"], 1, set()
            birth_ms = message.payload.timestamp
            continue
        assert born, f"{where} before any NBIRTH"
        assert message.payload.seq == expected, f"{where}: seq {message.payload.seq} != {expected}"
        wraps += expected == 0
        expected = (expected + 1) % 256
        if message.kind == "DBIRTH":
            devices.add(message.device)
        elif message.kind == "DDEATH":
            devices.discard(message.device)
        elif message.kind == "DDATA":
            assert message.device in devices, f"{where}: DDATA without DBIRTH"
            for metric in message.payload.metrics:
                assert metric.is_historical == (metric.timestamp < birth_ms), where
    return wraps


def decisions(seen: list[Seen]) -> list[tuple[int, bool]]:
    """(Sequence, historical) of every decision that arrived as DDATA."""
    return [
        (s.values()["Sequence"], s.payload.metrics[0].is_historical)
        for s in seen
        if s.kind == "DDATA" and "Sequence" in s.values()
    ]


def assert_each_once_or_historical(seen: list[Seen], count: int) -> None:
    arrived = decisions(seen)
    assert {number for number, _ in arrived} == set(range(1, count + 1))
    live = Counter(number for number, historical in arrived if not historical)
    assert max(live.values(), default=1) == 1, "a decision arrived twice as a live value"


def sparkplug_sink(broker: Broker, **extra: Any) -> dict[str, Any]:
    return {"kind": "sparkplug", "name": "scada", "port": broker.port, **FAST, **extra}


# --- the schema, the config, bdSeq ---------------------------------------------------------
def test_the_generated_module_is_the_official_schema() -> None:
    assert hashlib.sha256(pb.DESCRIPTOR.serialized_pb).hexdigest() == OFFICIAL_DESCRIPTOR_SHA256
    assert pb.DESCRIPTOR.package == "org.eclipse.tahu.protobuf" and pb.Double == 10


def test_the_vendored_proto_compiles_to_the_committed_module(tmp_path: Path) -> None:
    protoc = pytest.importorskip(
        "grpc_tools.protoc", reason="grpcio-tools not installed: regeneration check skipped"
    )
    sinks = REPO / "flowedge" / "core"
    out = tmp_path / "gen"
    out.mkdir()
    args = ["protoc", f"-I{sinks}", f"--descriptor_set_out={out / 'set.pb'}", "sparkplug_b.proto"]
    assert protoc.main(args) == 0
    from google.protobuf import descriptor_pb2

    compiled = descriptor_pb2.FileDescriptorSet.FromString((out / "set.pb").read_bytes()).file[0]
    committed = descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb)
    assert strip_json_names(compiled) == committed  # descriptor sets add json_name


def strip_json_names(file: Any) -> Any:
    def strip(message: Any) -> None:
        for field in message.field:
            field.ClearField("json_name")
        for nested in message.nested_type:
            strip(nested)

    for message in file.message_type:
        strip(message)
    return file


def test_config_defaults_and_refusals() -> None:
    cfg = parse_config({"site": "plant", "sinks": [{"kind": "sparkplug", "name": "scada"}]})
    sink = cfg.sinks[0]
    assert (sink.group_id, sink.edge_node_id, sink.protocol) == (None, None, "3.1.1")
    assert sink.client_id_for("plant", "line1") == "flowedge-plant-line1-scada"
    for key, value in (("group_id", "a/b"), ("edge_node_id", "x+"), ("protocol", "auto")):
        with pytest.raises(ConfigError, match=rf"sinks\[0\]\.{key}"):
            parse_config({"sinks": [{"kind": "sparkplug", "name": "scada", key: value}]})


def test_bdseq_is_kept_beside_the_spool_and_wraps_at_256(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite.scada.bdseq"
    assert [BdSeq(path).take() for _ in range(3)] == [0, 1, 2]  # a new object: read from disk
    path.write_text("255")
    assert BdSeq(path).take() == 255 and BdSeq(path).take() == 0
    path.write_text("garbage")
    assert BdSeq(path).take() == 0


def test_without_protobuf_the_sink_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "flowedge.core.sparkplug", None)
    cfg = station_config(tmp_path, sinks=[{"kind": "sparkplug", "name": "scada", "port": 1}])
    with pytest.raises(ConfigError, match=r"pip install 'flowedge\[sparkplug\]'"):
        open_station(cfg)
    result = SINK_KINDS["sparkplug"].check(cfg.sinks[0], "plant", "line1", 1.0)
    assert not result.ok and "flowedge[sparkplug]" in result.detail


@pytest.mark.broker
def test_flowedge_check_connects_to_the_sparkplug_broker(tmp_path: Path, broker: Broker) -> None:
    cfg = station_config(tmp_path, sinks=[sparkplug_sink(broker)])
    result = SINK_KINDS["sparkplug"].check(cfg.sinks[0], "plant", "line1", 5.0)
    assert result.ok and "flowedge-plant-line1-scada-check" in result.detail
    down = station_config(tmp_path, sinks=[{"kind": "sparkplug", "name": "s", "port": free_port()}])
    result = SINK_KINDS["sparkplug"].check(down.sinks[0], "plant", "line1", 2.0)
    assert not result.ok and result.exit_code == EXIT_CHECK


# --- sessions against a real broker --------------------------------------------------------
@pytest.mark.broker
@pytest.mark.timeout(120)
def test_births_seq_and_history_across_a_broker_sigkill(tmp_path: Path, broker: Broker) -> None:
    """300 decisions; the broker is SIGKILLed after 260 went out (so seq wrapped) and
    restarted; what the station decided meanwhile follows the new births as history."""
    count = 300
    write_images(tmp_path / "images", count)
    source = {"name": "cam1", "kind": "folder", "path": str(tmp_path / "images"), "rate_hz": 50}
    cfg = station_config(
        tmp_path, sources=[source], sinks=[sparkplug_sink(broker, primary_host_id=HOST_ID)]
    )
    host = SparkplugHost(broker.port)
    station = open_station(cfg)
    station.start()
    sink = station.sinks[0]
    try:
        host.wait("260 decisions", lambda: len(decisions(host.seen)) >= 260)
        broker.stop()
        wait_until(lambda: not sink.connected, 10, "the station to see the outage")
        wait_until(lambda: sink.delivery.backlog() > 0, 10, "decisions waiting in the spool")
        time.sleep(0.3)
        broker.start()
        host.wait("every decision", lambda: len({n for n, _ in decisions(host.seen)}) >= count)
        wait_until(lambda: sink.delivery.backlog() == 0, 20, "every record acknowledged")
    finally:
        stop_station(station)
        host.close()
    assert check_sessions(host.seen) >= 1  # seq wrapped from 255 to 0 within a session
    assert (
        len(host.of("NBIRTH")) >= 2 and len({s.values()["bdSeq"] for s in host.of("NBIRTH")}) >= 2
    )
    assert_each_once_or_historical(host.seen, count)
    assert any(historical for _, historical in decisions(host.seen))
    nbirth = host.of("NBIRTH")[0].values()
    assert nbirth["Station/Threshold"] == 3.0 and nbirth["Node Control/Rebirth"] is False
    assert host.of("NBIRTH")[0].payload.metrics[0].datatype == pb.Int64  # bdSeq
    dbirth = host.of("DBIRTH", "cam1")[0]
    types = {m.name: m.datatype for m in dbirth.payload.metrics}
    assert types["Decision"] == pb.String and types["Score"] == pb.Double
    assert types["Sequence"] == pb.UInt64 and types["Drift"] == pb.Boolean


@pytest.mark.broker
@pytest.mark.timeout(180)
def test_ndeath_carries_the_bdseq_of_a_sigkilled_station(tmp_path: Path, broker: Broker) -> None:
    """The station process is SIGKILLed: the broker publishes its Will (NDEATH, bdSeq of
    its NBIRTH); the restarted station births with the next bdSeq and sends what was not
    acknowledged as history; a graceful stop sends NDEATH itself."""
    import yaml

    write_images(tmp_path / "images", 6)
    model = write_onnx_model(tmp_path / "model.onnx", {"threshold": 1e9, "sha256": "e" * 64})
    config = tmp_path / "config.yaml"
    source = {"name": "cam1", "kind": "folder", "path": str(tmp_path / "images")}
    config.write_text(
        yaml.safe_dump(
            {
                "site": "plant",
                "station": "line1",
                "model": {"path": str(model)},
                "sources": [{**source, "loop": True, "rate_hz": 20}],
                "mqtt": {"enabled": False},
                "sinks": [sparkplug_sink(broker, primary_host_id=HOST_ID)],
                "metrics": {"enabled": False},
                "spool": {"path": str(tmp_path / "spool.sqlite")},
            }
        )
    )
    command = [sys.executable, "-m", "flowedge.cli", "run", "--config", str(config)]
    host = SparkplugHost(broker.port)
    try:
        station = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        host.wait("5 decisions", lambda: len(decisions(host.seen)) >= 5, timeout=60)
        first = host.of("NBIRTH")[0].values()["bdSeq"]
        os.kill(station.pid, signal.SIGKILL)
        station.wait(10)
        host.wait("the Will", lambda: host.of("NDEATH"))
        assert host.of("NDEATH")[0].values() == {"bdSeq": first}
        with sqlite3.connect(tmp_path / "spool.sqlite") as db:  # the spool's numbering
            last = db.execute("SELECT last FROM sequence WHERE sensor = 'cam1'").fetchone()[0]
        rerun = subprocess.run(
            [*command, "--max-samples", "2", "--exit-when-done"], capture_output=True, timeout=90
        )
        assert rerun.returncode == 0, rerun.stdout[-3000:]
        host.wait("the graceful NDEATH", lambda: len(host.of("NDEATH")) >= 2)
    finally:
        host.close()
    second = host.of("NBIRTH")[-1].values()["bdSeq"]
    assert second == (first + 1) % 256
    assert host.of("NDEATH")[-1].values() == {"bdSeq": second}
    check_sessions(host.seen)
    assert_each_once_or_historical(host.seen, last + 2)


@pytest.mark.broker
@pytest.mark.parametrize("allowed", [[], ["set_threshold"]])
def test_rebirth_on_request_and_threshold_commands(
    tmp_path: Path, broker: Broker, allowed: list[str]
) -> None:
    """NCMD Node Control/Rebirth births again; a threshold write (NCMD, DCMD) is refused
    unless commands.allowed names set_threshold, and the next NDATA answers either way."""
    write_images(tmp_path / "images", 2)
    cfg = station_config(tmp_path, sinks=[sparkplug_sink(broker)], commands={"allowed": allowed})
    host = SparkplugHost(broker.port)
    station = open_station(cfg)
    station.start()
    try:
        host.wait("2 decisions", lambda: len(decisions(host.seen)) >= 2)
        host.send("NCMD", b"\x0a\xff not protobuf")  # ignored with a warning
        host.command("NCMD", {"Node Control/Rebirth": True})
        host.wait("the rebirth", lambda: len(host.of("DBIRTH")) >= 2)
        first, again = host.of("NBIRTH")
        assert again.values()["bdSeq"] == first.values()["bdSeq"] and again.payload.seq == 0
        assert host.of("DBIRTH")[-1].values()["Sequence"] == 2  # the latest decision's values

        def threshold_answers() -> list[float]:
            return [
                s.values()["Station/Threshold"]
                for s in host.of("NDATA")
                if "Station/Threshold" in s.values()
            ]

        writes = [("NCMD", "Station/Threshold", float("nan"), None)]  # refused either way
        writes += [("NCMD", "Station/Threshold", 7.5, None), ("DCMD", "Threshold", 8.0, "cam1")]
        for number, (kind, name, value, device) in enumerate(writes, 1):
            host.command(kind, {name: value}, device=device)
            host.wait(f"answer {number}", lambda n=number: len(threshold_answers()) >= n)

        def events() -> list[dict[str, Any]]:
            return [s.values() for s in host.of("NDATA") if "Event/Kind" in s.values()]

        host.wait("the command events", lambda: len(events()) >= 3)
    finally:
        stop_station(station)
        host.close()
    expected = [3.0, 7.5, 8.0] if allowed else [3.0, 3.0, 3.0]
    assert threshold_answers() == expected
    assert station.pipeline.policy.threshold == expected[-1]
    kinds = [e["Event/Kind"] for e in events()]
    assert kinds == ["command_refused"] + (["command"] * 2 if allowed else ["command_refused"] * 2)
    check_sessions(host.seen)


@pytest.mark.broker
def test_a_lost_source_is_a_ddeath_and_its_return_a_dbirth(tmp_path: Path, broker: Broker) -> None:
    folder = tmp_path / "watched"
    folder.mkdir()
    source = {"name": "cam1", "kind": "watch", "path": str(folder)}
    cfg = station_config(tmp_path, sources=[source], sinks=[sparkplug_sink(broker)])
    host = SparkplugHost(broker.port)
    station = open_station(cfg)
    station.start()
    try:
        host.wait("the births", lambda: host.of("DBIRTH", "cam1"))
        wait_for_first_listing(station, "cam1")
        write_images(folder, 1)
        host.wait("a decision", lambda: decisions(host.seen))
        shutil.rmtree(folder)
        host.wait("DDEATH", lambda: host.of("DDEATH", "cam1"))
        write_images(folder, 1, start=1)
        host.wait("the second decision", lambda: len(decisions(host.seen)) >= 2)
    finally:
        stop_station(station)
        host.close()
    order = [k for k in host.kinds() if k.endswith("/cam1")]
    assert order == ["DBIRTH/cam1", "DDATA/cam1", "DDEATH/cam1", "DBIRTH/cam1", "DDATA/cam1"]
    lost = [s.values() for s in host.of("NDATA") if s.values().get("Event/Kind") == "source_lost"]
    assert lost and lost[0]["Event/Source"] == "cam1"
    check_sessions(host.seen)
