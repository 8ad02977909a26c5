"""CS-Flow on a CUDA GPU with PyTorch: fp32 vs fp16 (autocast, + CUDA graphs), score parity.

fp16 here follows the export design: backbone and flow (up to z) under
autocast fp16, the reduction (squares and sums) in fp32. A "naive" line sums
z**2 in fp16 to show the overflow the design avoids. Latency is the median of
``--repeats`` synchronised calls at batch 1; throughput at batch 8.

    python3 bench/gpu_torch_fp16.py --out result.json   # on the GPU machine
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flowedge.export.parity import compare, synthetic_samples  # noqa: E402
from flowedge.flows.config import (  # noqa: E402
    DETECTOR_KINDS,
    BackboneConfig,
    TrainingConfig,
    default_detector_config,
    detector_config_model,
)
from flowedge.flows.detectors import build_detector  # noqa: E402
from flowedge.flows.fit import fit_detector  # noqa: E402

Forward = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def make_detector(kind: str, size: int, device: torch.device, fit_epochs: int):
    det_cfg = detector_config_model(kind)(backbone=BackboneConfig(weights="none"), image_size=size)
    detector = build_detector(det_cfg).to(device)
    spec = detector.input_spec()
    normal = torch.from_numpy(synthetic_samples(spec, 16, 0)).to(device)
    detector.eval()
    with torch.no_grad():
        feats = list(detector.features(normal))
    # a short fit so z is roughly N(0, 1)
    fit_detector(detector, lambda: [(feats, None)], TrainingConfig(epochs=fit_epochs, batch_size=8))
    return detector.eval(), spec


def load_test_set(root: Path, spec) -> tuple[np.ndarray, np.ndarray]:
    """MVTec-layout test/ folder: (preprocessed images, labels 0 = good, 1 = defect)."""
    from flowedge.modalities import get_modality

    modality = get_modality(spec.kind)
    files = modality.list_files(root / "test")
    labels = np.array([0 if p.parent.name == "good" else 1 for p in files])
    return np.stack([modality.load(p, spec) for p in files]), labels


def score_all(fn: Forward, images: np.ndarray, device: torch.device, batch: int = 16) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            out.append(
                fn(torch.from_numpy(images[i : i + batch]).to(device))[0].float().cpu().numpy()
            )
    return np.concatenate(out)


def test_set_report(fns: dict[str, Forward], root: Path, spec, device: torch.device) -> dict:
    """AUROC per variant and fp16-vs-fp32 score error on a labelled test set."""
    from sklearn.metrics import roc_auc_score

    images, labels = load_test_set(root, spec)
    scores = {name: score_all(fn, images, device) for name, fn in fns.items()}
    ref = scores["fp32"].astype(np.float64)
    report = {"images": len(labels), "defective": int(labels.sum())}
    for name, s in scores.items():
        finite = np.isfinite(s)
        rel = np.abs(s - ref) / np.maximum(np.abs(ref), 1e-6)
        report[name] = {
            "auroc": float(roc_auc_score(labels, np.nan_to_num(s, posinf=1e30))),
            "max_score_rel_err": float(np.max(np.where(finite, rel, np.inf))),
            "median_score_rel_err": float(np.median(np.where(finite, rel, np.inf))),
            "nonfinite": int((~finite).sum()),
        }
    return report


def forwards(detector, device: torch.device) -> dict[str, Forward]:
    def fp32(x):
        return detector(x)

    def fp16_safe(x):
        with torch.autocast(device.type, dtype=torch.float16):
            z = detector.latents(detector.features(x))
        with torch.autocast(device.type, enabled=False):
            return detector.reduce([t.float() for t in z], detector.map_shape())

    def fp16_naive_sum(x):
        # CS-Flow's mean of z**2/2, but with the sum of squares held in an fp16 tensor
        with torch.autocast(device.type, dtype=torch.float16):
            z = detector.latents(detector.features(x))
        total = sum((t.half() ** 2).flatten(1).sum(1, dtype=torch.float16) for t in z)
        count = sum(t[0].numel() for t in z)
        score = total.float() / count * 0.5
        return score, torch.zeros(x.shape[0], *x.shape[-2:], device=x.device)

    return {"fp32": fp32, "fp16_safe": fp16_safe, "fp16_naive_sum": fp16_naive_sum}


def cuda_graph(fn: Forward, example: torch.Tensor) -> Forward:
    """Capture ``fn`` at the example's shape; replay copies the input into the static buffer."""
    static_x = example.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.inference_mode():
        for _ in range(3):
            fn(static_x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.inference_mode():
        static_out = fn(static_x)

    def replay(x: torch.Tensor):
        static_x.copy_(x)
        graph.replay()
        return static_out

    return replay


def timed(fn: Forward, x: torch.Tensor, repeats: int, device: torch.device) -> float:
    with torch.inference_mode():
        for _ in range(5):
            fn(x)
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--detector", choices=DETECTOR_KINDS, default=DETECTOR_KINDS[0])
    parser.add_argument("--checkpoint", type=Path, help="trained checkpoint (default: untrained)")
    parser.add_argument("--data", type=Path, help="MVTec-layout root: AUROC fp32 vs fp16 on test/")
    parser.add_argument("--size", type=int, default=None, help="input side (default: the config's)")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--fit-epochs", type=int, default=3)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)
    size = args.size or default_detector_config().image_size
    torch.backends.cudnn.benchmark = True
    if args.checkpoint:
        from flowedge.flows.checkpoint import load_checkpoint

        detector, card = load_checkpoint(args.checkpoint, device=str(device))
        spec = card.input
    else:
        detector, spec = make_detector(args.detector, size, device, args.fit_epochs)
    samples = torch.from_numpy(synthetic_samples(spec, 8, 8)).to(device)
    fns = forwards(detector, device)
    result = {
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "detector": args.detector,
        "input": f"{spec.height}x{spec.width}",
        "latency_ms_b1": {},
        "throughput_img_s_b8": {},
    }
    with torch.inference_mode():
        ref = tuple(t.float().cpu().numpy() for t in fns["fp32"](samples))
        z = detector.latents(detector.features(samples[:1]))
    result["latent_shapes"] = [list(t.shape[1:]) for t in z]
    result["latent_values"] = int(sum(t[0].numel() for t in z))
    for name, fn in fns.items():
        with torch.inference_mode():
            got = tuple(t.float().cpu().numpy() for t in fn(samples))
        report = compare(ref, got if name != "fp16_naive_sum" else (got[0], ref[1]), "fp16")
        result[f"parity_{name}"] = {
            "max_score_rel_err": report.max_score_rel_err,
            "flips_at_quantiles": len(report.flips),
            "nonfinite": report.nonfinite,
        }
    variants = {"fp32": fns["fp32"], "fp16_safe": fns["fp16_safe"]}
    for name, fn in list(variants.items()):
        for batch in (1, 8):
            x = samples[:batch]
            runs = {name: fn}
            if device.type == "cuda":
                runs[f"{name}+cudagraph"] = cuda_graph(fn, x)
            for label, run in runs.items():
                t = timed(
                    run, x, args.repeats if batch == 1 else max(20, args.repeats // 4), device
                )
                key = "latency_ms_b1" if batch == 1 else "throughput_img_s_b8"
                result[key][label] = 1000 * t if batch == 1 else batch / t
    if device.type == "cuda":
        graphed = cuda_graph(fns["fp16_safe"], samples[:8])
        with torch.inference_mode():
            got = tuple(t.float().cpu().numpy() for t in graphed(samples[:8]))
        result["parity_fp16_safe_cudagraph_b8"] = compare(
            tuple(r[:8] for r in ref), got, "fp16"
        ).max_score_rel_err
    if args.data:
        result["test_set"] = test_set_report(fns, args.data, spec, device)
    base = result["latency_ms_b1"]["fp32"]
    result["speedup_b1_vs_fp32_eager"] = {k: base / v for k, v in result["latency_ms_b1"].items()}
    text = json.dumps(result, indent=2, default=float)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    sys.exit(main())
