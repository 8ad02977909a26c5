"""How well do frozen backbone features separate MTD's defects, before any flow is trained?

Cheap detectors on globally pooled features per Lite0 stage (a Ledoit-Wolf
Gaussian, and 1-nearest-neighbour distance to the training set), for one input
size and intensity mode. A setting that fails here will not be rescued by a
flow; this is how the illumination standardisation was found (docs/results.md).
Prints one JSON line, including the ratio of each figure to the same probe with
``--intensity raw`` when ``--baseline`` is given::

    .venv/bin/python bench/mtd_feature_probe.py --image-size 384 --intensity standardize --baseline
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

from flowedge.core.card import INTENSITIES, ImageInput
from flowedge.flows.backbones import build_backbone
from flowedge.flows.config import BackboneConfig
from flowedge.flows.data.datasets import (
    LoadSummary,
    iter_batches,
    labelled_samples,
    training_samples,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mtd"
STAGES = {2: "stride8", 3: "stride16", 4: "stride32"}


def pooled_features(backbone: torch.nn.Module, samples: list, spec: ImageInput) -> list[np.ndarray]:
    """Globally average-pooled features of every stage, one array per stage."""
    chunks: list[list[torch.Tensor]] = [[] for _ in STAGES]
    for batch, _ in iter_batches(samples, spec, 16, LoadSummary("probe")):
        with torch.no_grad():
            for k, feature in enumerate(backbone(torch.from_numpy(batch))):
                chunks[k].append(feature.mean(dim=(2, 3)))
    return [torch.cat(c).numpy() for c in chunks]


def probe(data: Path, image_size: int, intensity: str) -> dict[str, float]:
    backbone, _ = build_backbone(BackboneConfig(out_indices=list(STAGES)))
    spec = ImageInput(height=image_size, width=image_size, intensity=intensity)
    test_samples = labelled_samples(data)
    train = pooled_features(backbone, training_samples(data), spec)
    test = pooled_features(backbone, test_samples, spec)
    labels = [s.label for s in test_samples]
    result = {}
    for name, tr, te in zip(STAGES.values(), train, test, strict=True):
        gaussian = LedoitWolf().fit(tr)
        result[f"gaussian_{name}"] = roc_auc_score(labels, gaussian.mahalanobis(te))
        nearest = torch.cdist(torch.from_numpy(te), torch.from_numpy(tr)).min(dim=1).values
        result[f"1nn_{name}"] = roc_auc_score(labels, nearest.numpy())
    return {k: round(float(v), 3) for k, v in result.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--image-size", type=int, default=384)
    parser.add_argument("--intensity", choices=INTENSITIES, default="standardize")
    parser.add_argument("--baseline", action="store_true", help="also run --intensity raw")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    figures = probe(args.data, args.image_size, args.intensity)
    out: dict = {"image_size": args.image_size, "intensity": args.intensity, "auroc": figures}
    if args.baseline:
        raw = probe(args.data, args.image_size, "raw")
        out["raw_auroc"] = raw
        out["ratio_to_raw"] = {k: round(figures[k] / raw[k], 3) for k in figures}
    out["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
