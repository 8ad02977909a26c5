"""Sinks compared: decisions per second through each sink and latency from decision to the
receiving host, plain MQTT JSON (the baseline) and Sparkplug B in the same run, each against
the same private mosquitto on this machine.

    .venv/bin/python bench/sinks.py [--records 5000] [--latency-records 600] [--rate 100]

Throughput: the spool holds ``--records`` decisions before the sink starts; decisions per
second = records / time from the sink's start until the host has the last one. Latency:
decisions stored one at a time at ``--rate`` per second through the spool (its fsync
included, as in the station), from a perf_counter stamp taken when the decision is made
(just before its spool commit) to its arrival at the host's paho callback; median and p99.
The host decodes what it receives: JSON for MQTT, the official Sparkplug classes for
Sparkplug. The load average is printed with the figures: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from mqtt_broker import Broker  # noqa: E402

from flowedge.core.sparkplug_b_pb2 import Payload  # noqa: E402
from flowedge.edge.commands import CommandsConfig, StationCommands  # noqa: E402
from flowedge.edge.metrics import Metrics  # noqa: E402
from flowedge.edge.sinks import Sink, SinkContext, make_sink  # noqa: E402
from flowedge.edge.sinks.mqtt import MqttSinkConfig  # noqa: E402
from flowedge.edge.sinks.sparkplug import SparkplugSinkConfig  # noqa: E402
from flowedge.edge.spool import Spool  # noqa: E402
from flowedge.edge.timestamps import utc_now  # noqa: E402


def decision(seq: int) -> bytes:
    """A decision document as the station stores it (edge/schema/decision.schema.json)."""
    now = utc_now()
    doc = {
        "schema": "flowedge.decision/1",
        "site": "plant",
        "station": "line1",
        "sensor": "cam1",
        "seq": seq,
        "part_id": f"img_{seq:06d}.png",
        "captured_utc": now,
        "decided_utc": now,
        "decision": "OK",
        "score": 2.5,
        "threshold": 3.0,
        "normalised_score": 0.4,
        "model": {
            "id": "bench",
            "weights_sha256": "f" * 64,
            "calibration_sha256": None,
            "backend": "onnxruntime",
        },
        "latency_ms": {"total": 4.2},
        "heatmap": None,
        "error": None,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def json_seq(topic: str, payload: bytes) -> int | None:
    return json.loads(payload)["seq"] if topic.endswith("/decision") else None


def sparkplug_seq(topic: str, payload: bytes) -> int | None:
    if "/DDATA/" not in topic:
        return None
    metrics = {m.name: m for m in Payload.FromString(payload).metrics}
    return metrics["Sequence"].long_value if "Sequence" in metrics else None


class Host:
    """Subscribes to everything, decodes each message and stamps each decision's first arrival."""

    def __init__(self, port: int, topic: str, seq_of: Callable[[str, bytes], int | None]) -> None:
        self.seq_of, self.arrived, self.lock = seq_of, {}, threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-{topic[:4]}")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        time.sleep(0.3)  # subscribed before the sink starts

    def _on_message(self, client, userdata, message) -> None:  # noqa: ANN001
        at = time.perf_counter()
        seq = self.seq_of(message.topic, message.payload)
        if seq is not None:
            with self.lock:
                self.arrived.setdefault(seq, at)
                self.lock.notify_all()

    def wait_for(self, count: int, timeout: float = 300.0) -> None:
        with self.lock:
            if not self.lock.wait_for(lambda: len(self.arrived) >= count, timeout):
                raise SystemExit(f"only {len(self.arrived)} of {count} decisions arrived")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def open_sink(cfg: Any, spool: Spool) -> Sink:
    def emit(*_args: Any, **_details: Any) -> None:
        pass

    def status() -> dict[str, Any]:
        return {"model_id": "bench", "threshold": 3.0, "sources": {"cam1": "up"}, "counts": {}}

    context = SinkContext(
        "plant", "line1", spool, Metrics(), emit, status, StationCommands(CommandsConfig(), emit)
    )
    return make_sink(cfg, context)


def full_spool(path: Path, records: int) -> Spool:
    """A spool holding ``records`` decisions of cam1 (seq 1 to ``records``), as if the station
    had stored them while no sink was connected."""
    Spool(path, 10 * records).close()
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO records(kind, source, body) VALUES ('decision', 'cam1', ?)",
            [(decision(i),) for i in range(1, records + 1)],
        )
    return Spool(path, 10 * records)


def throughput(cfg: Any, port: int, host_args: tuple, work: Path, records: int) -> float:
    """Decisions per second from a full spool to the host."""
    spool = full_spool(work / f"{cfg.name}-throughput.sqlite", records)
    host = Host(port, *host_args)
    sink = open_sink(cfg, spool)
    start = time.perf_counter()
    sink.start()
    host.wait_for(records)
    elapsed = time.perf_counter() - start
    sink.stop("bench over", 5.0)
    host.close()
    spool.close()
    return records / elapsed


def latency(
    cfg: Any, port: int, host_args: tuple, work: Path, count: int, rate: float
) -> list[float]:
    """Milliseconds from each decision's spool commit (stamped before it) to the host."""
    spool = Spool(work / f"{cfg.name}-latency.sqlite", 10 * count)
    host = Host(port, *host_args)
    sink = open_sink(cfg, spool)
    sink.start()
    time.sleep(1.0)  # connected (and born)
    made: dict[int, float] = {}
    for seq in range(1, count + 1):
        made[seq] = time.perf_counter()
        spool.put("decision", "cam1", decision(seq))
        time.sleep(max(0.0, made[seq] + 1 / rate - time.perf_counter()))
    host.wait_for(count)
    sink.stop("bench over", 5.0)
    host.close()
    spool.close()
    return sorted((host.arrived[seq] - made[seq]) * 1000 for seq in made)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=5000, help="throughput: decisions spooled")
    parser.add_argument("--latency-records", type=int, default=600)
    parser.add_argument("--rate", type=float, default=100.0, help="latency: decisions per second")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        (work / "broker").mkdir()
        broker = Broker(work / "broker")
        # mosquitto drops QoS 1 messages beyond 1000 queued for a subscriber by default
        broker.conf.write_text(broker.conf.read_text() + "max_queued_messages 0\n")
        broker.start()
        sinks = {
            "mqtt (JSON, QoS 1)": (
                MqttSinkConfig(port=broker.port),
                ("flowedge/+/+/+/decision", json_seq),
            ),
            "sparkplug (B, QoS 0 + barrier)": (
                SparkplugSinkConfig(name="scada", port=broker.port),
                ("spBv1.0/#", sparkplug_seq),
            ),
        }
        rows = {}
        try:
            for label, (cfg, host_args) in sinks.items():
                rate = throughput(cfg, broker.port, host_args, work, args.records)
                ms = latency(cfg, broker.port, host_args, work, args.latency_records, args.rate)
                p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
                rows[label] = (rate, statistics.median(ms), p99)
        finally:
            broker.stop()
    load_after = os.getloadavg()
    print(f"{'sink':<32} {'decisions/s':>12} {'median ms':>10} {'p99 ms':>8}")
    for label, (rate, median, p99) in rows.items():
        print(f"{label:<32} {rate:>12.0f} {median:>10.2f} {p99:>8.2f}")
    (base, spb) = rows.values()
    print(
        f"sparkplug / mqtt: throughput {spb[0] / base[0]:.2f}x, median latency "
        f"{spb[1] / base[1]:.2f}x, p99 {spb[2] / base[2]:.2f}x"
    )
    print(
        f"records {args.records} (throughput), {args.latency_records} at {args.rate:g}/s "
        f"(latency); load average 1/5/15 min before {load_before[0]:.2f}/{load_before[1]:.2f}/"
        f"{load_before[2]:.2f}, after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f} "
        f"on {os.cpu_count()} CPUs (a shared machine)"
    )


if __name__ == "__main__":
    main()
