"""The OPC UA sink and the PLC handshake, seen from an independent asyncua client.

The client in this file knows only the documented node ids (docs/plant-protocols.md,
"OPC UA"), never the station's classes: results through a subscription, the handshake
over OPC UA and over MQTT, who may log in and who may write, the acknowledgement
timeout's event, and nothing lost or counted twice across a station SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

pytest.importorskip("asyncua")

from asyncua import Client, ua  # noqa: E402
from asyncua.crypto.cert_gen import setup_self_signed_certificate  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))

from mqtt_broker import free_port  # noqa: E402
from runtime_fakes import (  # noqa: E402
    open_station,
    station_config,
    stop_station,
    wait_for_first_listing,
    wait_until,
    write_images,
    write_onnx_model,
)

from flowedge.edge.sinks.opcua_users import save_user  # noqa: E402

NAMESPACE = "urn:flowedge:plant:line1"
PASSWORD = "secret-123"
CLIENT_URI = "urn:flowedge-tests:plc"


@pytest.fixture(scope="module")
def client_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The PLC's own application certificate (a client needs one for Sign/SignAndEncrypt)."""
    folder = tmp_path_factory.mktemp("client")
    cert, key = folder / "plc.der", folder / "plc.pem"
    asyncio.run(
        setup_self_signed_certificate(
            key,
            cert,
            CLIENT_URI,
            "localhost",
            [ExtendedKeyUsageOID.CLIENT_AUTH],
            {"commonName": "plc"},
        )
    )
    return cert, key


@pytest.fixture(scope="module")
def users(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("users") / "opcua-users"
    save_user(path, "plc", "write", PASSWORD)
    save_user(path, "viewer", "read", PASSWORD)
    return path


def opcua_sink(port: int, users: Path, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "opcua",
        "name": "ua",
        "host": "127.0.0.1",
        "port": port,
        "users_file": str(users),
        **extra,
    }


def client(
    port: int,
    cert: tuple[Path, Path] | None,
    user: str | None = "plc",
    password: str = PASSWORD,
    mode: str = "SignAndEncrypt",
) -> Client:
    c = Client(f"opc.tcp://127.0.0.1:{port}/flowedge", timeout=10)
    c.application_uri = CLIENT_URI
    if cert is not None:
        c._security_string = f"Basic256Sha256,{mode},{cert[0]},{cert[1]}"
    if user is not None:
        c.set_user(user)
        c.set_password(password)
    return c


async def opened(c: Client) -> Client:
    if getattr(c, "_security_string", None):
        await c.set_security_string(c._security_string)
    await c.connect()
    return c


async def node(c: Client, path: str) -> Any:
    idx = await c.get_namespace_index(NAMESPACE)
    return c.get_node(ua.NodeId(path, idx))


async def wait_value(c: Client, path: str, want: Any, timeout: float = 20.0) -> None:
    n = await node(c, path)
    deadline = asyncio.get_running_loop().time() + timeout
    while await n.read_value() != want:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{path} never became {want!r} (is {await n.read_value()!r})")
        await asyncio.sleep(0.05)


def events_of(station: Any, caplog: pytest.LogCaptureFixture, kind: str) -> list[str]:
    """The messages of ``kind`` events, once the station counted as many (the spool drops an
    event once every sink has it: the count is the station's metric, the text its log)."""
    count = station.metrics.events.labels(kind)._value.get()
    words = {"handshake_timeout": "did not acknowledge", "handshake_refused": "refused"}[kind]
    messages = [
        r.getMessage()
        for r in caplog.records
        if r.name.endswith("loop.events") and words in r.getMessage()
    ]
    return messages if len(messages) == count else []


def triggered_source(tmp: Path, **extra: Any) -> dict[str, Any]:
    return {
        "name": "cam1",
        "kind": "triggered",
        "source": {"kind": "folder", "path": str(tmp / "images"), "loop": True},
        **extra,
    }


class DataChanges:
    """asyncua's subscription handler: every value notified, in order."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def datachange_notification(self, _node: Any, value: Any, _data: Any) -> None:
        self.values.append(value)


# --- results ------------------------------------------------------------------------------
def test_a_subscription_sees_each_result_once(
    tmp_path: Path, users: Path, client_cert: tuple[Path, Path]
) -> None:
    """Result.Sequence, subscribed before the first sample arrives, steps by one from 1 to the
    last decision (none missed, none twice, even when several land in one publishing
    interval); the counters and History agree with it."""
    count = 12
    (tmp_path / "images").mkdir()
    port = free_port()
    source = {"name": "cam1", "kind": "watch", "path": str(tmp_path / "images")}
    cfg = station_config(tmp_path, sources=[source], sinks=[opcua_sink(port, users)])
    station = open_station(cfg)

    async def watch() -> tuple[list[Any], dict[str, Any]]:
        c = await opened(client(port, client_cert, user="viewer"))
        try:
            changes = DataChanges()
            subscription = await c.create_subscription(200, changes)
            await subscription.subscribe_data_change(
                await node(c, "cam1.Result.Sequence"), queuesize=1000
            )
            await asyncio.to_thread(wait_for_first_listing, station, "cam1")
            await asyncio.to_thread(write_images, tmp_path / "images", count)
            await wait_value(c, "cam1.Result.Sequence", count)
            await asyncio.sleep(0.3)  # the last notification's publish
            read = {
                path: await (await node(c, path)).read_value()
                for path in (
                    "cam1.Counters.Samples",
                    "cam1.Counters.Ok",
                    "cam1.Counters.Anomaly",
                    "cam1.Counters.Error",
                    "cam1.History",
                    "cam1.Result.PartId",
                    "cam1.Result.Decision",
                    "cam1.Result.Threshold",
                    "cam1.State",
                )
            }
            return changes.values, read
        finally:
            await c.disconnect()

    station.start()  # the server is up when start returns; decisions begin at once
    try:
        seen, read = asyncio.run(watch())
    finally:
        stop_station(station)
    assert seen == list(range(count + 1)), seen  # the initial 0, then each once, in order
    assert read["cam1.Counters.Samples"] == count
    assert read["cam1.Counters.Ok"] + read["cam1.Counters.Anomaly"] == count
    assert read["cam1.Counters.Error"] == 0
    history = [json.loads(entry) for entry in read["cam1.History"]]
    assert [h["seq"] for h in history] == list(range(count, count - len(history), -1))
    assert read["cam1.Result.PartId"] == history[0]["part_id"]  # the newest result
    assert {h["part_id"] for h in history} <= {f"img_{i:04d}.png" for i in range(count)}
    assert read["cam1.Result.Decision"] in ("OK", "ANOMALY")
    assert read["cam1.Result.Threshold"] == 3.0
    assert read["cam1.State"] in ("Ready", "Stopped")


# --- who may connect and write ------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_logins_and_write_roles(
    tmp_path: Path, users: Path, client_cert: tuple[Path, Path]
) -> None:
    """A wrong password, an anonymous session and an unsigned connection are refused; a
    read-only user reads but cannot write the trigger; the write user can."""
    write_images(tmp_path / "images", 2)
    port = free_port()
    cfg = station_config(
        tmp_path, sources=[triggered_source(tmp_path)], sinks=[opcua_sink(port, users)]
    )
    station = open_station(cfg)
    assert not Path(f"{cfg.spool.path}.ua.key.pem").exists()
    station.start()

    async def attempts() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for label, c in (
            ("wrong password", client(port, client_cert, password="wrong-password")),
            ("anonymous", client(port, client_cert, user=None)),
            ("unsigned", client(port, None)),
            ("unknown user", client(port, client_cert, user="nobody")),
        ):
            try:
                await opened(c)
                out[label] = "connected"
                await c.disconnect()
            except Exception as exc:  # what a refused client sees varies by stage
                out[label] = type(exc).__name__
        unlisted = client(port, client_cert, user=None)  # a user certificate nobody listed
        await unlisted.load_client_certificate(str(client_cert[0]))
        await unlisted.load_private_key(client_cert[1])
        try:
            await opened(unlisted)
            out["unlisted certificate"] = "connected"
            await unlisted.disconnect()
        except Exception as exc:
            out["unlisted certificate"] = type(exc).__name__
        viewer = await opened(client(port, client_cert, user="viewer", mode="Sign"))
        try:
            out["viewer reads"] = await (await node(viewer, "cam1.Handshake.Ready")).read_value()
            try:
                await (await node(viewer, "cam1.Handshake.Trigger")).write_value(True)
                out["viewer writes"] = "written"
            except ua.UaStatusCodeError as exc:
                out["viewer writes"] = type(exc).__name__
            out["trigger after viewer"] = await (
                await node(viewer, "cam1.Handshake.Busy")
            ).read_value()
        finally:
            await viewer.disconnect()
        plc = await opened(client(port, client_cert))
        try:
            try:
                await (await node(plc, "cam1.Result.Decision")).write_value("OK")
                out["plc writes a result"] = "written"
            except ua.UaStatusCodeError as exc:
                out["plc writes a result"] = type(exc).__name__
        finally:
            await plc.disconnect()
        return out

    try:
        out = asyncio.run(attempts())
    finally:
        stop_station(station)
    for refused in (
        "wrong password",
        "anonymous",
        "unsigned",
        "unknown user",
        "unlisted certificate",
    ):
        assert out[refused] != "connected", (refused, out)
    assert out["viewer reads"] is True
    assert out["viewer writes"] == "BadUserAccessDenied"
    assert out["trigger after viewer"] is False
    assert out["plc writes a result"] == "BadUserAccessDenied"  # not a writable node
    key = Path(f"{cfg.spool.path}.ua.key.pem")
    assert key.exists() and (key.stat().st_mode & 0o777) == 0o600  # generated on first start


def test_none_only_when_allowed_and_anonymous_read_only(
    tmp_path: Path, users: Path, client_cert: tuple[Path, Path]
) -> None:
    """With security None and allow_anonymous listed, an unsigned anonymous client reads but
    cannot write."""
    write_images(tmp_path / "images", 1)
    port = free_port()
    sink = opcua_sink(port, users, security=["None"], allow_anonymous=True)
    cfg = station_config(tmp_path, sources=[triggered_source(tmp_path)], sinks=[sink])
    station = open_station(cfg)
    station.start()

    async def anonymous() -> tuple[Any, str]:
        c = await opened(client(port, None, user=None))
        try:
            ready = await (await node(c, "cam1.Handshake.Ready")).read_value()
            try:
                await (await node(c, "cam1.Handshake.Trigger")).write_value(True)
                return ready, "written"
            except ua.UaStatusCodeError as exc:
                return ready, type(exc).__name__
        finally:
            await c.disconnect()

    try:
        ready, written = asyncio.run(anonymous())
    finally:
        stop_station(station)
    assert ready is True and written == "BadUserAccessDenied"


def test_users_file_open_to_others_is_refused(tmp_path: Path, users: Path) -> None:
    from flowedge.core.errors import ConfigError

    loose = tmp_path / "users"
    loose.write_bytes(users.read_bytes())
    loose.chmod(0o640)
    write_images(tmp_path / "images", 1)
    cfg = station_config(tmp_path, sinks=[opcua_sink(free_port(), loose)])
    with pytest.raises(ConfigError, match="chmod 600"):
        open_station(cfg)


# --- the handshake ----------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_handshake_over_opcua_and_the_ack_timeout_event(
    tmp_path: Path, users: Path, client_cert: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """PartId + Trigger -> Busy -> ResultReady with the part id echoed -> ResultAck -> Ready;
    a second trigger while the result waits is refused (an event); a result never
    acknowledged is a handshake_timeout event."""
    write_images(tmp_path / "images", 3)
    port = free_port()
    source = triggered_source(tmp_path, ack_timeout_s=1.0)
    cfg = station_config(tmp_path, sources=[source], sinks=[opcua_sink(port, users)])
    station = open_station(cfg)
    station.start()

    async def plc() -> dict[str, Any]:
        c = await opened(client(port, client_cert))
        out: dict[str, Any] = {}
        try:
            await wait_value(c, "cam1.Handshake.Ready", True)
            await (await node(c, "cam1.Handshake.PartId")).write_value("P-100")
            await (await node(c, "cam1.Handshake.Trigger")).write_value(True)
            await wait_value(c, "cam1.Handshake.ResultReady", True)
            for name in ("ResultPartId", "ResultDecision", "ResultScore", "ResultSequence", "Busy"):
                out[name] = await (await node(c, f"cam1.Handshake.{name}")).read_value()
            out["Result.PartId"] = await (await node(c, "cam1.Result.PartId")).read_value()
            await (await node(c, "cam1.Handshake.Trigger")).write_value(True)  # not acked yet
            await wait_value(c, "cam1.Handshake.Trigger", False)
            await (await node(c, "cam1.Handshake.ResultAck")).write_value(True)
            await wait_value(c, "cam1.Handshake.Ready", True)
            out["ResultReady after ack"] = await (
                await node(c, "cam1.Handshake.ResultReady")
            ).read_value()
            # a second part, never acknowledged
            await (await node(c, "cam1.Handshake.PartId")).write_value("P-101")
            await (await node(c, "cam1.Handshake.Trigger")).write_value(True)
            await wait_value(c, "cam1.Handshake.ResultReady", True)
            await wait_value(c, "cam1.Handshake.AckTimedOut", True)
            out["second"] = await (await node(c, "cam1.Handshake.ResultPartId")).read_value()
        finally:
            await c.disconnect()
        return out

    try:
        out = asyncio.run(plc())
        wait_until(lambda: events_of(station, caplog, "handshake_timeout"), 10, "the timeout event")
    finally:
        stop_station(station)
    assert out["ResultPartId"] == "P-100" and out["Result.PartId"] == "P-100"
    assert out["ResultDecision"] in ("OK", "ANOMALY")
    assert out["ResultScore"] > 0 and out["ResultSequence"] == 1
    assert out["Busy"] is False and out["ResultReady after ack"] is False
    assert out["second"] == "P-101"
    refused = events_of(station, caplog, "handshake_refused")
    assert len(refused) == 1 and "P-100" in refused[0] and "not acknowledged" in refused[0]
    timeouts = events_of(station, caplog, "handshake_timeout")
    assert len(timeouts) == 1 and "part P-101" in timeouts[0]
    with sqlite3.connect(cfg.spool.path) as db:  # one sample per trigger
        assert db.execute("SELECT last FROM sequence WHERE sensor = 'cam1'").fetchone()[0] == 2


def handshake_topics() -> dict[str, str]:
    base = f"flowedge-test/{uuid.uuid4().hex}"
    return {f"{name}_topic": f"{base}/{name}" for name in ("trigger", "result", "ack", "state")}


class MqttPlc:
    """A PLC on the handshake's topics: what it receives on the result and state topics."""

    def __init__(self, port: int, topics: dict[str, str]) -> None:
        self.topics = topics
        self.got: dict[str, list[bytes]] = {topics["result_topic"]: [], topics["state_topic"]: []}
        subscribed = threading.Event()
        self.client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = lambda _c, _u, m: self.got[m.topic].append(m.payload)
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe([(topics["result_topic"], 1), (topics["state_topic"], 1)])
        self.client.loop_start()
        assert subscribed.wait(10)

    @property
    def results(self) -> list[bytes]:
        return self.got[self.topics["result_topic"]]

    @property
    def states(self) -> list[bytes]:
        return self.got[self.topics["state_topic"]]

    def send(self, what: str, payload: bytes) -> None:
        self.client.publish(self.topics[f"{what}_topic"], payload, qos=1)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@contextlib.contextmanager
def station_with_mqtt_plc(tmp: Path, source: dict[str, Any], port: int):
    """A started station with ``source`` (its handshake on ``port``'s broker) and a PLC on
    its topics, once the handshake says ready; both stopped after."""
    cfg = station_config(tmp, sources=[source], mqtt={"enabled": False, "port": port})
    plc = MqttPlc(port, source["mqtt"])
    station = open_station(cfg)
    station.start()
    try:
        wait_until(lambda: b"ready" in plc.states, 20, "the ready state")
        yield station, plc
    finally:
        stop_station(station)
        plc.close()


@pytest.mark.broker
@pytest.mark.timeout(120)
def test_handshake_over_mqtt(tmp_path: Path, broker: Any, caplog: pytest.LogCaptureFixture) -> None:
    """The same handshake over topics on a private mosquitto: trigger -> result -> ack; a PLC
    that never acknowledges raises the event."""
    write_images(tmp_path / "images", 3)
    topics = handshake_topics()
    source = triggered_source(tmp_path, ack_timeout_s=1.0, mqtt=topics)
    with station_with_mqtt_plc(tmp_path, source, broker.port) as (station, plc):
        plc.send("trigger", b"P-7")
        wait_until(lambda: plc.results, 20, "the result")
        result = json.loads(plc.results[0])
        plc.send("ack", b"P-7")
        wait_until(lambda: plc.states[-1] == b"ready", 20, "ready after ack")
        plc.send("trigger", json.dumps({"part_id": "P-8"}).encode())
        wait_until(lambda: len(plc.results) == 2, 20, "the second result")
        wait_until(lambda: events_of(station, caplog, "handshake_timeout"), 10, "the timeout event")
    assert result["part_id"] == "P-7" and result["decision"] in ("OK", "ANOMALY")
    assert result["seq"] == 1 and result["score"] > 0 and result["source"] == "cam1"
    assert json.loads(plc.results[1])["part_id"] == "P-8"
    states = plc.states
    assert [s for i, s in enumerate(states) if i == 0 or s != states[i - 1]][:4] == [
        b"ready",
        b"busy",
        b"result_ready",
        b"ready",
    ]
    timeouts = events_of(station, caplog, "handshake_timeout")
    assert len(timeouts) == 1 and "part P-8" in timeouts[0]


@pytest.mark.broker
@pytest.mark.timeout(120)
def test_a_trigger_nothing_is_captured_for_is_answered_error(tmp_path: Path, broker: Any) -> None:
    """A watched folder nobody writes to: the trigger is answered ERROR with the reason after
    capture_timeout_s (the PLC is not held on busy), stored like any decision."""
    (tmp_path / "drop").mkdir()
    topics = handshake_topics()
    source = {
        "name": "cam1",
        "kind": "triggered",
        "source": {"kind": "watch", "path": str(tmp_path / "drop")},
        "capture_timeout_s": 0.5,
        "mqtt": topics,
    }
    with station_with_mqtt_plc(tmp_path, source, broker.port) as (_, plc):
        plc.send("trigger", b"P-9")
        wait_until(lambda: plc.results, 20, "the result")
    result = json.loads(plc.results[0])
    assert result["part_id"] == "P-9" and result["decision"] == "ERROR" and result["seq"] == 1
    assert "gave no sample within 0.5 s of the trigger for part P-9" in result["error"]


# --- a station SIGKILL ------------------------------------------------------------------------
@pytest.mark.timeout(180)
def test_nothing_lost_or_counted_twice_across_a_sigkill(
    tmp_path: Path, users: Path, client_cert: tuple[Path, Path]
) -> None:
    """The station process is SIGKILLed while deciding; the restarted station (now waiting
    for a trigger, so idle) shows the last decision, and Counters.Samples equals its
    sequence number: every decision counted once, none lost, none twice."""
    import yaml

    write_images(tmp_path / "images", 6)
    model = write_onnx_model(tmp_path / "model.onnx", {"threshold": 1e9, "sha256": "e" * 64})
    port = free_port()
    folder = {"kind": "folder", "path": str(tmp_path / "images"), "loop": True}
    config = tmp_path / "config.yaml"

    def write_config(source: dict[str, Any]) -> None:
        config.write_text(
            yaml.safe_dump(
                {
                    "site": "plant",
                    "station": "line1",
                    "model": {"path": str(model)},
                    "sources": [source],
                    "mqtt": {"enabled": False},
                    "sinks": [opcua_sink(port, users)],
                    "metrics": {"enabled": False},
                    "spool": {"path": str(tmp_path / "spool.sqlite")},
                }
            )
        )

    async def read(paths: list[str], until_samples: int | None = None) -> list[Any]:
        c = await opened(client(port, client_cert, user="viewer"))
        try:
            nodes = [await node(c, p) for p in paths]
            for _ in range(600):
                values = [await n.read_value() for n in nodes]
                if until_samples is None or values[0] >= until_samples:
                    return values
                await asyncio.sleep(0.05)
            raise AssertionError(f"samples stayed at {values[0]}")
        finally:
            await c.disconnect()

    async def connected() -> None:
        for _ in range(600):
            try:
                c = await opened(client(port, client_cert, user="viewer"))
                await c.disconnect()
                return
            except (TimeoutError, OSError, ua.UaError):
                await asyncio.sleep(0.1)

    command = [sys.executable, "-m", "flowedge.cli", "run", "--config", str(config)]
    write_config({"name": "cam1", **folder, "rate_hz": 40})
    station = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        asyncio.run(connected())
        asyncio.run(read(["cam1.Counters.Samples"], until_samples=8))
        os.kill(station.pid, signal.SIGKILL)
        station.wait(10)
        write_config({"name": "cam1", "kind": "triggered", "source": folder})
        station = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        asyncio.run(connected())

        def settled() -> bool:
            with sqlite3.connect(tmp_path / "spool.sqlite") as db:
                last = db.execute("SELECT last FROM sequence WHERE sensor = 'cam1'").fetchone()[0]
            sequence = asyncio.run(read(["cam1.Result.Sequence"]))[0]
            return sequence == last

        wait_until(settled, 60, "the restarted station to show the last decision")
        samples, sequence, history = asyncio.run(
            read(["cam1.Counters.Samples", "cam1.Result.Sequence", "cam1.History"])
        )
    finally:
        station.send_signal(signal.SIGTERM)
        station.wait(30)
    assert sequence >= 8
    assert samples == sequence  # decisions 1..sequence, each counted once
    seqs = [json.loads(entry)["seq"] for entry in history]
    assert seqs == list(range(sequence, sequence - len(seqs), -1))


# --- the users command and flowedge check ---------------------------------------------------------
def test_opcua_user_command_writes_a_private_hashed_file(tmp_path: Path) -> None:
    path = tmp_path / "users"
    command = [sys.executable, "-m", "flowedge.cli", "opcua-user", str(path), "line-plc"]
    done = subprocess.run(
        [*command, "--role", "write", "--password-stdin"],
        input=b"correct horse\n",
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (path.stat().st_mode & 0o777) == 0o600
    name, role, hashed = path.read_text().strip().split(":")
    assert (name, role) == ("line-plc", "write")
    assert hashed.startswith("scrypt$") and "correct horse" not in path.read_text()
    short = subprocess.run(
        [*command, "--password-stdin"], input=b"short\n", capture_output=True, timeout=60
    )
    assert short.returncode == 2 and b"at least 8" in short.stderr


def test_check_knows_the_sink(tmp_path: Path, users: Path) -> None:
    """Free port and private users file pass; a port in use or an open users file fail."""
    import socket

    from flowedge.edge.sinks import SINK_KINDS

    check = SINK_KINDS["opcua"].check
    port = free_port()
    cfg = station_config(tmp_path, sinks=[opcua_sink(port, users)])
    assert check(cfg.sinks[0], "plant", "line1", 1.0).ok
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        result = check(cfg.sinks[0], "plant", "line1", 1.0)
    assert not result.ok and f"127.0.0.1:{port}" in result.detail
    loose = tmp_path / "loose-users"
    loose.write_bytes(users.read_bytes())
    loose.chmod(0o644)
    cfg = station_config(tmp_path, sinks=[opcua_sink(port, loose)])
    result = check(cfg.sinks[0], "plant", "line1", 1.0)
    assert not result.ok and "chmod 600" in result.detail


def test_config_refuses_a_server_nobody_can_log_in_to(tmp_path: Path) -> None:
    from flowedge.core.errors import ConfigError

    with pytest.raises((ConfigError, ValueError), match="nobody could log in"):
        station_config(tmp_path, sinks=[{"kind": "opcua", "name": "ua"}])


def test_config_refuses_a_triggered_source_nothing_can_trigger(tmp_path: Path) -> None:
    from flowedge.core.errors import ConfigError

    with pytest.raises(ConfigError, match="would never be triggered"):
        station_config(tmp_path, sources=[triggered_source(tmp_path)])
    with pytest.raises(ConfigError, match="backpressure: block"):
        station_config(tmp_path, sources=[triggered_source(tmp_path, backpressure="drop_oldest")])


@pytest.mark.parametrize("trusted", [True, False])
def test_trusted_clients_folder(
    tmp_path: Path, users: Path, client_cert: tuple[Path, Path], trusted: bool
) -> None:
    """With trusted_clients, a PLC whose application certificate is not in the folder is
    refused even with a right password."""
    write_images(tmp_path / "images", 1)
    folder = tmp_path / "trusted"
    folder.mkdir()
    if trusted:
        (folder / "plc.der").write_bytes(client_cert[0].read_bytes())
    port = free_port()
    sink = opcua_sink(port, users, trusted_clients=str(folder))
    station = open_station(station_config(tmp_path, sinks=[sink]))
    station.start()

    async def attempt() -> str:
        try:
            c = await opened(client(port, client_cert))
        except Exception as exc:  # refused at CreateSession
            return type(exc).__name__
        await c.disconnect()
        return "connected"

    try:
        outcome = asyncio.run(attempt())
    finally:
        stop_station(station)
    assert (outcome == "connected") is trusted, outcome


def test_a_port_in_use_stops_the_start_with_a_clear_error(tmp_path: Path, users: Path) -> None:
    import socket

    from flowedge.core.errors import ConfigError

    write_images(tmp_path / "images", 1)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        station = open_station(station_config(tmp_path, sinks=[opcua_sink(port, users)]))
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            station.start()
    assert "DOWN" in station.sinks[0].health()
    station.spool.close()


@pytest.mark.parametrize("role", ["write", "read"])
def test_certificate_login_with_its_role(
    tmp_path: Path, users: Path, client_cert: tuple[Path, Path], role: str
) -> None:
    """A client that signs in with a certificate listed in certificate_users (an X509 user
    token, no password) is that user: it writes the handshake only with the write role."""
    write_images(tmp_path / "images", 1)
    port = free_port()
    certificate_user = {"name": "plc-cert", "cert_file": str(client_cert[0]), "role": role}
    sink = opcua_sink(port, users, certificate_users=[certificate_user])
    cfg = station_config(tmp_path, sources=[triggered_source(tmp_path)], sinks=[sink])
    station = open_station(cfg)
    station.start()

    async def write_part_id() -> str:
        c = client(port, client_cert, user=None)
        await c.load_client_certificate(str(client_cert[0]))  # the user certificate: the login
        await c.load_private_key(client_cert[1])
        await opened(c)
        try:
            await (await node(c, "cam1.Handshake.PartId")).write_value("P-1")
            return "written"
        except ua.UaStatusCodeError as exc:
            return type(exc).__name__
        finally:
            await c.disconnect()

    try:
        outcome = asyncio.run(write_part_id())
    finally:
        stop_station(station)
    assert outcome == ("written" if role == "write" else "BadUserAccessDenied")


@pytest.mark.timeout(120)
def test_the_plc_announces_the_recipe_on_the_recipe_node(
    tmp_path: Path, users: Path, client_cert: tuple[Path, Path]
) -> None:
    """``<station>.Recipe`` is the ``set_recipe`` command: taken when allowed and valid, and
    shown back as the recipe in force when refused (an empty name here)."""
    from test_recipes import SlowOpener, recipes_config

    from flowedge.edge.cmd_run import Station

    port = free_port()
    (tmp_path / "images").mkdir()
    cfg = recipes_config(
        tmp_path,
        {"by": "command", "initial": "A"},
        commands={"allowed": ["set_recipe"]},
        sources=[{"name": "cam1", "kind": "watch", "path": str(tmp_path / "images")}],
        sinks=[opcua_sink(port, users)],
    )
    station = Station(Path("unused.yaml"), cfg, None, opener=SlowOpener(0.0))

    async def announce() -> dict[str, Any]:
        out: dict[str, Any] = {}
        plc = await opened(client(port, client_cert))
        try:
            recipe = await node(plc, "line1.Recipe")
            await recipe.write_value(ua.Variant("B", ua.VariantType.String))
            out["after B"] = await recipe.read_value()
            out["router after B"] = station.pipeline.router.selector.current()
            await recipe.write_value(ua.Variant(" ", ua.VariantType.String))
            await wait_value(plc, "line1.Recipe", "B")
            out["router after blank"] = station.pipeline.router.selector.current()
        finally:
            await plc.disconnect()
        return out

    station.start()
    try:
        out = asyncio.run(announce())
    finally:
        stop_station(station)
    assert out == {"after B": "B", "router after B": "B", "router after blank": "B"}
    assert station.metrics.events.labels("command")._value.get() == 1
    assert station.metrics.events.labels("command_refused")._value.get() == 1


def test_sound_and_robot_cycle_results_reach_their_nodes(
    tmp_path: Path, users: Path, client_cert: tuple[Path, Path]
) -> None:
    """The OPC UA sink takes every modality's decision document alike: a microphone's and a
    robot's results land on their own source's nodes, with the picture the station drew."""
    from history_fakes import Recorder, decision, put_decisions, sink_context

    from flowedge.edge.sinks.opcua import OpcuaSink, OpcuaSinkConfig
    from flowedge.edge.spool import Spool

    cycle = {"id": "c17", "first_row": 1700, "rows": 100, "start_s": 0.0, "end_s": 1.0}
    docs = [
        decision(1, 5.0, source="mic1", modality="audio", part_id="motion-1"),
        decision(1, 1.0, source="robot1", modality="series", part_id="c17", cycle=cycle),
    ]
    for doc in docs:
        doc["heatmap"] = str(tmp_path / "heatmaps" / doc["sensor"] / "1.png")
    port, spool = free_port(), Spool(tmp_path / "spool.sqlite", 1000)
    status = {"sources": {"mic1": "up", "robot1": "up"}}
    context = sink_context(spool, Recorder(), lambda: status, station_config(tmp_path))
    sink = OpcuaSink(OpcuaSinkConfig(**opcua_sink(port, users)), context)
    sink.start()

    async def read() -> dict[str, Any]:
        c = await opened(client(port, client_cert, user="viewer"))
        try:
            await wait_value(c, "robot1.Result.Sequence", 1)
            paths = [f"{s}.Result.{n}" for s in ("mic1", "robot1") for n in ("PartId", "Decision")]
            paths += ["mic1.Result.HeatmapPath", "robot1.Counters.Ok", "mic1.Counters.Anomaly"]
            return {p: await (await node(c, p)).read_value() for p in paths}
        finally:
            await c.disconnect()

    try:
        put_decisions(spool, docs)
        values = asyncio.run(read())
    finally:
        sink.stop("test over", 5.0)
        spool.close()
    assert values == {
        "mic1.Result.PartId": "motion-1",
        "mic1.Result.Decision": "ANOMALY",
        "robot1.Result.PartId": "c17",
        "robot1.Result.Decision": "OK",
        "mic1.Result.HeatmapPath": docs[0]["heatmap"],
        "robot1.Counters.Ok": 1,
        "mic1.Counters.Anomaly": 1,
    }
