"""Sweep CS-Flow / Gaussian settings on the MTD development split (image AUROC per setting).

Backbone features are extracted once per input size (stages of stride 16 and 32
together) and shared by all settings; each setting then fits the real detector
classes on those features and scores the test images. Meant for a GPU: the
chosen default is then trained and timed on the CPU with ``flowedge train``.

    python bench/mtd_sweep.py --data ../shared/data/mtd --device cuda
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from flowedge.core.card import ImageInput
from flowedge.flows.backbones import build_backbone
from flowedge.flows.config import BackboneConfig, TrainingConfig, detector_config_model
from flowedge.flows.data.datasets import labelled_samples, training_samples
from flowedge.flows.detectors import registered_detectors
from flowedge.flows.fit import fit_detector
from flowedge.modalities import get_modality

STAGE_OF = {16: 0, 32: 1}  # position in the shared out_indices [3, 4] of Lite0

# name: (size, stride, kind, hidden, epochs)
SETTINGS = [
    ("cs384-s32-h128-e40", 384, 32, "csflow", 128, 40),
    ("ga384-s32", 384, 32, "gaussian", 0, 1),
    ("ga384-s16", 384, 16, "gaussian", 0, 1),
    ("cs384-s32-h256-e40", 384, 32, "csflow", 256, 40),
    ("cs384-s16-h128-e20", 384, 16, "csflow", 128, 20),
    ("cs384-s32-h128-e80", 384, 32, "csflow", 128, 80),
    ("cs512-s32-h128-e40", 512, 32, "csflow", 128, 40),
]


@torch.no_grad()
def pyramid(paths: list[Path], size: int, device: str, backbone) -> list[list[torch.Tensor]]:
    """Per stage (16, 32): features at input scales 1, 1/2, 1/4, for all images."""
    spec = ImageInput(height=size, width=size, interpolation="area")
    with ThreadPoolExecutor(8) as pool:
        images = np.stack(list(pool.map(lambda p: get_modality("image").load(p, spec), paths)))
    per_stage: list[list[list[torch.Tensor]]] = [[[], [], []], [[], [], []]]
    for start in range(0, len(images), 32):
        x = torch.from_numpy(images[start : start + 32]).to(device)
        for k in range(3):
            xs = (
                x
                if k == 0
                else F.interpolate(x, scale_factor=0.5**k, mode="bilinear", align_corners=False)
            )
            for stage, f in enumerate(backbone(xs)):
                per_stage[stage][k].append(f)
    return [[torch.cat(chunks) for chunks in stage] for stage in per_stage]


def auroc(detector, feats: list[torch.Tensor], labels: np.ndarray, size: int) -> float:
    scores = []
    with torch.no_grad():
        for start in range(0, len(labels), 32):
            part = [f[start : start + 32] for f in feats]
            scores.append(detector.reduce(detector.latents(part), (size, size))[0].cpu())
    return float(roc_auc_score(labels, torch.cat(scores).numpy()))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=Path("runs/sweep.json"))
    parser.add_argument("--limit", type=int, default=0, help="smoke test: every k-th image only")
    parser.add_argument("--only", nargs="*", help="setting names to run (default: all)")
    args = parser.parse_args()
    backbone, info = build_backbone(BackboneConfig(out_indices=[3, 4]))
    backbone = backbone.to(args.device)
    train_paths = [s.path for s in training_samples(args.data)]
    test = labelled_samples(args.data)
    if args.limit:
        train_paths, test = train_paths[:: args.limit], test[:: args.limit]
    labels = np.array([s.label for s in test])
    cache: dict[int, tuple] = {}
    results = []
    for name, size, stride, kind, hidden, epochs in SETTINGS:
        if args.only and name not in args.only:
            continue
        if size not in cache:
            start = time.perf_counter()
            cache[size] = (
                pyramid(train_paths, size, args.device, backbone),
                pyramid([s.path for s in test], size, args.device, backbone),
            )
            print(f"features at {size}: {time.perf_counter() - start:.1f} s", flush=True)
        train_feats, test_feats = (c[STAGE_OF[stride]] for c in cache[size])
        torch.manual_seed(0)
        flow = {"hidden_channels": hidden} if kind == "csflow" else {}
        det = detector_config_model(kind)(
            image_size=size, backbone=BackboneConfig(out_indices=[STAGE_OF[stride] + 3]), **flow
        )
        stage_info = {
            **info,
            "channels": [info["channels"][STAGE_OF[stride]]],
            "reductions": [stride],
        }
        detector = registered_detectors()[kind](det, backbone, stage_info).to(args.device)
        n = len(train_paths)
        feats = train_feats if kind == "csflow" else train_feats[:1]

        def batches(feats=feats, n=n):
            order = torch.randperm(n)
            for i in range(0, n, 16):
                yield [f[order[i : i + 16]] for f in feats], None

        start = time.perf_counter()
        fit_detector(detector, batches, TrainingConfig(epochs=epochs))
        fit_s = time.perf_counter() - start
        detector.eval()
        result = {
            "setting": name,
            "image_auroc": round(
                auroc(detector, test_feats if kind == "csflow" else test_feats[:1], labels, size), 4
            ),
            "fit_s": round(fit_s, 1),
        }
        results.append(result)
        print(json.dumps(result), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
