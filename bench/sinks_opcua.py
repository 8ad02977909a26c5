"""The OPC UA sink: decision-to-client latency and station throughput, sink on vs off.

    .venv/bin/python bench/sinks_opcua.py [--images 400] [--latency-records 600] [--rate 100]

Station throughput: an in-process station (the real ``flowedge run`` wiring, a stand-in
model that costs next to nothing, so the loop and the sinks are what is measured) scores
``--images`` small PNGs from a folder, once with no sink (the baseline) and once with the
OPC UA sink; decisions per second from the station's start (the server's start-up, a
second or two, not counted) until the pipeline has finished and, with the sink, until the
sink has acknowledged the last one (its node values written, its results file fsynced). Latency: decisions stored one at a time at ``--rate`` per second through the
spool (its fsync included, as in the station), from a perf_counter stamp taken just
before the spool commit to the arrival of that decision's ``Result.Sequence`` data
change at an asyncua client subscribed over a SignAndEncrypt session (publishing
interval 10 ms); median and p99. The client runs in this process (same clock) on its own
thread. The latency baseline, in the same run, is the plain MQTT JSON sink to a host on a
private mosquitto (bench/sinks.py's measurement). Throughput runs alternate off/on
``--repeat`` times. The sink alone: ``--records`` decisions in the spool before it starts,
until it acknowledged the last (the MQTT sink: until a host has the last one). The load average is printed with the figures: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from asyncua import Client, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from cryptography.x509.oid import ExtendedKeyUsageOID

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mqtt_broker import Broker  # noqa: E402
from runtime_fakes import open_station, station_config, write_images  # noqa: E402
from sinks import decision, full_spool, json_seq, open_sink  # noqa: E402
from sinks import latency as mqtt_latency  # noqa: E402
from sinks import throughput as mqtt_throughput  # noqa: E402

from flowedge.edge.sinks.mqtt import MqttSinkConfig  # noqa: E402
from flowedge.edge.sinks.opcua import OpcuaSinkConfig  # noqa: E402
from flowedge.edge.sinks.opcua_users import save_user  # noqa: E402
from flowedge.edge.spool import Spool  # noqa: E402

PASSWORD = "bench-password"
CLIENT_URI = "urn:flowedge-bench:client"


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def sink_config(work: Path, port: int) -> OpcuaSinkConfig:
    users = work / "users"
    if not users.exists():
        save_user(users, "bench", "read", PASSWORD)
    return OpcuaSinkConfig(name="ua", host="127.0.0.1", port=port, users_file=users)


class Subscriber:
    """An asyncua client on its own thread: the arrival time of each Result.Sequence value."""

    def __init__(self, port: int, cert: tuple[Path, Path]) -> None:
        self.port, self.cert = port, cert
        self.arrived: dict[int, float] = {}
        self.ready, self.done = threading.Event(), threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.thread.start()
        if not self.ready.wait(60):
            raise SystemExit("the client did not connect")

    def datachange_notification(self, _node: Any, value: Any, _data: Any) -> None:
        if value:
            self.arrived.setdefault(int(value), time.perf_counter())

    async def _run(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        client = Client(f"opc.tcp://127.0.0.1:{self.port}/flowedge")
        client.application_uri = CLIENT_URI
        await client.set_security_string(
            f"Basic256Sha256,SignAndEncrypt,{self.cert[0]},{self.cert[1]}"
        )
        client.set_user("bench")
        client.set_password(PASSWORD)
        async with client:
            idx = await client.get_namespace_index("urn:flowedge:plant:line1")
            subscription = await client.create_subscription(10, self)
            node = client.get_node(ua.NodeId("cam1.Result.Sequence", idx))
            await subscription.subscribe_data_change(node, queuesize=10000)
            self.ready.set()
            await self._stop.wait()

    def wait_for(self, count: int, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.arrived) < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(self.arrived)} of {count} results arrived")
            time.sleep(0.01)

    def close(self) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10)


def latency(work: Path, cert: tuple[Path, Path], count: int, rate: float) -> list[float]:
    port = free_port()
    spool = Spool(work / "latency.sqlite", 10 * count)
    sink = open_sink(sink_config(work, port), spool)
    sink.start()
    client = Subscriber(port, cert)
    made: dict[int, float] = {}
    for seq in range(1, count + 1):
        made[seq] = time.perf_counter()
        spool.put("decision", "cam1", decision(seq))
        time.sleep(max(0.0, made[seq] + 1 / rate - time.perf_counter()))
    client.wait_for(count)
    client.close()
    sink.stop("bench over", 5.0)
    spool.close()
    return sorted((client.arrived[seq] - made[seq]) * 1000 for seq in made)


def drain_rate(work: Path, records: int) -> float:
    """Decisions per second from a full spool until the sink acknowledged the last one."""
    spool = full_spool(work / "drain.sqlite", records)
    sink = open_sink(sink_config(work, free_port()), spool)
    sink.start()  # the server's start-up is not counted
    start = time.perf_counter()
    assert sink.flush(300.0), "the OPC UA sink did not deliver everything"
    elapsed = time.perf_counter() - start
    sink.stop("bench over", 5.0)
    spool.close()
    return records / elapsed


def station_rate(work: Path, images: int, with_sink: bool) -> tuple[float, float | None]:
    """Decisions per second of the whole station: until the pipeline finished, and (with
    the sink) until the sink acknowledged the last decision."""
    run = work / ("with-opcua" if with_sink else "without")
    run.mkdir(parents=True)
    (run / "images").symlink_to(work.parent / "images")
    sinks = [sink_config(work.parent, free_port()).model_dump(mode="json")] if with_sink else []
    cfg = station_config(run, sinks=sinks)
    station = open_station(cfg)
    station.start()  # the sink's server is up when this returns; the pipeline has just begun
    start = time.perf_counter()
    station.pipeline.finished.wait(600)
    finished = time.perf_counter() - start
    delivered = None
    if with_sink:
        assert station.sinks[0].flush(300.0), "the OPC UA sink did not deliver everything"
        delivered = time.perf_counter() - start
    station.shutdown("bench over", wait_for_delivery=False, interrupted=threading.Event())
    return images / finished, None if delivered is None else images / delivered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=400, help="station throughput: images")
    parser.add_argument("--latency-records", type=int, default=600)
    parser.add_argument("--rate", type=float, default=100.0, help="latency: decisions per second")
    parser.add_argument("--repeat", type=int, default=2, help="throughput: off/on pairs")
    parser.add_argument("--records", type=int, default=5000, help="sink alone: spooled decisions")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        cert = (work / "client.der", work / "client.pem")
        asyncio.run(
            setup_self_signed_certificate(
                cert[1], cert[0], CLIENT_URI, "localhost", [ExtendedKeyUsageOID.CLIENT_AUTH], {}
            )
        )
        write_images(work / "images", args.images)
        pairs = []
        for turn in range(args.repeat):
            off, _ = station_rate(work / f"{turn}", args.images, with_sink=False)
            on, delivered = station_rate(work / f"{turn}", args.images, with_sink=True)
            pairs.append((off, on, delivered))
        ms = latency(work, cert, args.latency_records, args.rate)
        drained = drain_rate(work, args.records)
        (work / "broker").mkdir()
        broker = Broker(work / "broker")
        broker.conf.write_text(broker.conf.read_text() + "max_queued_messages 0\n")
        broker.start()
        try:
            mqtt = (MqttSinkConfig(port=broker.port), broker.port)
            host = ("flowedge/+/+/+/decision", json_seq)
            mqtt_drained = mqtt_throughput(*mqtt, host, work, args.records)
            base = mqtt_latency(*mqtt, host, work, args.latency_records, args.rate)
        finally:
            broker.stop()
    load_after = os.getloadavg()
    print(f"station throughput, {args.images} images (decisions/s), off/on alternating:")
    for off, on, delivered in pairs:
        print(
            f"  no sink {off:6.0f} | opcua: pipeline done {on:6.0f} ({on / off:.2f}x), "
            f"all delivered {delivered:6.0f} ({delivered / off:.2f}x)"
        )
    print(
        f"sink alone, {args.records} decisions from a full spool (decisions/s): opcua "
        f"{drained:.0f}, mqtt JSON QoS 1 to a host (baseline) {mqtt_drained:.0f}, "
        f"ratio {drained / mqtt_drained:.2f}x"
    )
    print(f"decision -> client, {args.latency_records} at {args.rate:g}/s:")
    for label, values in (
        ("opcua (SignAndEncrypt subscription)", ms),
        ("mqtt JSON QoS 1 (baseline)", base),
    ):
        p99 = values[min(len(values) - 1, int(0.99 * len(values)))]
        print(f"  {label:<36} median {statistics.median(values):6.2f} ms, p99 {p99:6.2f} ms")
    print(
        f"  opcua / mqtt: median {statistics.median(ms) / statistics.median(base):.2f}x, p99 "
        f"{ms[int(0.99 * (len(ms) - 1))] / base[int(0.99 * (len(base) - 1))]:.2f}x"
    )
    print(
        f"load average 1/5/15 min before {load_before[0]:.2f}/{load_before[1]:.2f}/"
        f"{load_before[2]:.2f}, after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f} "
        f"on {os.cpu_count()} CPUs (a shared machine)"
    )


if __name__ == "__main__":
    main()
