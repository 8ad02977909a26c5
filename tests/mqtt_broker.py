"""A private mosquitto for tests: free port, optional password file, stop/restart on the same port.

Tests using it skip with a clear reason when the ``mosquitto`` binary is missing.
Never port 1883: a station broker may run on this machine.
"""

from __future__ import annotations

import getpass
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
)


def require_mosquitto() -> str:
    if MOSQUITTO is None:
        pytest.skip("mosquitto binary not found (apt-get install mosquitto) - MQTT tests skipped")
    return MOSQUITTO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    def __init__(
        self,
        workdir: Path,
        users: dict[str, str] | None = None,
        tls: dict[str, Path] | None = None,
        persistent: bool = False,
        autosave_s: int | None = None,
    ) -> None:
        """``persistent``: saved after every change, unless ``autosave_s`` says every so many
        seconds (mosquitto's default is 1800): a SIGKILL loses what came since."""
        self.binary = require_mosquitto()
        self.port = free_port()
        self.workdir = workdir
        self.conf = workdir / "mosquitto.conf"
        # as root, mosquitto switches to user 'mosquitto', who cannot read pytest's tmp dirs
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"user {getpass.getuser()}",
        ]
        if persistent and autosave_s is not None:
            lines += [
                "persistence true",
                f"persistence_location {workdir}/",
                f"autosave_interval {autosave_s}",
            ]
        elif persistent:  # saved after every change: sessions and queued messages survive SIGKILL
            lines += [
                "persistence true",
                f"persistence_location {workdir}/",
                "autosave_on_changes true",
                "autosave_interval 1",
            ]
        else:
            lines.append("persistence false")
        if tls:  # {ca, cert, key}: TLS listener that requires a client certificate from the CA
            lines += [
                f"cafile {tls['ca']}",
                f"certfile {tls['cert']}",
                f"keyfile {tls['key']}",
                "require_certificate true",
            ]
        if users:
            pwfile = workdir / "passwd"
            pwfile.write_text("")
            for user, password in users.items():
                subprocess.run(
                    ["mosquitto_passwd", "-b", str(pwfile), user, password],
                    check=True,
                    capture_output=True,
                )
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        else:
            lines.append("allow_anonymous true")
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> Broker:
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=5)
            self.proc = None


class Subscriber:
    """Collects every message under a topic filter, in arrival order (JSON decoded)."""

    def __init__(
        self,
        port: int,
        topic: str = "#",
        username: str | None = None,
        password: str | None = None,
        persistent: bool = False,
    ) -> None:
        """``persistent``: a session the broker keeps (with its queued messages) while this
        subscriber is away, e.g. across a broker restart, so no message slips past it."""
        self.messages: list[tuple[str, Any, bool]] = []
        self.content_types: set[str | None] = set()  # MQTT 5 content type of what arrived
        self.arrived: list[float] = []  # perf_counter() at each message (latency benches)
        self.lock = threading.Condition()  # notified on every message
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{port}", protocol=mqtt.MQTTv5
        )
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.reconnect_delay_set(0.1, 0.5)
        if persistent:
            session = Properties(PacketTypes.CONNECT)
            session.SessionExpiryInterval = 3600
            self.client.connect("127.0.0.1", port, clean_start=False, properties=session)
        else:
            self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:  # noqa: ANN001
        with self.lock:
            self.messages.append((msg.topic, json.loads(msg.payload), bool(msg.retain)))
            self.arrived.append(time.perf_counter())
            self.content_types.add(getattr(msg.properties, "ContentType", None))
            self.lock.notify_all()

    def on(self, suffix: str) -> list[dict[str, Any]]:
        with self.lock:
            return [doc for topic, doc, _ in self.messages if topic.endswith(suffix)]

    def wait_for(self, suffix: str, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """The messages on ``suffix`` once ``count`` arrived (or all there are at the timeout)."""
        with self.lock:
            self.lock.wait_for(lambda: len(self.on(suffix)) >= count, timeout)
        return self.on(suffix)

    def arrival_times(self, suffix: str, key: Callable[[dict[str, Any]], str]) -> dict[str, float]:
        """When each message on ``suffix`` arrived (perf_counter), by ``key(document)``."""
        with self.lock:
            return {
                key(doc): at
                for (topic, doc, _), at in zip(self.messages, self.arrived, strict=True)
                if topic.endswith(suffix)
            }

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def make_certificates(folder: Path) -> dict[str, Path]:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate (openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not found - TLS test skipped")
    folder.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    )
    for name, ext in (
        ("server", "subjectAltName=IP:127.0.0.1"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
        )
        (folder / f"{name}.ext").write_text(ext + "\n")
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            f"{name}.ext",
            "-out",
            f"{name}.crt",
        )
    return {
        name: folder / name
        for name in ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")
    }


class Mqtt311Only:
    """A TCP proxy in front of a broker that refuses MQTT 5 CONNECTs like a 3.1.1-only broker
    that knows v5 exists (CONNACK 0x84) and forwards everything else."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen()
        self.port = int(self.server.getsockname()[1])
        self.refused = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        first = client.recv(65536)
        offset = 1
        while first[offset] & 0x80:  # skip the variable-length "remaining length"
            offset += 1
        name_len = int.from_bytes(first[offset + 1 : offset + 3], "big")
        if first[offset + 3 + name_len] == 5:
            self.refused += 1
            client.sendall(bytes([0x20, 3, 0, 0x84, 0]))
            client.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        upstream.sendall(first)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            src.close()
            dst.close()

    def close(self) -> None:
        self.server.close()
