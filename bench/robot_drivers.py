"""Which signals drove an anomalous cycle: ONNX occlusion at the station vs the torch input gradient.

Trains MTS-Flow on simulated normal cycles, exports it (parity gate), then for
simulated anomalies that act on one axis (added weight, friction, miscommutation)
and for collisions (a torque pulse on every axis) ranks the signals two ways:

* torch: the input gradient ``|d NLL / d x|`` summed over time (thesis eq. 8.6 per signal);
* station: :func:`flowedge.modalities.series_explain.occlusion_drops` on the ONNX graph.

It prints, per anomaly, how many of each method's top signals are among the signals
the anomaly changed most (against the same simulated cycle without it), the top-3 overlap and the Spearman correlation of the two rankings, whether
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
from typing import Any

import numpy as np
import torch
from scipy.stats import spearmanr

from flowedge.backends.onnxrt import OnnxRuntimeBackend
from flowedge.export.checked import ExportRequest, run_export
from flowedge.flows.checkpoint import load_checkpoint
from flowedge.flows.config import MTSFLOW_TRAINING, MTSFlowConfig, TrainingConfig
from flowedge.flows.data.series import standardise_set, train_series
from flowedge.flows.detectors.mtsflow import input_gradient_map
from flowedge.modalities import series_synthetic as sim
from flowedge.modalities.series_explain import TOP_SIGNALS, occlusion_drops, top_time_ranges

# (kind, level); one-axis anomalies cycle through the axes
CASES = [
    ("axis_weight", 0.5),
    ("axis_friction", 3.0),
    ("miscommutation", 0.5),
    ("collision_cardboard", 1.0),
    ("collision_foam", 1.0),
]
# a collision draws its lever arms from the generator, so no noise-identical twin exists
NO_TWIN = ("collision_cardboard", "collision_foam")


def truth(anomalous: np.ndarray, twin: np.ndarray) -> set[int]:
    """The signals the anomaly changed most: summed |difference| (standardised) to its twin."""
    change = np.abs(anomalous - twin).sum(axis=1)
    return set(np.argsort(-change)[:TOP_SIGNALS].tolist())


def peak_in_ranges(peak: int, map_profile: np.ndarray) -> bool:
    """Whether step ``peak`` lies in the station's top time ranges of the map's profile."""
    ranges = top_time_ranges(map_profile, 0.0, 1.0)  # in steps
    return any(r["start_s"] <= peak < r["end_s"] for r in ranges)


def cases(per_case: int, rate: float, seed: int) -> list[tuple[str, Any, Any]]:
    """(kind, anomalous cycle, its normal twin or None): the twin is the same cycle (same
    trajectory, friction draw and noise) without the anomaly, the ground truth of which
    signals changed. Axis anomalies run on axes 2..6 (extra mass on axis 1 changes nothing
    in the simulator: no link carries it)."""
    rng = np.random.default_rng(seed)
    out = []
    for kind, level in CASES:
        for i in range(per_case):
            anomaly = sim.Anomaly(kind, 1 + i % (sim.AXES - 1), level, rng.uniform(0.3, 0.75))
            twin_rng = np.random.default_rng()
            twin_rng.bit_generator.state = rng.bit_generator.state
            table = sim.simulate_cycle(rng, anomaly, rate, f"{kind}-{i}")
            twin = None if kind in NO_TWIN else sim.simulate_cycle(twin_rng, sim.Anomaly(), rate)
            out.append((kind, table, twin))
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
    tensors = standardise_set([t for _, t, _ in drawn], detector.config).tensors
    twins = [
        None if twin is None else standardise_set([twin], detector.config).tensors[0]
        for _, _, twin in drawn
    ]
    gradient = input_gradient_map(detector, torch.from_numpy(tensors))
    grads, profiles = gradient.sum(dim=2).numpy(), gradient.sum(dim=1).numpy()
    scores, maps = backend.infer(tensors)
    rows: dict[str, list[tuple[float, ...]]] = {}
    seconds = 0.0
    for (kind, _, _), x, twin, score, grad, profile, amap in zip(
        drawn, tensors, twins, scores, grads, profiles, maps, strict=True
    ):
        start = time.perf_counter()
        drops = occlusion_drops(
            lambda batch: backend.infer(batch)[0], x, float(score), backend.max_batch
        )
        seconds += time.perf_counter() - start
        top_grad = set(np.argsort(-grad)[:TOP_SIGNALS].tolist())
        top_occ = set(np.argsort(-drops)[:TOP_SIGNALS].tolist())
        changed = truth(x, twin) if twin is not None else None
        rows.setdefault(kind, []).append(
            (
                np.nan if changed is None else len(top_grad & changed) / TOP_SIGNALS,
                np.nan if changed is None else len(top_occ & changed) / TOP_SIGNALS,
                len(top_grad & top_occ) / TOP_SIGNALS,
                float(spearmanr(grad, drops).statistic),
                float(peak_in_ranges(int(np.argmax(profile)), amap.sum(axis=0))),
            )
        )
        if len(rows[kind]) == 1:
            names = [[signals[i] for i in sorted(group)] for group in (top_grad, top_occ)]
            print(f"{kind}: gradient top {names[0]}, occlusion top {names[1]}")
    spec = backend.card.input
    print(f"{len(signals)} signals x {spec.length} steps at {spec.rate_hz:g} Hz")
    print(
        f"| anomaly | top-{TOP_SIGNALS} in the {TOP_SIGNALS} most changed: gradient | occlusion "
        "| top-3 overlap | Spearman | gradient peak in top ranges |"
    )
    print("|---|---|---|---|---|---|")
    for kind, values in rows.items():
        means = np.mean(values, axis=0)
        cells = " | ".join("n/a" if np.isnan(v) else f"{100 * v:.0f} %" for v in means[:3])
        print(f"| {kind} (n={len(values)}) | {cells} | {means[3]:.2f} | {100 * means[4]:.0f} % |")
    print(f"occlusion: {len(drawn) / seconds:.1f} anomalous cycles/s (ONNX Runtime, 1 thread)")


if __name__ == "__main__":
    main()
