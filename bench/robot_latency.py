"""Robot cycles: time from a cycle's end in the log to its decision at an MQTT subscriber.

A writer appends simulated cycles to a CSV log (``time,sample,<signals>``) one
cycle at a time, ``--gap`` seconds apart, as a controller's logger does. A cycle
ends when the next cycle's first row is written (the segmenter cannot know it
earlier); that write is the start of the clock. The station (``flowedge run``'s
Station: tail source -> segmenter -> preprocessing -> ONNX Runtime MTS-Flow ->
decision -> SQLite spool -> MQTT QoS 1 to a private mosquitto) publishes one
decision per cycle; a subscriber stamps its arrival. The station's own figure
(``latency_ms.total``, capture to decision) is printed beside it: the difference
is the tail's polling (``LogTailSource.poll_s``) and the publish.

    python bench/robot_latency.py --cycles 20 --rate 25 --train 40 --epochs 3
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from station_harness import print_latencies, station_on_private_broker

from flowedge.export.checked import ExportRequest, run_export
from flowedge.flows.config import MTSFLOW_TRAINING, MTSFlowConfig, TrainingConfig
from flowedge.flows.data.series import train_series
from flowedge.modalities import series_synthetic as sim


def onnx_mtsflow(work: Path, n_train: int, rate: float, epochs: int, blocks: int) -> Path:
    """A trained MTS-Flow on all simulator signals, exported through the parity gate."""
    cycles = [c.table for c in sim.simulate_set(n_train, 0, seed=0, rate_hz=rate)]
    config = MTSFlowConfig(signals=list(sim.SIGNALS), rate_hz=rate, n_blocks=blocks)
    training = TrainingConfig(**{**MTSFLOW_TRAINING, "epochs": epochs})
    train_series(cycles, config, training, work / "mtsflow")
    run_export(ExportRequest(work / "mtsflow", work / "mtsflow.onnx"))
    return work / "mtsflow.onnx"


def cycle_lines(cycle: sim.SimulatedCycle, number: int, t0: float) -> list[str]:
    table = cycle.table
    columns = [table.columns[s] for s in sim.SIGNALS]
    return [
        ",".join([f"{t0 + table.time_s[i]:.4f}", str(number), *(f"{c[i]:.6g}" for c in columns)])
        for i in range(len(table))
    ]


def write_log(path: Path, cycles: list, gap_s: float, closed: dict[str, float]) -> None:
    """Append the cycles one by one; ``closed[id]``: when the row that ends cycle ``id`` was written."""
    with open(path, "a", encoding="utf-8") as log:
        t0 = 0.0
        for number, cycle in enumerate(cycles):
            lines = cycle_lines(cycle, number, t0)
            t0 += float(cycle.table.time_s[-1]) + 1.0
            log.write(lines[0] + "\n")
            log.flush()
            if number:
                closed[str(number - 1)] = time.perf_counter()
            log.write("\n".join(lines[1:]) + "\n")
            log.flush()
            time.sleep(gap_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=20, help="cycles measured")
    parser.add_argument("--rate", type=float, default=25.0, help="simulator and model rate (Hz)")
    parser.add_argument("--train", type=int, default=40, help="training cycles (latency only)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--gap", type=float, default=1.0, help="seconds between cycles")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    tmp = Path(tempfile.mkdtemp(prefix="robot-latency-"))
    model = onnx_mtsflow(tmp, args.train, args.rate, args.epochs, args.blocks)
    log_path = tmp / "robot.csv"
    log_path.write_text(",".join(["time", "sample", *sim.SIGNALS]) + "\n", encoding="utf-8")
    model_section = {
        "path": str(model),
        "backend": "onnxruntime",
        "threshold": 1e9,
        "intra_op_threads": 1,
    }
    source = {
        "name": "robot1",
        "kind": "tail",
        "path": str(log_path),
        "log": {"cycle_column": "sample"},
        "segment": {"mode": "cycle_id", "column": "sample"},
    }
    cycles = sim.simulate_set(args.cycles + 2, 0, seed=7, rate_hz=args.rate)
    closed: dict[str, float] = {}
    with station_on_private_broker(tmp, model_section, source) as (_, sub):
        time.sleep(1.0)  # station and subscriber connected
        writer = threading.Thread(target=write_log, args=(log_path, cycles, args.gap, closed))
        writer.start()
        writer.join()
        docs = sub.wait_for("/decision", args.cycles + 1, timeout=120)
        arrived = sub.arrival_times("/decision", lambda doc: doc["cycle"]["id"])

    measured = [c for c in sorted(closed, key=int)[1:] if c in arrived]  # the first warms up
    to_mqtt = [1e3 * (arrived[c] - closed[c]) for c in measured]
    inside = [d["latency_ms"]["total"] for d in docs if d["cycle"]["id"] in measured]
    steps = int(round(float(np.median([len(c.table) for c in cycles]))))
    print(
        f"MTS-Flow {len(sim.SIGNALS)} signals, ~{steps} rows per cycle at {args.rate:g} Hz, "
        f"{args.blocks} blocks, ONNX Runtime 1 thread; {len(measured)} cycles, {args.gap:g} s apart"
    )
    print_latencies([("cycle end -> MQTT arrival", to_mqtt), ("capture -> decision", inside)])


if __name__ == "__main__":
    main()
