"""Zero loss under crashes: feed a watched folder while killing the station and the broker.

A real ``flowedge run`` (ONNX Runtime, tiny exported model) watches a folder that a
feeder thread fills at ``--rate`` files/s (written in place, or moved in with an old
mtime; every ``--poison-every``-th file empty or a truncated PNG). Meanwhile the
station is SIGKILLed ``--kills`` times and restarted, and the private mosquitto
(persistence on, saved after every change) is SIGKILLed ``--broker-kills`` times and
restarted, at seeded random moments. An independent subscriber with a persistent
session (clean start off, session expiry) collects the decisions at QoS 1.

Printed: files fed, answered (OK/ANOMALY/ERROR at least once), lost, duplicated
deliveries (same sensor and seq: allowed only with the same payload), seq gaps.

    .venv/bin/python bench/faults.py --kills 20 --broker-kills 100 --rate 10..30

``tests/test_faults.py`` runs a short version of the same run in ``make test``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from mqtt_broker import Broker  # noqa: E402

OLD_NS = 978_307_200 * 10**9  # 2001-01-01: the mtime `cp -p` / `rsync -t` of an old file keeps
SENSOR = "line"


@dataclass(frozen=True)
class FaultPlan:
    seconds: float = 15.0  # how long the feeder writes files
    rate: tuple[float, float] = (10.0, 10.0)  # files per second, drawn per file within the range
    kills: int = 3  # station SIGKILLs (each followed by a restart)
    broker_kills: int = 1  # broker SIGKILLs (each followed by a restart)
    poison_every: int = 12  # every n-th file is empty or a truncated PNG
    seed: int = 0


@dataclass
class Outcome:
    fed: list[str]
    poison: set[str]
    messages: list[tuple[str, bytes]]  # (topic, payload) in arrival order
    by_seq: dict[int, set[bytes]] = field(init=False)
    answers: dict[str, set[int]] = field(init=False)  # part id -> seqs that answered it
    decisions: dict[str, set[str]] = field(init=False)

    def __post_init__(self) -> None:
        self.by_seq, self.answers, self.decisions = defaultdict(set), defaultdict(set), {}
        for topic, payload in self.messages:
            if not topic.endswith(f"/{SENSOR}/decision"):
                continue
            doc = json.loads(payload)
            self.by_seq[doc["seq"]].add(payload)
            self.answers[doc["part_id"]].add(doc["seq"])
            self.decisions.setdefault(doc["part_id"], set()).add(doc["decision"])

    @property
    def lost(self) -> list[str]:
        return [name for name in self.fed if name not in self.answers]

    @property
    def duplicated(self) -> int:
        """Deliveries beyond the first of a (sensor, seq): MQTT at-least-once redelivery."""
        seqs = [json.loads(p)["seq"] for t, p in self.messages if t.endswith("/decision")]
        return len(seqs) - len(set(seqs))

    @property
    def conflicting(self) -> list[int]:
        """Seqs delivered with different payloads (must never happen)."""
        return sorted(seq for seq, payloads in self.by_seq.items() if len(payloads) > 1)

    @property
    def gaps(self) -> list[int]:
        top = max(self.by_seq, default=0)
        return [seq for seq in range(1, top + 1) if seq not in self.by_seq]

    @property
    def answered_twice(self) -> list[str]:
        """Files the station itself answered under more than one seq (must never happen)."""
        return sorted(name for name, seqs in self.answers.items() if len(seqs) > 1)

    def summary(self) -> str:
        answered = len(self.fed) - len(self.lost)
        return (
            f"files fed {len(self.fed)} (poison {len(self.poison)}), answered {answered}, "
            f"lost {len(self.lost)}, duplicated deliveries {self.duplicated}, "
            f"conflicting seqs {len(self.conflicting)}, seq gaps {len(self.gaps)}, "
            f"answered twice {len(self.answered_twice)}"
        )


class PersistentSubscriber:
    """A consumer like a PLC gateway: fixed client id, session kept by the broker across
    its own restarts, QoS 1; records raw payloads so duplicates can be compared byte for byte."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"faults-sub-{port}", protocol=mqtt.MQTTv5
        )
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.reconnect_delay_set(0.1, 0.5)
        session = Properties(PacketTypes.CONNECT)
        session.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, clean_start=False, properties=session)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:  # noqa: ANN001
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def answered(self) -> set[str]:
        with self.lock:
            return {json.loads(p)["part_id"] for t, p in self.messages if t.endswith("/decision")}

    def close(self) -> list[tuple[str, bytes]]:
        self.client.disconnect()
        self.client.loop_stop()
        with self.lock:
            return list(self.messages)


def export_tiny_model(folder: Path) -> Path:
    """The tests' stand-in flow exported to ONNX (the station itself never imports torch)."""
    from test_export import StandInDetector

    from flowedge.export.onnx_export import export_onnx

    detector = StandInDetector().eval()
    model = folder / "model.onnx"
    export_onnx(detector, detector.card(), model)
    return model


class Station:
    """``flowedge run`` as a subprocess that can be SIGKILLed and started again."""

    def __init__(self, workdir: Path, model: Path, port: int, watched: Path) -> None:
        self.config = workdir / "config.yaml"
        self.spool = workdir / "spool.sqlite"
        self.log_path = workdir / "station.log"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "site": "plant",
                    "station": "faults",
                    "model": {"path": str(model), "backend": "onnxruntime", "threshold": 1e9},
                    "sources": [
                        {
                            "name": SENSOR,
                            "kind": "watch",
                            "path": str(watched),
                            "settle_timeout_s": 1.0,
                        }
                    ],
                    "mqtt": {"port": port, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5},
                    "metrics": {"enabled": False},
                    "spool": {"path": str(self.spool)},
                    "pipeline": {"heatmaps": "none"},
                }
            )
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "flowedge.cli", "run", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def watching(self) -> bool:
        """The watch source has taken its first-start snapshot (files from now on are ours)."""
        if not self.spool.exists():
            return False
        db = sqlite3.connect(self.spool, timeout=5)
        try:
            row = db.execute(
                "SELECT 1 FROM source_memory WHERE source = ? AND key = ?",
                (SENSOR, b""),  # the watch source's first-start mark (keys are stored as bytes)
            ).fetchone()
        except sqlite3.OperationalError:
            return False
        finally:
            db.close()
        return row is not None

    def log_text(self) -> bytes:
        return self.log_path.read_bytes()

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


class Feeder(threading.Thread):
    """Writes image files into the watched folder the ways a vision system or an operator does."""

    def __init__(self, folder: Path, staging: Path, plan: FaultPlan, images: list[bytes]) -> None:
        super().__init__(name="feeder", daemon=True)
        self.folder, self.staging, self.plan, self.images = folder, staging, plan, images
        self.rng = random.Random(plan.seed + 1)
        self.fed: list[str] = []
        self.poison: set[str] = set()

    def run(self) -> None:
        self.staging.mkdir(parents=True, exist_ok=True)
        end = time.monotonic() + self.plan.seconds
        index = 0
        while time.monotonic() < end:
            index += 1
            name = f"part_{index:05d}.png"
            data = self.images[index % len(self.images)]
            if index % self.plan.poison_every == 0:
                data = b"" if index % (2 * self.plan.poison_every) else data[: len(data) // 2]
                self.poison.add(name)
            if index % 3 == 0:  # finished elsewhere, moved in keeping an old mtime
                staged = self.staging / name
                staged.write_bytes(data)
                os.utime(staged, ns=(OLD_NS, OLD_NS))
                staged.rename(self.folder / name)
            else:  # written in place
                (self.folder / name).write_bytes(data)
            self.fed.append(name)
            time.sleep(1.0 / self.rng.uniform(*self.plan.rate))


def synthetic_images(count: int, seed: int) -> list[bytes]:
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    return [
        cv2.imencode(".png", rng.integers(0, 255, (48, 40, 3), dtype=np.uint8))[1].tobytes()
        for _ in range(count)
    ]


def wait_until(predicate, timeout: float) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def run_faults(workdir: Path, model: Path, plan: FaultPlan, settle_s: float = 120.0) -> Outcome:
    """Feed, kill and restart per ``plan``; then let everything drain and collect what arrived."""
    rng = random.Random(plan.seed)
    (workdir / "broker").mkdir(parents=True, exist_ok=True)
    watched = workdir / "watched"
    watched.mkdir(exist_ok=True)
    broker = Broker(workdir / "broker", persistent=True).start()
    subscriber = PersistentSubscriber(broker.port, f"flowedge/plant/faults/{SENSOR}/decision")
    station = Station(workdir, model, broker.port, watched)
    feeder = Feeder(watched, workdir / "staging", plan, synthetic_images(8, plan.seed))
    try:
        station.start()
        if not wait_until(station.watching, 60):
            raise RuntimeError(f"the station did not start; see {workdir / 'station.log'}")
        schedule = sorted(
            [(rng.uniform(0, plan.seconds), "station") for _ in range(plan.kills)]
            + [(rng.uniform(0, plan.seconds), "broker") for _ in range(plan.broker_kills)]
        )
        started = time.monotonic()
        feeder.start()
        for at, target in schedule:
            time.sleep(max(0.0, started + at - time.monotonic()))
            if target == "station":
                station.kill()
                time.sleep(rng.uniform(0.1, 1.0))  # files keep arriving while it is down
                station.start()
            else:
                broker.stop()
                time.sleep(rng.uniform(0.1, 0.5))
                broker.start()
        feeder.join()
        expected = set(feeder.fed)
        wait_until(lambda: expected <= subscriber.answered(), settle_s)
        station.stop()
    finally:
        station.kill()
        messages = subscriber.close()
        broker.stop()
    return Outcome(feeder.fed, feeder.poison, messages)


def _rate(text: str) -> tuple[float, float]:
    low, _, high = text.partition("..")
    return float(low), float(high or low)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="station SIGKILLs")
    parser.add_argument("--broker-kills", type=int, default=100, help="broker SIGKILLs")
    parser.add_argument(
        "--rate", type=_rate, default=(10.0, 30.0), help="files/s, N or LOW..HIGH (default 10..30)"
    )
    parser.add_argument("--seconds", type=float, default=120.0, help="how long files are fed")
    parser.add_argument("--poison-every", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    plan = FaultPlan(
        args.seconds, args.rate, args.kills, args.broker_kills, args.poison_every, args.seed
    )
    (ROOT / "runs").mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="faults-", dir=ROOT / "runs"))  # kept: station.log
    print(f"plan {plan}; work folder {workdir}")
    outcome = run_faults(workdir, export_tiny_model(workdir), plan)
    print(outcome.summary())
    for label, items in (
        ("lost", outcome.lost),
        ("conflicting seqs", outcome.conflicting),
        ("seq gaps", outcome.gaps),
        ("answered twice", outcome.answered_twice),
    ):
        if items:
            print(f"{label}: {items[:20]}{' ...' if len(items) > 20 else ''}")
    bad = outcome.lost or outcome.conflicting or outcome.gaps or outcome.answered_twice
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
