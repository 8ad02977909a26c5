"""Which signals drove an anomalous cycle: ONNX occlusion at the station vs the torch input gradient.

Trains MTS-Flow on simulated normal cycles, exports it (parity gate), then for
simulated anomalies that act on one axis (added weight, friction, miscommutation)
and for collisions (which push mostly on axis 1) ranks the signals two ways:

* torch: the input gradient ``|d NLL / d x|`` summed over time (thesis eq. 8.6 per signal);
* station: :func:`flowedge.edge.signal_drivers.occlusion_drops` on the ONNX graph.

It prints, per anomaly, how often each method's top signals lie on the perturbed
axis, the top-3 overlap and the Spearman correlation of the two rankings, whether
the peak of the thesis's temporal profile (the gradient summed over signals, eq.
8.6) lies in the station's top time ranges (from the graph's map), and the
occlusion cost (anomalous cycles per second, ONNX Runtime on one thread).

    python bench/robot_drivers.py --train 100 --rate 25 --epochs 15 --per-case 6
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from flowedge.backends.onnxrt import OnnxRuntimeBackend
from flowedge.edge.cycle_report import TOP_SIGNALS, top_time_ranges
from flowedge.edge.signal_drivers import occlusion_drops
from flowedge.export.checked import ExportRequest, run_export
from flowedge.flows.checkpoint import load_checkpoint
from flowedge.flows.config import MTSFLOW_TRAINING, MTSFlowConfig, TrainingConfig
from flowedge.flows.data.series import standardise_set, train_series
from flowedge.flows.detectors.mtsflow import input_gradient_map
from flowedge.modalities import series_synthetic as sim

# (kind, level, axis the anomaly acts on (0-based)); collisions push hardest on axis 1
CASES = [
    ("axis_weight", 0.5, None),
    ("axis_friction", 3.0, None),
    ("miscommutation", 0.5, None),
    ("collision_cardboard", 1.0, 0),
    ("collision_foam", 1.0, 0),
]


def on_axis(signals: tuple[str, ...], axis: int) -> np.ndarray:
    return np.array([s.endswith(f"_{axis + 1}") for s in signals])


def peak_in_ranges(peak: int, map_profile: np.ndarray) -> bool:
    """Whether step ``peak`` lies in the station's top time ranges of the map's profile."""
    ranges = top_time_ranges(map_profile, 0.0, 1.0)  # in steps
    return any(r["start_s"] <= peak < r["end_s"] for r in ranges)


def cases(per_case: int, rate: float, seed: int) -> list[tuple[str, int, sim.SignalTable]]:
    """``per_case`` cycles per case; one-axis anomalies cycle through the six axes."""
    rng = np.random.default_rng(seed)
    out = []
    for kind, level, fixed in CASES:
        for i in range(per_case):
            axis = fixed if fixed is not None else i % sim.AXES
            anomaly = sim.Anomaly(kind, axis, level, float(rng.uniform(0.3, 0.75)))
            out.append((kind, axis, sim.simulate_cycle(rng, anomaly, rate, f"{kind}-{i}")))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=100)
    parser.add_argument("--rate", type=float, default=25.0)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--per-case", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run", type=Path, help="reuse (or keep) the trained run here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    run = args.run or Path(tempfile.mkdtemp(prefix="robot-drivers-"))
    if not (run / "card.json").exists():
        start = time.perf_counter()
        train = [c.table for c in sim.simulate_set(args.train, 0, args.seed, args.rate)]
        training = TrainingConfig(
            **{
                **MTSFLOW_TRAINING,
                "epochs": args.epochs,
                "lr_milestones": [round(args.epochs * 11 / 70), round(args.epochs * 61 / 70)],
                "seed": args.seed,
            }
        )
        config = MTSFlowConfig(signals=list(sim.SIGNALS), rate_hz=args.rate)
        train_series(train, config, training, run)
        print(f"trained in {time.perf_counter() - start:.0f} s")
    if not (run / "model.onnx").exists():
        run_export(ExportRequest(run, run / "model.onnx"))
    detector, _ = load_checkpoint(run)
    backend = OnnxRuntimeBackend.open(run / "model.onnx", device="cpu", threads=1)
    signals = backend.card.input.signals

    drawn = cases(args.per_case, args.rate, args.seed + 7)
    tensors = standardise_set([t for _, _, t in drawn], detector.config).tensors
    gradient = input_gradient_map(detector, torch.from_numpy(tensors))
    grads, profiles = gradient.sum(dim=2).numpy(), gradient.sum(dim=1).numpy()
    scores, maps = backend.infer(tensors)
    rows: dict[str, list[tuple[float, ...]]] = {}
    seconds = 0.0
    for (kind, axis, _), x, score, grad, profile, amap in zip(
        drawn, tensors, scores, grads, profiles, maps, strict=True
    ):
        start = time.perf_counter()
        drops = occlusion_drops(backend, x, float(score))
        seconds += time.perf_counter() - start
        axis_mask = on_axis(signals, axis)
        top_grad = np.argsort(-grad)[:TOP_SIGNALS]
        top_occ = np.argsort(-drops)[:TOP_SIGNALS]
        rows.setdefault(kind, []).append(
            (
                float(axis_mask[top_grad].mean()),
                float(axis_mask[top_occ].mean()),
                len(set(top_grad) & set(top_occ)) / TOP_SIGNALS,
                float(spearmanr(grad, drops).statistic),
                float(peak_in_ranges(int(np.argmax(profile)), amap.sum(axis=0))),
            )
        )
        if len(rows[kind]) == 1:
            print(
                f"{kind} axis {axis + 1}: gradient top {[signals[i] for i in top_grad]}, "
                f"occlusion top {[signals[i] for i in top_occ]}"
            )
    spec = backend.card.input
    print(f"{len(signals)} signals x {spec.length} steps at {spec.rate_hz:g} Hz")
    print(
        f"| anomaly | top-{TOP_SIGNALS} on the axis: gradient | occlusion | "
        "top-3 overlap | Spearman | gradient peak in top ranges |"
    )
    print("|---|---|---|---|---|---|")
    for kind, values in rows.items():
        means = np.mean(values, axis=0)
        cells = " | ".join(f"{100 * v:.0f} %" for v in means[:3])
        print(f"| {kind} (n={len(values)}) | {cells} | {means[3]:.2f} | {100 * means[4]:.0f} % |")
    print(f"occlusion: {len(drawn) / seconds:.1f} anomalous cycles/s (ONNX Runtime, 1 thread)")


if __name__ == "__main__":
    main()
