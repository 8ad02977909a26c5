"""Accuracy and CPU training time of a detector on an MVTec-layout split (default: MTD).

Backbone features are extracted once per (backbone, stage, size, scales) and
cached under --cache-dir, so flow settings can be swept cheaply; the reported
train time is feature extraction of the training images plus the fit, i.e.
what ``flowedge train`` spends. Example::

    .venv/bin/python bench/mtd_accuracy.py --detector csflow --epochs 20
    .venv/bin/python bench/mtd_accuracy.py --detector gaussian --out-index 2 3 4
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from flowedge.core.card import INTENSITIES
from flowedge.flows.config import (
    DETECTOR_KINDS,
    BackboneConfig,
    CSFlowConfig,
    ImageDetectorConfig,
    TrainingConfig,
    detector_config_model,
)
from flowedge.flows.data.datasets import (
    LoadSummary,
    iter_batches,
    labelled_samples,
    load_mask,
    training_samples,
)
from flowedge.flows.detectors import build_detector
from flowedge.flows.detectors.base import Detector, Features
from flowedge.flows.fit import fit_detector
from flowedge.flows.metrics import detection_report

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mtd"


def extract(detector: Detector, samples: list, batch_size: int) -> tuple[Features, float]:
    """Backbone features of all samples, concatenated per feature tensor, and the seconds it took."""
    start = time.perf_counter()
    chunks: list[Features] = []
    for batch, _ in iter_batches(samples, detector.input_spec(), batch_size, LoadSummary("bench")):
        chunks.append(detector.features(torch.from_numpy(batch)))
    feats = [torch.cat([c[k] for c in chunks]) for k in range(len(chunks[0]))]
    return feats, time.perf_counter() - start


def cached_features(detector: Detector, det: ImageDetectorConfig, args: argparse.Namespace) -> dict:
    key = f"{det.backbone.name}_i{'-'.join(map(str, det.backbone.out_indices))}_s{det.image_size}"
    key += f"_{det.intensity}"
    key += f"_n{getattr(det, 'n_scales', 1)}_{det.interpolation}_pool"  # area pyramid
    path = Path(args.cache_dir) / f"{key}.pt"
    if path.is_file():
        return torch.load(path, weights_only=False)
    multi = Path(args.cache_dir) / f"{key.replace('_n1_', f'_n{args.n_scales}_')}.pt"
    if det.kind == "gaussian" and multi.is_file():  # CS-Flow's top scale: the same features
        data = torch.load(multi, weights_only=False)
        return {**data, "train": data["train"][:1], "test": data["test"][:1]}
    train, train_s = extract(detector, training_samples(args.data), args.batch_size)
    test_samples = labelled_samples(args.data)
    test, _ = extract(detector, test_samples, args.batch_size)
    data = {
        "train": train,
        "train_s": train_s,
        "n_train": len(train[0]),
        "test": test,
        "test_samples": test_samples,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, path)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--detector", choices=DETECTOR_KINDS, default="csflow")
    defaults_det, defaults_train = CSFlowConfig(), TrainingConfig()
    parser.add_argument("--image-size", type=int, default=defaults_det.image_size)
    parser.add_argument(
        "--out-index", type=int, nargs="+", default=defaults_det.backbone.out_indices
    )
    parser.add_argument("--intensity", choices=INTENSITIES, default=defaults_det.intensity)
    parser.add_argument("--n-scales", type=int, default=defaults_det.n_scales)
    parser.add_argument("--hidden", type=int, default=defaults_det.hidden_channels)
    parser.add_argument("--epochs", type=int, default=defaults_train.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults_train.batch_size)
    parser.add_argument("--lr", type=float, default=defaults_train.lr)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache-dir", default="/tmp/flowedge_bench_features")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    kernels = defaults_det.kernel_sizes
    shared = dict(
        backbone=BackboneConfig(out_indices=args.out_index),
        image_size=args.image_size,
        intensity=args.intensity,
    )
    flow = dict(
        n_scales=args.n_scales,
        hidden_channels=args.hidden,
        n_blocks=len(kernels),
        kernel_sizes=kernels,
    )
    det = detector_config_model(args.detector)(
        **shared, **(flow if args.detector == "csflow" else {})
    )
    train_cfg = TrainingConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed
    )
    detector = build_detector(det)
    data = cached_features(detector, det, args)

    generator = torch.Generator().manual_seed(args.seed)

    def batches():
        order = torch.randperm(data["n_train"], generator=generator)
        for start in range(0, len(order), args.batch_size):
            index = order[start : start + args.batch_size]
            yield [f[index] for f in data["train"]], None

    losses: list[float] = []
    start = time.perf_counter()

    def progress(info: dict) -> None:
        if losses and info["epoch"] != epoch_of[-1]:
            print(
                f"epoch {epoch_of[-1]}: loss {losses[-1]:.4f} at {time.perf_counter() - start:.0f} s",
                file=sys.stderr,
                flush=True,
            )
        losses.append(info["loss"])
        epoch_of.append(info["epoch"])

    epoch_of: list[int] = []
    summary = fit_detector(detector, batches, train_cfg, progress)
    fit_s = time.perf_counter() - start

    detector.eval()
    scores, maps = [], []
    with torch.no_grad():
        for begin in range(0, len(data["test"][0]), 32):
            score, amap = detector.reduce(
                detector.latents([f[begin : begin + 32] for f in data["test"]]),
                detector.map_shape(),
            )
            scores.append(score)
            maps.extend(m.numpy() for m in amap)
    samples = data["test_samples"]
    spec = detector.input_spec()
    report = detection_report(
        [s.label for s in samples],
        [s.defect for s in samples],
        torch.cat(scores).numpy(),
        [load_mask(s, spec) for s in samples],
        maps,
    )
    overall = report["overall"]
    result = {
        "config": {
            "detector": args.detector,
            "image_size": args.image_size,
            "intensity": args.intensity,
            "out_indices": args.out_index,
            "n_scales": args.n_scales,
            "hidden": args.hidden,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "seed": args.seed,
        },
        "image_auroc": overall["image_auroc"],
        "pixel_auroc": overall["pixel_auroc"],
        "per_defect": {k: v["image_auroc"] for k, v in report["per_defect"].items()},
        "feature_s": round(data["train_s"], 1),
        "fit_s": round(fit_s, 1),
        "train_s": round(data["train_s"] + fit_s, 1),
        "final_loss": summary["final_loss"],
        "loss_first_last_epoch": [
            float(np.mean(losses[: max(1, len(losses) // max(1, args.epochs))])),
            float(np.mean(losses[-max(1, len(losses) // max(1, args.epochs)) :])),
        ],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
