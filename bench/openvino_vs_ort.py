"""OpenVINO vs ONNX Runtime on this CPU, fp32 and INT8, with AUROC and the distance to peak.

For each model (CS-Flow and DifferNet on MTD, read in place; audioflow on generated
audio; MTS-Flow on simulated robot cycles) a small detector is fitted for a few epochs
on normal training samples, exported to ONNX (fp32), converted to an OpenVINO IR, and
quantised to INT8 twice (ONNX Runtime static QDQ, NNCF for OpenVINO), both calibrated on
normal training samples only, both keeping the reduction nodes fp32 (export/quantize.py).
Then per backend, in one run and with the same thread count:

* latency at batch 1 (p50, p99 over ``--repeats`` calls) and samples/s at ``--batch``
  (and per core: / threads);
* the AUROC on a labelled validation split (MTD test: good vs defects; generated data:
  synthetic normal vs anomalous), and the INT8 gate verdict (export/int8_gate.py);
* GFLOP/s achieved = 2 x MACs per sample x samples/s, next to the peak GFLOP/s of a
  large float32 numpy matmul (BLAS) measured in the same run, just before each model's
  backends (the shared machine's load changes between models).

ONNX Runtime fp32 is the baseline; every ratio is to it. The load average (``uptime``)
is printed with every model's figures::

    .venv/bin/python bench/openvino_vs_ort.py --threads 2 --repeats 30 --batch 8
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flowedge.backends import open_backend  # noqa: E402
from flowedge.core.metrics import auroc  # noqa: E402
from flowedge.export import openvino_ir  # noqa: E402
from flowedge.export.int8_gate import int8_report  # noqa: E402
from flowedge.export.onnx_export import export_onnx  # noqa: E402
from flowedge.export.parity import spread_samples  # noqa: E402
from flowedge.export.quantize import quantize_onnx, quantize_openvino  # noqa: E402
from flowedge.flows.config import TrainingConfig, detector_config_model  # noqa: E402
from flowedge.flows.data.datasets import labelled_samples, training_samples  # noqa: E402
from flowedge.flows.detectors import build_detector  # noqa: E402
from flowedge.flows.fit import fit_detector  # noqa: E402
from flowedge.flows.train import build_card  # noqa: E402
from flowedge.modalities import get_modality  # noqa: E402

MTD = Path(__file__).resolve().parents[2] / "shared" / "data" / "mtd"
BACKENDS = (  # label, model file key, backend name
    ("ORT fp32", "onnx", "onnxruntime"),
    ("OV fp32", "xml", "openvino"),
    ("OV INT8", "xml_int8", "openvino"),
    ("ORT INT8", "onnx_int8", "onnxruntime"),
)
BACKBONE_ONLY = (  # --backbone-only: the flow fp32 too, only the backbone quantised
    ("OV INT8 backbone", "xml_bb", "openvino"),
    ("ORT INT8 backbone", "onnx_bb", "onnxruntime"),
)


def outside_backbone(name: str) -> bool:
    """Nodes of the flow and the reductions (torch's module scope names the backbone's)."""
    return not name.startswith("/backbone")


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def peak_gflops(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a float32 n x n matmul through numpy's BLAS (best of ``repeats``)."""
    a, b = (np.random.default_rng(i).random((n, n), dtype=np.float32) for i in range(2))
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def macs_per_sample(xml: Path, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of the convolutions and matmuls at batch 1 (OpenVINO's shapes)."""
    model = openvino_ir.read(xml)
    model.reshape([1, *input_shape])
    total = 0
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind not in ("Convolution", "GroupConvolution", "MatMul"):
            continue
        out = int(np.prod(list(op.get_output_shape(0))))
        weights = list(op.input(1).get_partial_shape().to_shape())
        if kind == "Convolution":  # [Cout, Cin, k...]
            total += out * int(np.prod(weights[1:]))
        elif kind == "GroupConvolution":  # [G, Cout/G, Cin/G, k...]
            total += out * int(np.prod(weights[2:]))
        else:
            a = list(op.input(0).get_partial_shape().to_shape())
            total += out * int(a[-2] if op.get_transpose_a() else a[-1])
    return total


def image_data(card, n_train: int, n_val: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MTD: normal training images, and a labelled test split spread over its folders."""
    train = spread_samples([s.path for s in training_samples(MTD, "image")], card, n_train)
    test = labelled_samples(MTD, "image")
    picks = test[:: max(1, len(test) // n_val)][:n_val]
    val = spread_samples([s.path for s in picks], card, len(picks))
    labels = np.array([s.label for s in picks])
    return train, val, labels


def generated_data(card, n_train: int, n_val: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Audio and robot cycles: the modality's generator, normal then anomalous."""
    modality = get_modality(card.input.kind)
    train = modality.synthetic_batch(card.input, n_train, 0, seed=1)
    half = n_val // 2
    val = modality.synthetic_batch(card.input, half, n_val - half, seed=2)
    return train, val, np.array([0] * half + [1] * (n_val - half))


def fitted(kind: str, overrides: dict, data, args, work: Path):
    """A detector of ``kind`` fitted for a few epochs on features of normal samples."""
    config = detector_config_model(kind).model_validate(overrides)
    detector = build_detector(config)
    card = build_card(detector, config, {})
    train, val, labels = data(card, args.train, args.val)
    detector.eval()
    with torch.no_grad():
        feats = [detector.features(torch.from_numpy(b)) for b in np.array_split(train, 4)]
    fit_detector(detector, lambda: [(f, None) for f in feats], TrainingConfig(epochs=args.epochs))
    detector.eval()
    card = replace(build_card(detector, config, {}), weights_sha256="0" * 64)
    return detector, card, train, val, labels


def fitted_robot(args, work: Path):
    """MTS-Flow trained as ``flowedge train`` does (standardisation from the cycles)."""
    from flowedge.flows.checkpoint import load_checkpoint
    from flowedge.flows.config import MTSFLOW_TRAINING, MTSFlowConfig
    from flowedge.flows.data.series import train_series
    from flowedge.modalities import series_synthetic as sim

    cycles = [c.table for c in sim.simulate_set(args.train, 0, seed=0, rate_hz=100.0)]
    training = TrainingConfig(**{**MTSFLOW_TRAINING, "epochs": args.epochs})
    train_series(cycles, MTSFlowConfig(signals=list(sim.SIGNALS)), training, work / "ckpt")
    detector, card = load_checkpoint(work / "ckpt")
    train, val, labels = generated_data(card, args.train, args.val)
    return detector, card, train, val, labels


MODELS = {  # name: how its detector is fitted, and on what
    "csflow": partial(fitted, "csflow", {"image_size": 256}, image_data),
    "differnet": partial(fitted, "differnet", {"image_size": 256}, image_data),
    "audioflow": partial(fitted, "audioflow", {}, generated_data),
    "mtsflow": fitted_robot,
}


def models(detector, card, train: np.ndarray, work: Path, args) -> dict[str, Path]:
    paths = {
        "onnx": "model.onnx",
        "xml": "model.xml",
        "onnx_int8": "int8.onnx",
        "xml_int8": "int8.xml",
    }
    paths = {key: work / name for key, name in paths.items()}
    export_onnx(detector, card, paths["onnx"])
    openvino_ir.save(openvino_ir.convert(paths["onnx"]), paths["xml"])
    calib = train[:: max(1, len(train) // args.calib)][: args.calib]
    quantize_onnx(paths["onnx"], paths["onnx_int8"], calib)
    quantized, _ = quantize_openvino(openvino_ir.read(paths["xml"]), calib, str(paths["xml"]))
    openvino_ir.save(quantized, paths["xml_int8"])
    graph = onnx.load(str(paths["onnx"])).graph
    if args.backbone_only and any(not outside_backbone(n.name) for n in graph.node):
        paths["onnx_bb"], paths["xml_bb"] = work / "bb.onnx", work / "bb.xml"
        quantize_onnx(paths["onnx"], paths["onnx_bb"], calib, outside_backbone)
        model = openvino_ir.read(paths["xml"])
        quantized, _ = quantize_openvino(model, calib, str(paths["xml"]), outside_backbone)
        openvino_ir.save(quantized, paths["xml_bb"])
    return paths


def measure(backend, val: np.ndarray, labels: np.ndarray, args) -> dict:
    scores = np.concatenate(
        [backend.infer(b)[0] for b in np.array_split(val, max(1, len(val) // 8))]
    )
    one = val[:1]
    batch = np.concatenate([val] * (args.batch // len(val) + 1))[: args.batch]
    lat = [_timed(lambda: backend.infer(one)) for _ in range(args.repeats + 2)][2:]
    thr = [_timed(lambda: backend.infer(batch)) for _ in range(max(3, args.repeats // 4) + 1)][1:]
    return {
        "scores": scores,
        "auroc": auroc(labels, scores),
        "p50_ms": 1000 * statistics.median(lat),
        "p99_ms": 1000 * float(np.percentile(lat, 99)),
        "samples_s": args.batch / statistics.median(thr),
    }


def bench_model(name: str, args, work: Path) -> list[dict]:
    detector, card, train, val, labels = MODELS[name](args, work / name)
    paths = models(detector, card, train, work / name, args)
    macs = macs_per_sample(paths["xml"], card.input.tensor_shape)
    peak = peak_gflops(args.threads)  # under the load this model's backends run at
    print(f"{name}: numpy float32 matmul peak {peak:.1f} GFLOP/s (load {load_average()})")
    rows, base = [], None
    for label, key, backend_name in BACKENDS + (BACKBONE_ONLY if "xml_bb" in paths else ()):
        backend = open_backend(paths[key], backend_name, "cpu", args.threads)
        row = {"model": name, "backend": label, "macs": macs, "peak": peak}
        row.update(measure(backend, val, labels, args))
        backend.close()
        base = base or row
        row["speedup_b1"] = base["p50_ms"] / row["p50_ms"]
        row["speedup_thr"] = row["samples_s"] / base["samples_s"]
        row["per_core"] = row["samples_s"] / args.threads
        row["gflops"] = 2 * macs * row["samples_s"] / 1e9
        row["of_peak"] = row["gflops"] / peak
        if "INT8" in label:
            fp32 = next(r for r in rows if r["backend"] == f"{label.split()[0]} fp32")
            report = int8_report(labels, fp32["scores"], row["scores"], None)
            row["gate"] = f"{'pass' if report.passed else 'REFUSED'} ({report.flips} flips)"
        row["load"] = load_average()
        rows.append(row)
        print({k: v for k, v in row.items() if k != "scores"}, flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8, help="the throughput batch")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train", type=int, default=48, help="normal training samples")
    parser.add_argument("--calib", type=int, default=32, help="of them, for the quantisers")
    parser.add_argument("--val", type=int, default=48, help="labelled validation samples")
    parser.add_argument(
        "--backbone-only",
        action="store_true",
        help="also INT8 models whose flow stays fp32 (only the backbone quantised)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("nncf").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    print(f"load average before: {load_average()} on {os.cpu_count()} CPUs")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            (Path(tmp) / name).mkdir()
            rows += bench_model(name, args, Path(tmp))
    print(f"\nthreads {args.threads}, throughput batch {args.batch}")
    print(
        "| model | MMAC/sample | backend | b1 p50 ms | b1 p99 ms | vs ORT fp32 | samples/s "
        "| per core | vs ORT fp32 | GFLOP/s | peak | of peak | AUROC | INT8 gate | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['macs'] / 1e6:.0f} | {r['backend']} | {r['p50_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['speedup_b1']:.2f}x | {r['samples_s']:.1f} | "
            f"{r['per_core']:.1f} | {r['speedup_thr']:.2f}x | {r['gflops']:.1f} | {r['peak']:.0f} | "
            f"{100 * r['of_peak']:.0f} % | {r['auroc']:.4f} | {r.get('gate', '-')} | {r['load']} |"
        )
    print(f"load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
