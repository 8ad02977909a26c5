"""The fleet historian under load: decisions per second into PostgreSQL, ingest lag, cost.

A load generator (threads of this process) plays ``--stations`` stations, each publishing
``--rate`` decisions per second at QoS 1 on its own topic to a private mosquitto; a real
``flowedge historian`` process stores them in a private PostgreSQL (fsync on, as in
production) for ``--seconds``. Measured:

- sustained rate: rows committed per second between the first and the last commit;
- ingest lag: ``stored_utc - decided_utc`` per row (the generator stamps ``decided_utc``
  when it publishes), p50 / p99 / max;
- cost per decision: CPU time (user + system) of the historian process plus the
  PostgreSQL server's processes, per row; the baseline, in the same run, is one plain
  ``COPY`` of the same rows into an empty table of the same definition (the cheapest way
  PostgreSQL takes them, without MQTT, parsing, de-duplication or acknowledgements).

    .venv/bin/python bench/historian.py --stations 100 --rate 10 --seconds 30
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from mqtt_broker import Broker  # noqa: E402
from pg_server import PgServer  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SECRET = "b" * 64


def cpu_s(pids: list[int]) -> float:
    """User + system seconds of these processes (those gone meanwhile count 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def document(station: int, seq: int) -> bytes:
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    score = (seq * 7919 % 1000) / 100
    doc = {
        "schema": "flowedge.decision/1",
        "site": "bench",
        "station": f"st{station:03d}",
        "sensor": "cam1",
        "seq": seq,
        "part_id": f"part_{seq:07d}.png",
        "captured_utc": now,
        "decided_utc": now,
        "decision": "ANOMALY" if score > 9.5 else "OK",
        "score": score,
        "threshold": 9.5,
        "normalised_score": None,
        "model": {
            "id": "csflow-0123456789ab",
            "weights_sha256": "f" * 64,
            "calibration_sha256": None,
            "backend": "onnxruntime",
        },
        "latency_ms": {
            "capture": 0.1,
            "queue": 0.1,
            "preprocess": 0.8,
            "infer": 55.0,
            "publish": 0.1,
            "total": 56.3,
        },
        "heatmap": None,
        "error": None,
        "modality": "image",
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def generate(
    port: int, stations: list[int], rate: float, seconds: float, counts: list[int]
) -> None:
    """Publish ``rate`` decisions per second for each station, paced on a fixed schedule."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    start = time.monotonic()
    seq = 0
    infos = []
    while time.monotonic() - start < seconds:
        due = int((time.monotonic() - start) * rate) + 1
        while seq < due:
            seq += 1
            for station in stations:
                topic = f"flowedge/bench/st{station:03d}/cam1/decision"
                infos.append(client.publish(topic, document(station, seq), qos=1))
        time.sleep(max(0.0, start + seq / rate - time.monotonic()))
    for info in infos:
        info.wait_for_publish(60)
    counts.append(seq * len(stations))
    client.disconnect()
    client.loop_stop()


def table_count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return int(conn.execute("SELECT count(*) FROM flowedge_decisions").fetchone()[0])


def copy_baseline(dsn: str, server: PgServer) -> dict[str, float]:
    """The same rows, exported, then one COPY into an empty table like flowedge_decisions."""
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE copy_baseline (LIKE flowedge_decisions INCLUDING ALL)")
        conn.commit()
        data = bytearray()
        with conn.cursor().copy("COPY flowedge_decisions TO STDOUT") as copy:
            for chunk in copy:
                data += chunk
        rows = table_count(dsn)
        pids = server.pids()
        before_pg, before_me, wall = cpu_s(pids), time.process_time(), time.perf_counter()
        with conn.cursor().copy("COPY copy_baseline FROM STDIN") as copy:
            copy.write(bytes(data))
        conn.commit()
        wall = time.perf_counter() - wall
        spent = cpu_s(pids) - before_pg + time.process_time() - before_me
    return {"rows": rows, "wall_s": wall, "cpu_s": spent, "rows_per_s": rows / wall}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stations", type=int, default=100)
    parser.add_argument("--rate", type=float, default=10.0, help="decisions per second per station")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--generators", type=int, default=4, help="publishing clients")
    parser.add_argument(
        "--batch-wait", type=float, default=None, help="the historian's batch_wait_s"
    )
    args = parser.parse_args()

    load_before = os.getloadavg()
    server = PgServer(durable=True).start()
    work = Path(tempfile.mkdtemp(prefix="flowedge-bench-historian-"))
    (work / "broker").mkdir()
    broker = Broker(work / "broker")
    with open(broker.conf, "a") as conf:
        conf.write("max_queued_messages 0\n")  # no drops while the historian is behind
    broker.start()
    dsn = server.create_database("bench")
    config = work / "historian.yaml"
    settings = {
        "mqtt": {"port": broker.port},
        "database": {"dsn": dsn},
        "resend": {"historian": "bench"},
    }
    if args.batch_wait is not None:
        settings["batch_wait_s"] = args.batch_wait
    config.write_text(yaml.safe_dump(settings))
    env = {**os.environ, "FLOWEDGE_HISTORIAN_SECRET": SECRET}
    with open(work / "historian.log", "wb") as log:  # the child keeps its own descriptor
        historian = subprocess.Popen(
            [sys.executable, "-m", "flowedge.cli", "historian", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 60
        while "connected to" not in (work / "historian.log").read_text():
            if time.monotonic() > deadline or historian.poll() is not None:
                raise RuntimeError((work / "historian.log").read_text()[-2000:])
            time.sleep(0.1)
        pg_pids = server.pids()
        before = {
            "historian": cpu_s([historian.pid]),
            "postgres": cpu_s(pg_pids),
            "broker": cpu_s([broker.proc.pid]),
        }
        counts: list[int] = []
        threads = [
            threading.Thread(
                target=generate,
                args=(
                    broker.port,
                    list(range(g, args.stations, args.generators)),
                    args.rate,
                    args.seconds,
                    counts,
                ),
            )
            for g in range(args.generators)
        ]
        generator_cpu = time.process_time()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        generator_cpu = time.process_time() - generator_cpu
        published = sum(counts)
        deadline = time.monotonic() + 300
        while table_count(dsn) < published and time.monotonic() < deadline:
            time.sleep(0.2)
        pg_pids = sorted(set(pg_pids) | set(server.pids()))
        spent = {
            "historian": cpu_s([historian.pid]) - before["historian"],
            "postgres": cpu_s(pg_pids) - before["postgres"],
            "broker": cpu_s([broker.proc.pid]) - before["broker"],
        }
        with psycopg.connect(dsn) as conn:
            stored, first, last, p50, p99, worst = conn.execute(
                "SELECT count(*), min(stored_utc), max(stored_utc), "
                "percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM stored_utc - decided_utc)), "
                "percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM stored_utc - decided_utc)), "
                "max(extract(epoch FROM stored_utc - decided_utc)) FROM flowedge_decisions"
            ).fetchone()
        baseline = copy_baseline(dsn, server)
    finally:
        historian.terminate()
        historian.wait(30)
        broker.stop()
        server.stop()
    historian_cost = (spent["historian"] + spent["postgres"]) / stored
    baseline_cost = baseline["cpu_s"] / baseline["rows"]
    result = {
        "stations": args.stations,
        "rate_per_station": args.rate,
        "seconds": args.seconds,
        "batch_wait_s": args.batch_wait,
        "published": published,
        "stored": stored,
        "offered_per_s": args.stations * args.rate,
        "sustained_per_s": round(stored / (last - first).total_seconds(), 1),
        "lag_ms": {
            "p50": round(p50 * 1000, 1),
            "p99": round(p99 * 1000, 1),
            "max": round(float(worst) * 1000, 1),
        },
        "cpu_s": {k: round(v, 2) for k, v in spent.items()}
        | {"generator": round(generator_cpu, 2)},
        "cost_us_per_decision": {
            "historian_process": round(spent["historian"] / stored * 1e6, 1),
            "postgres": round(spent["postgres"] / stored * 1e6, 1),
            "historian_total": round(historian_cost * 1e6, 1),
            "copy_baseline": round(baseline_cost * 1e6, 1),
            "ratio": round(historian_cost / baseline_cost, 1),
        },
        "copy_baseline": {
            "rows_per_s": round(baseline["rows_per_s"]),
            "wall_s": round(baseline["wall_s"], 3),
        },
        "load_average": {
            "before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in os.getloadavg()],
        },
        "cores": os.cpu_count(),
    }
    print(json.dumps(result, indent=1))
    return 0 if stored == published else 1


if __name__ == "__main__":
    sys.exit(main())
