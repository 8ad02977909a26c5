"""Can a local signal find MTD's "uneven" regions inside their own image?

    .venv/bin/python bench/mtd_uneven_probe.py ../shared/data/mtd [--every 8] [--size 256]

"uneven" holds about 71 % of all defect pixels of the MTD development split, so it decides
the pooled pixel AUROC (bench/pixel_breakdown.py). This asks whether its labelled
regions differ *locally* from the rest of their own tile, with four signals on a 32 x 32
grid, and prints each signal's per-image pixel AUROC (median and mean over the uneven
images whose mask has both kinds of pixel; 0.5 is chance):

* distance to the nearest training patch (PatchCore-like local density; Lite0 stride 8
  and 16 features, 3 x 3 averaged, standardised on every ``--every``-th training image);
* distance of each patch to its own tile's median feature (the tile as its own reference);
* block brightness and block standard deviation of the grey image (higher = defect).

Diagnosis only: the labels are the test set's; nothing here is trained on them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from flowedge.core.card import ImageInput
from flowedge.core.metrics import auroc
from flowedge.flows.backbones import build_backbone
from flowedge.flows.config import BackboneConfig
from flowedge.flows.data.datasets import labelled_samples, load_mask, training_samples
from flowedge.modalities.image import read_image, to_tensor

GRID = 32


def patch_features(backbone: torch.nn.Module, path: Path, spec: ImageInput) -> np.ndarray:
    """[GRID * GRID, C]: stride-8 and stride-16 features, 3 x 3 averaged, on one grid."""
    x = torch.from_numpy(to_tensor(read_image(path), spec, str(path)))[None]
    with torch.no_grad():
        maps = [F.avg_pool2d(m, 3, 1, 1) for m in backbone(x)]
    maps = [F.interpolate(m, size=(GRID, GRID), mode="bilinear") for m in maps]
    return torch.cat(maps, 1)[0].flatten(1).T.numpy()


def block_stats(path: Path, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of the grey image in GRID x GRID blocks."""
    grey = read_image(path).astype(np.float32)
    if grey.ndim == 3:
        grey = grey.mean(axis=2)
    grey = cv2.resize(grey, (side, side), interpolation=cv2.INTER_AREA)
    cell = side // GRID
    blocks = grey.reshape(GRID, cell, GRID, cell).transpose(0, 2, 1, 3).reshape(GRID, GRID, -1)
    return blocks.mean(-1).ravel(), blocks.std(-1).ravel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="MTD root (train/good, test/uneven, ground_truth)")
    parser.add_argument("--every", type=int, default=8, help="training images used: every n-th")
    parser.add_argument("--size", type=int, default=256, help="input side in px")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    spec = ImageInput(height=args.size, width=args.size, intensity="standardize")
    mask_spec = ImageInput(height=GRID, width=GRID)
    backbone, _ = build_backbone(BackboneConfig(out_indices=[2, 3]))
    backbone.eval()
    train = training_samples(args.data, "image")[:: args.every]
    bank = np.concatenate([patch_features(backbone, s.path, spec) for s in train])
    mean, std = bank.mean(0), bank.std(0) + 1e-6
    bank_t = torch.from_numpy((bank - mean) / std)

    signals: dict[str, list[float]] = {
        "nearest training patch": [],
        "distance to own tile's median": [],
        "block brightness": [],
        "block standard deviation": [],
    }
    uneven = [s for s in labelled_samples(args.data, "image") if s.defect == "uneven"]
    for sample in uneven:
        mask = load_mask(sample, mask_spec)
        if mask is None or mask.all() or not mask.any():
            continue
        truth = mask.ravel()
        feats = (patch_features(backbone, sample.path, spec) - mean) / std
        nearest = torch.cdist(torch.from_numpy(feats), bank_t).min(1).values.numpy()
        own = np.linalg.norm(feats - np.median(feats, axis=0), axis=1)
        brightness, spread = block_stats(sample.path, args.size)
        for name, values in zip(signals, (nearest, own, brightness, spread), strict=True):
            signals[name].append(auroc(truth, values))

    n = len(signals["nearest training patch"])
    print(
        f"MTD uneven, per-image pixel AUROC on a {GRID} x {GRID} grid, {n} images "
        f"({len(train)} training images in the patch bank):"
    )
    for name, values in signals.items():
        print(f"  {name:<31} median {np.median(values):.3f}   mean {np.mean(values):.3f}")


if __name__ == "__main__":
    main()
