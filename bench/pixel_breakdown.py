"""Where a checkpoint's pooled pixel AUROC goes: per defect type, levels vs ranking.

    .venv/bin/python bench/pixel_breakdown.py CHECKPOINT ../shared/data/mtd [--threads 2]

The pooled pixel AUROC of ``flowedge eval`` mixes two things: whether defective images'
maps sit above good images' maps (levels), and whether, inside one defective image, the
defect's pixels outrank the rest (localisation proper). Per defect type this prints the
type's share of all defect pixels (a type with most of them decides the pooled figure),
its pixel AUROC with the good images (as ``flowedge eval``), over its own images only,
and the median of its per-image pixel AUROC (images whose mask has both kinds of pixel).
Diagnosis only: the labels are the test set's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from flowedge.flows.checkpoint import load_checkpoint
from flowedge.flows.data.datasets import LoadSummary, labelled_samples, load_mask
from flowedge.flows.evaluate import score_samples
from flowedge.flows.metrics import pixel_auroc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("data", type=Path, help="MVTec-like root with test/ and ground_truth/")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    detector, card = load_checkpoint(args.checkpoint)
    samples = labelled_samples(args.data, card.input.kind)
    kept, _, maps = score_samples(
        detector, samples, card.input, LoadSummary(root=str(args.data)), 16, "cpu", False
    )
    masks = [load_mask(sample, card.input) for sample in kept]
    usable = [i for i, mask in enumerate(masks) if mask is not None]
    good = [i for i in usable if kept[i].label == 0]
    defects = sorted({kept[i].defect for i in usable if kept[i].label == 1})
    by_defect = {
        d: [i for i in usable if kept[i].defect == d and kept[i].label == 1] for d in defects
    }
    n_positive = sum(int(masks[i].sum()) for i in usable)

    def pooled(indices: list[int]) -> float | None:
        return pixel_auroc([masks[i] for i in indices], [maps[i] for i in indices])

    print(
        f"{card.model_id} on {args.data}: pooled pixel AUROC {pooled(usable):.3f}, "
        f"defective images only {pooled([i for d in defects for i in by_defect[d]]):.3f}"
    )
    print(
        f"{'defect':<10} {'images':>6} {'px share':>8} {'with good':>9} {'own only':>8} "
        f"{'per-image median':>16}"
    )
    for defect in defects:
        own = by_defect[defect]
        per_image = [
            pixel_auroc([masks[i]], [maps[i]]) for i in own if 0 < masks[i].sum() < masks[i].size
        ]
        share = sum(int(masks[i].sum()) for i in own) / n_positive
        within = f"{np.median(per_image):.3f}" if per_image else "n/a"
        print(
            f"{defect:<10} {len(own):>6} {share:>8.3f} {pooled(good + own):>9.3f} "
            f"{pooled(own) or float('nan'):>8.3f} {within:>16}"
        )


if __name__ == "__main__":
    main()
