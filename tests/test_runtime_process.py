"""``flowedge run`` as a real process with a tiny trained checkpoint and a private broker:
SIGKILL with a full spool, restart, SIGHUP reload, systemd notify/watchdog, SIGTERM drain."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from mqtt_broker import Broker, Subscriber, require_mosquitto  # noqa: E402
from runtime_fakes import validator, wait_until, write_images, write_onnx_model  # noqa: E402

pytestmark = pytest.mark.timeout(180)


def write_config(
    path: Path, tmp: Path, checkpoint: Path, port: int, threshold: float, **source: object
) -> None:
    path.write_text(
        yaml.safe_dump(
            {
                "site": "plant",
                "station": "line1",
                "model": {"path": str(checkpoint), "backend": "torch", "threshold": threshold},
                "sources": [
                    {"name": "cam1", "kind": "folder", "path": str(tmp / "images"), **source}
                ],
                "mqtt": {"port": port, "reconnect_min_s": 0.2, "reconnect_max_s": 1},
                "metrics": {"enabled": True, "port": 0},
                "spool": {"path": str(tmp / "spool.sqlite")},
                "pipeline": {"heatmaps": "none"},
            }
        )
    )


def start(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "flowedge.cli", "run", "--config", str(config), *args],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def spool_state(path: Path) -> tuple[int, int]:
    """(messages waiting, last sequence number of cam1), read beside the running process."""
    if not path.exists():
        return 0, 0
    db = sqlite3.connect(path, timeout=5)
    try:
        waiting = db.execute("SELECT COUNT(*) FROM records WHERE kind = 'decision'").fetchone()[0]
        last = db.execute("SELECT last FROM sequence WHERE sensor = 'cam1'").fetchone()
    except sqlite3.OperationalError:  # tables not created yet
        return 0, 0
    finally:
        db.close()
    return int(waiting), int(last[0]) if last else 0


@pytest.mark.broker
def test_sigkill_with_full_spool_then_restart_loses_nothing(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    require_mosquitto()
    (tmp_path / "broker").mkdir()
    broker = Broker(tmp_path / "broker")  # not started: the broker is down at first
    write_images(tmp_path / "images", 6, size=64)
    config = tmp_path / "config.yaml"
    write_config(config, tmp_path, tiny_checkpoint, broker.port, 1e9, loop=True, rate_hz=20)
    first = start(config)
    try:
        wait_until(lambda: spool_state(tmp_path / "spool.sqlite")[0] >= 8, 90, "a full spool")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    waiting, killed_at = spool_state(tmp_path / "spool.sqlite")
    assert waiting == killed_at >= 8  # nothing was published, nothing lost to the crash

    broker.start()
    sub = Subscriber(broker.port, topic="flowedge/plant/line1/+/decision")
    try:
        second = start(config, "--max-samples", "3", "--exit-when-done")
        out, _ = second.communicate(timeout=120)
        assert second.returncode == 0, out[-3000:]
        docs = sub.wait_for("/decision", killed_at + 3)
        first_seen: list[int] = []
        for doc in docs:
            if doc["seq"] not in first_seen:
                first_seen.append(doc["seq"])
        assert first_seen == list(range(1, killed_at + 4))
        for doc in docs:
            validator("decision").validate(doc)
        assert spool_state(tmp_path / "spool.sqlite")[0] == 0
    finally:
        sub.close()
        broker.stop()


class NotifySocket:
    """What systemd's $NOTIFY_SOCKET receives (abstract namespace, like systemd uses)."""

    def __init__(self) -> None:
        self.address = f"@flowedge-test-{os.getpid()}-{time.monotonic_ns()}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.address[1:])
        self.sock.settimeout(0.1)
        self.lines: list[str] = []

    def collect(self) -> list[str]:
        while True:
            try:
                self.lines += self.sock.recv(4096).decode().splitlines()
            except TimeoutError:
                return self.lines

    def wait_for(self, line: str, timeout: float) -> None:
        wait_until(lambda: any(x.startswith(line) for x in self.collect()), timeout, line)


@pytest.mark.broker
def test_notify_watchdog_sighup_reload_and_sigterm_drain(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    require_mosquitto()
    (tmp_path / "broker").mkdir()
    broker = Broker(tmp_path / "broker").start()
    write_images(tmp_path / "images", 4, size=64)
    config = tmp_path / "config.yaml"
    write_config(config, tmp_path, tiny_checkpoint, broker.port, 1e9, loop=True, rate_hz=10)
    sub = Subscriber(broker.port, topic="flowedge/plant/line1/#")
    notify = NotifySocket()
    proc = start(config, env={"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "600000"})
    try:
        notify.wait_for("READY=1", 90)
        assert [d["decision"] for d in sub.wait_for("/decision", 2)][:2] == ["OK", "OK"]
        notify.wait_for("WATCHDOG=1", 10)

        write_config(config, tmp_path, tiny_checkpoint, broker.port, -1e9, loop=True, rate_hz=10)
        proc.send_signal(signal.SIGHUP)
        wait_until(
            lambda: any(d["threshold"] == -1e9 for d in sub.on("/decision")),
            30,
            "a decision with the reloaded threshold",
        )
        reloaded = [d for d in sub.on("/decision") if d["threshold"] == -1e9]
        assert all(d["decision"] == "ANOMALY" for d in reloaded)
        assert any(e["kind"] == "reloaded" for e in sub.on("line1/event"))
        notify.wait_for("RELOADING=1", 5)

        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    notify.wait_for("STOPPING=1", 5)
    waiting, last = spool_state(tmp_path / "spool.sqlite")
    assert waiting == 0  # SIGTERM drained everything to the broker
    docs = sub.wait_for("/decision", last)
    assert sorted({d["seq"] for d in docs}) == list(range(1, last + 1))
    status = [doc for topic, doc, _ in sub.messages if topic.endswith("/status")]
    assert status[0]["state"] == "online" and status[-1]["state"] == "offline"
    assert "graceful" in status[-1]["reason"]
    sub.close()
    broker.stop()


def test_a_station_whose_every_source_failed_exits_nonzero(tmp_path: Path) -> None:
    """systemd's Restart=on-failure restarts it; a folder that simply ended exits 0."""
    model = write_onnx_model(tmp_path / "model.onnx", {"threshold": 0.5, "sha256": "e" * 64})
    write_images(tmp_path / "images", 2)
    config = tmp_path / "config.yaml"

    def run_with(folder: Path) -> subprocess.CompletedProcess:
        config.write_text(
            yaml.safe_dump(
                {
                    "model": {"path": str(model), "backend": "onnxruntime"},
                    "sources": [{"name": "cam1", "kind": "folder", "path": str(folder)}],
                    "mqtt": {"enabled": False},
                    "metrics": {"enabled": False},
                    "spool": {"path": str(tmp_path / "spool.sqlite")},
                }
            )
        )
        done = start(config)
        out, _ = done.communicate(timeout=60)
        return subprocess.CompletedProcess(done.args, done.returncode, out)

    ended = run_with(tmp_path / "images")
    assert ended.returncode == 0, ended.stdout[-3000:]
    assert "threshold 0.5 from the calibration embedded in" in ended.stdout
    failed = run_with(tmp_path / "unmounted")
    assert failed.returncode == 3, failed.stdout[-3000:]
    assert "every source failed (cam1: folder" in failed.stdout
    assert "Traceback" not in failed.stdout
