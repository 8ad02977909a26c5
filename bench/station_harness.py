"""One station on a private broker, for the end-to-end latency benches.

The audio and robot latency benches differ in their source and how they feed it; the
station around it is the same: batch 1, no heatmaps, no metrics endpoint, a SQLite
spool and QoS 1 decisions to a mosquitto of its own, with a subscriber stamping arrivals.
"""

from __future__ import annotations

import statistics
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from mqtt_broker import Broker, Subscriber  # noqa: E402

from flowedge.edge.cmd_run import Station  # noqa: E402
from flowedge.edge.config import parse_config  # noqa: E402


@contextmanager
def station_on_private_broker(
    work: Path, model: dict[str, Any], source: dict[str, Any]
) -> Iterator[tuple[Station, Subscriber]]:
    """A started Station deciding ``source``'s samples with ``model`` (the config's
    sections), and a subscriber to its decisions; both stopped on exit."""
    (work / "broker").mkdir()
    broker = Broker(work / "broker").start()
    cfg = parse_config(
        {
            "model": model,
            "sources": [source],
            "pipeline": {"max_batch": 1, "heatmaps": "none"},
            "mqtt": {"port": broker.port},
            "metrics": {"enabled": False},
            "spool": {"path": str(work / "spool.sqlite")},
        }
    )
    subscriber = Subscriber(broker.port, topic="flowedge/+/+/+/decision")
    station = Station(work / "unused.yaml", cfg, max_samples=None)
    station.start()
    try:
        yield station, subscriber
    finally:
        station.shutdown("benchmark over", wait_for_delivery=False, interrupted=threading.Event())
        subscriber.close()
        broker.stop()


def print_latencies(rows: Sequence[tuple[str, Sequence[float]]]) -> None:
    """One line per clock: median, p90 and max in ms, names aligned."""
    width = max(len(name) for name, _ in rows)
    for name, values in rows:
        print(
            f"{name:<{width}}: median {statistics.median(values):6.1f} ms, "
            f"p90 {np.percentile(values, 90):6.1f} ms, max {max(values):6.1f} ms"
        )
