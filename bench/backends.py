"""PyTorch eager vs ONNX Runtime (CPU) per detector, plus fp16-vs-fp32 score parity.

For each detector: latency at batch 1 (median) and throughput at batch 8, both
backends in the same run with the same thread count, and the ratio ORT/eager.
Then the fp16-safe graph (fp16 up to z, fp32 reductions) and a naive full-fp16
graph are scored with true fp16 arithmetic (ONNX reference evaluator) against
PyTorch fp32. Without ``--checkpoint`` an untrained detector of the default
size (random backbone) is fitted for one pass on random inputs: latency does
not depend on the weights.

    .venv/bin/python bench/backends.py --threads 2 [--checkpoint csflow=runs/x/model]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flowedge.backends.onnxrt import OnnxRuntimeBackend  # noqa: E402
from flowedge.core.card import ModelCard  # noqa: E402
from flowedge.core.errors import ConfigError  # noqa: E402
from flowedge.export.fp16 import to_fp16, to_fp16_naive  # noqa: E402
from flowedge.export.onnx_export import export_onnx  # noqa: E402
from flowedge.export.parity import compare, fp16_faithful_infer, synthetic_samples  # noqa: E402
from flowedge.flows.config import DETECTOR_KINDS  # noqa: E402

SPEC_FROM_FILES = ("tensor_pca",)  # any-modality detectors: no default input to build one on


def series_trained(kind: str, tmp: Path) -> tuple[torch.nn.Module, ModelCard]:
    """A series detector on the simulator's signals, trained one epoch on 16 simulated
    cycles as ``flowedge train`` does (its input spec comes from the cycles)."""
    from flowedge.flows.checkpoint import load_checkpoint
    from flowedge.flows.config import TrainingConfig, detector_config_model
    from flowedge.flows.data.series import train_series
    from flowedge.modalities import series_synthetic as sim

    cycles = [c.table for c in sim.simulate_set(16, 0, seed=0, rate_hz=100.0)]
    config = detector_config_model(kind)(signals=list(sim.SIGNALS))
    train_series(cycles, config, TrainingConfig(epochs=1, batch_size=8), tmp / kind)
    return load_checkpoint(tmp / kind)


def untrained(kind: str, size: int, tmp: Path) -> tuple[torch.nn.Module, ModelCard]:
    """A default-shaped detector with a random backbone, fitted once on random inputs."""
    from dataclasses import replace

    from flowedge.flows.config import TrainingConfig, detector_config_model
    from flowedge.flows.detectors import build_detector
    from flowedge.flows.fit import fit_detector
    from flowedge.flows.train import build_card

    model = detector_config_model(kind)
    if model.input_kind == "series":
        return series_trained(kind, tmp)
    # validated from plain values, so each detector builds its own backbone config type
    # (CNF and audioflow take a PyramidBackboneConfig, not a BackboneConfig)
    values = {"backbone": {"weights": "none"}}
    if model.input_kind == "image":
        values["image_size"] = size  # audio and series keep their own input shapes
    det_cfg = model.model_validate({k: v for k, v in values.items() if k in model.model_fields})
    detector = build_detector(det_cfg)
    detector.eval()
    spec = detector.input_spec()
    x = torch.from_numpy(synthetic_samples(spec, 4, 4))
    with torch.no_grad():
        feats = detector.features(x)
    fit_detector(detector, lambda: [(feats, None)], TrainingConfig(epochs=1, batch_size=4))
    card = replace(build_card(detector, det_cfg, {}), weights_sha256="0" * 64)
    return detector, card


def timed(fn, batch: np.ndarray, repeats: int) -> list[float]:
    fn(batch)  # warm-up
    fn(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(batch)
        times.append(time.perf_counter() - start)
    return times


def bench_one(name: str, detector, card: ModelCard, threads: int, repeats: int, tmp: Path) -> dict:
    torch.set_num_threads(threads)
    fp32 = tmp / f"{name}.onnx"
    export_onnx(detector, card, fp32)
    ort = OnnxRuntimeBackend.open(fp32, "cpu", threads)
    spec = card.input
    samples = synthetic_samples(spec, 4, 4)
    b1, b8 = samples[:1], samples[:8]

    def eager(x: np.ndarray):
        with torch.inference_mode():
            return detector(torch.from_numpy(x))

    row = {"detector": name, "input": "x".join(map(str, spec.tensor_shape)), "threads": threads}
    for label, fn in (("torch", eager), ("ort", ort.infer)):
        lat = timed(fn, b1, repeats)
        thr = timed(fn, b8, max(3, repeats // 4))
        row[f"{label}_b1_ms"] = 1000 * statistics.median(lat)
        row[f"{label}_b8_img_s"] = 8 / statistics.median(thr)
    row["speedup_b1"] = row["torch_b1_ms"] / row["ort_b1_ms"]
    row["speedup_b8"] = row["ort_b8_img_s"] / row["torch_b8_img_s"]

    with torch.inference_mode():
        ref = tuple(t.float().numpy() for t in detector(torch.from_numpy(samples)))
    model = onnx.load(str(fp32))
    picks = [0, 4]  # one normal, one with a synthetic defect (reference evaluator is slow)
    for label, convert in (("fp16", to_fp16), ("naive_fp16", to_fp16_naive)):
        path = tmp / f"{name}.{label}.onnx"
        try:
            onnx.save(convert(model), str(path))
        except ConfigError:  # log-dets summed inside the flow: fp16 is refused (export/fp16.py)
            row[f"{label}_rel_err"], row[f"{label}_nonfinite"] = float("nan"), "refused"
            continue
        got = fp16_faithful_infer(path)(samples[picks])
        report = compare(tuple(r[picks] for r in ref), got, "fp16")
        row[f"{label}_rel_err"] = report.max_score_rel_err
        row[f"{label}_nonfinite"] = report.nonfinite
    return row


def fp16_cell(row: dict, label: str) -> str:
    """Relative error (non-finite of 2), or "refused" for a detector fp16 cannot keep exact."""
    if row[f"{label}_nonfinite"] == "refused":
        return "refused (log-det in the flow)"
    return f"{row[f'{label}_rel_err']:.1e} ({row[f'{label}_nonfinite']}/2)"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--detectors",
        default=",".join(k for k in DETECTOR_KINDS if k not in SPEC_FROM_FILES),
        help=f"default: all but {', '.join(SPEC_FROM_FILES)} (its input spec comes from the "
        "training files: give --checkpoint KIND=DIR)",
    )
    parser.add_argument("--size", type=int, default=384, help="input side for untrained detectors")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        metavar="KIND=DIR",
        help="use a trained checkpoint for a detector instead of an untrained one",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    checkpoints = dict(item.split("=", 1) for item in args.checkpoint)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.detectors.split(","):
            if kind in checkpoints:
                from flowedge.flows.checkpoint import load_checkpoint

                detector, card = load_checkpoint(checkpoints[kind])
            else:
                detector, card = untrained(kind, args.size, Path(tmp))
            rows.append(bench_one(kind, detector, card, args.threads, args.repeats, Path(tmp)))
            print(rows[-1], flush=True)
    print(f"\ntorch {torch.__version__}, threads {args.threads}")
    print(
        "| detector | input | torch b1 ms | ORT b1 ms | speed-up b1 | torch b8 img/s | ORT b8 img/s "
        "| speed-up b8 | fp16-safe rel err | naive fp16 rel err (non-finite) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['detector']} | {r['input']} | {r['torch_b1_ms']:.1f} | {r['ort_b1_ms']:.1f} | "
            f"{r['speedup_b1']:.2f}x | {r['torch_b8_img_s']:.1f} | {r['ort_b8_img_s']:.1f} | "
            f"{r['speedup_b8']:.2f}x | {fp16_cell(r, 'fp16')} | {fp16_cell(r, 'naive_fp16')} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
