"""AUROC per anomaly type (voraus-AD protocol) for MTS-Flow, PCA and 1-NN on simulated robot cycles.

The simulator writes a training and a test file in the voraus-AD parquet schema;
both are read back through the series reader and the cycle segmenter (the path a
real voraus-AD file takes). Protocol (thesis §7.6.4): per anomaly type, AUROC of
that type's cycles against *all* normal test cycles; the mean over types. The
MTS-Flow schedule is the thesis's (Adam 8e-4, x0.1 at 11/70 and 61/70 of the
epochs, batch 32). With ``--onnx`` the trained MTS-Flow is exported (parity-checked)
and its ONNX Runtime throughput measured on one thread; with ``--fp16`` it is also
exported fp16 (log-det sums fp32) and the parity gate's largest score errors printed.

    python bench/robot_accuracy.py --train 160 --test-normal 40 --per-type 15 --rate 25 --epochs 30
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from flowedge.flows.checkpoint import load_checkpoint
from flowedge.flows.config import (
    MTSFLOW_TRAINING,
    MTSFlowConfig,
    NearestNeighborConfig,
    PCAConfig,
    TrainingConfig,
)
from flowedge.flows.data.series import score_series, standardise_set, train_series
from flowedge.modalities import series_synthetic as sim
from flowedge.modalities.series_cycles import SegmentConfig, segment
from flowedge.modalities.series_io import VORAUS_FORMAT, SignalTable, read_log


def written_and_read(cycles: list[sim.SimulatedCycle], path: Path) -> list[SignalTable]:
    """Through the voraus-AD parquet schema and back: the reader and segmenter under test."""
    sim.write_voraus_parquet(cycles, path)
    return segment(read_log(path, VORAUS_FORMAT), SegmentConfig(column="sample"))


def per_type_auroc(scores: np.ndarray, kinds: list[str]) -> dict[str, float]:
    normal = np.array([k == sim.NORMAL for k in kinds])
    table = {}
    for kind in sim.ANOMALY_TYPES:
        chosen = normal | np.array([k == kind for k in kinds])
        table[kind] = float(roc_auc_score(~normal[chosen], scores[chosen]))
    table["mean"] = float(np.mean(list(table.values())))
    return table


def onnx_throughput(checkpoint: Path, tensors: np.ndarray, out: Path) -> dict[str, float]:
    """Export with the parity gate, then single-thread ONNX Runtime cycles per second."""
    from flowedge.backends.onnxrt import OnnxRuntimeBackend
    from flowedge.export.checked import ExportRequest, run_export

    run_export(ExportRequest(checkpoint, out))
    backend = OnnxRuntimeBackend.open(out, device="cpu", threads=1)
    backend.infer(tensors[:1])
    start = time.perf_counter()
    for i in range(len(tensors)):
        backend.infer(tensors[i : i + 1])
    per_cycle = (time.perf_counter() - start) / len(tensors)
    return {"cycles_per_s_one_core": 1.0 / per_cycle, "ms_per_cycle": per_cycle * 1e3}


def fp16_parity(checkpoint: Path, out: Path) -> dict[str, float]:
    """fp16 export through the parity gate: the largest relative score error per check."""
    from flowedge.export.checked import ExportRequest, run_export

    reports = run_export(ExportRequest(checkpoint, out, fp16=True))
    return {name: report.max_score_rel_err for name, report in reports.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=160)
    parser.add_argument("--test-normal", type=int, default=40)
    parser.add_argument("--per-type", type=int, default=15)
    parser.add_argument("--rate", type=float, default=25.0, help="simulator and model rate (Hz)")
    parser.add_argument("--epochs", type=int, default=MTSFLOW_TRAINING["epochs"])
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--pca-components", type=int, default=90)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--onnx", action="store_true", help="export MTS-Flow, measure ORT")
    parser.add_argument("--fp16", action="store_true", help="export MTS-Flow fp16, print parity")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    work = Path(tempfile.mkdtemp(prefix="robot-bench-"))
    train = written_and_read(
        sim.simulate_set(args.train, 0, args.seed, args.rate), work / "train.parquet"
    )
    test_cycles = sim.simulate_set(args.test_normal, args.per_type, args.seed + 1, args.rate)
    test = written_and_read(test_cycles, work / "test.parquet")
    kinds = [c.kind for c in test_cycles]
    signals = list(sim.SIGNALS)
    epochs = args.epochs
    schedule = [round(epochs * 11 / 70), round(epochs * 61 / 70)]
    flow_training = TrainingConfig(
        **{**MTSFLOW_TRAINING, "epochs": epochs, "lr_milestones": schedule, "seed": args.seed}
    )
    configs = {
        "MTS-Flow": (
            MTSFlowConfig(signals=signals, rate_hz=args.rate, n_blocks=args.blocks),
            flow_training,
        ),
        "PCA": (
            PCAConfig(signals=signals, rate_hz=args.rate, n_components=args.pca_components),
            TrainingConfig(),
        ),
        "1-NN": (NearestNeighborConfig(signals=signals, rate_hz=args.rate), TrainingConfig()),
    }
    results, seconds = {}, {}
    for name, (config, training) in configs.items():
        start = time.perf_counter()
        train_series(train, config, training, work / name)
        detector, _ = load_checkpoint(work / name)
        test_set = standardise_set(test, detector.config)
        results[name] = per_type_auroc(score_series(detector, test_set.tensors), kinds)
        seconds[name] = time.perf_counter() - start
    print(
        f"{len(train)} training cycles, {args.test_normal} normal + {args.per_type} per type "
        f"test cycles, {len(signals)} signals at {args.rate:g} Hz, MTS-Flow {epochs} epochs"
    )
    print("| Anomaly type | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for kind in [*sim.ANOMALY_TYPES, "mean"]:
        cells = " | ".join(f"{100 * results[n][kind]:.1f}" for n in results)
        print(f"| {'**mean**' if kind == 'mean' else kind} | {cells} |")
    print("| train + score seconds | " + " | ".join(f"{seconds[n]:.0f}" for n in results) + " |")
    if args.onnx:
        mts = load_checkpoint(work / "MTS-Flow")[0]
        tensors = standardise_set(test[:32], mts.config).tensors
        print(onnx_throughput(work / "MTS-Flow", tensors, work / "mtsflow.onnx"))
    if args.fp16:
        print("fp16 max score rel err:", fp16_parity(work / "MTS-Flow", work / "half.onnx"))


if __name__ == "__main__":
    main()
