"""CS-Flow's learning curve on MTD: image AUROC every few epochs, for several score reductions.

One training run (the real training loop on cached features, see
bench/mtd_accuracy.py) is evaluated after every ``--every`` epochs. Besides the
paper's score (mean of z**2 over all scales, ``mean_all``) it reports reductions
a user might expect to be better for small defects, so the choice is measured,
not guessed. This is how the default learning rate and epoch count were chosen::

    .venv/bin/python bench/csflow_learning_curve.py --lr 2e-4 --epochs 32 --every 8 --threads 1
    .venv/bin/python bench/csflow_learning_curve.py --lr 1e-3 --epochs 32 --every 8 --threads 1

Prints one JSON line per evaluation; ``ratio_to_paper_lr`` compares with the
same run at the paper's 2e-4 when ``--baseline`` is given (twice the time).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from mtd_accuracy import DATA, cached_features
from sklearn.metrics import roc_auc_score

from flowedge.flows.config import CSFlowConfig, TrainingConfig
from flowedge.flows.detectors import build_detector
from flowedge.flows.detectors.base import Detector
from flowedge.flows.fit import fit_detector

PAPER_LR = 2e-4


def reductions(detector: Detector, latents: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Image scores: the detector's own (the paper's mean over all scales), and alternatives
    computed from its top-scale map, taken at the latent's resolution (no upsampling)."""
    score, amap = detector.reduce(latents, tuple(latents[0].shape[-2:]))
    top = amap.flatten(1)
    return {
        "mean_all": score,
        "mean_top_scale": top.mean(dim=1),
        "max_top_scale": top.max(dim=1).values,
        "top10pct_top_scale": top.topk(max(1, top.shape[1] // 10), dim=1).values.mean(dim=1),
    }


def learning_curve(args: argparse.Namespace, lr: float) -> list[dict]:
    torch.manual_seed(args.seed)
    det = CSFlowConfig(hidden_channels=args.hidden, image_size=args.image_size)
    detector = build_detector(det)
    data = cached_features(detector, det, args)
    labels = [s.label for s in data["test_samples"]]
    generator = torch.Generator().manual_seed(args.seed)
    rows: list[dict] = []
    start = time.perf_counter()

    def evaluate(epoch: int) -> None:
        with torch.no_grad():
            chunks = [
                detector.latents([f[b : b + 32] for f in data["test"]])
                for b in range(0, len(labels), 32)
            ]
        latents = [torch.cat([c[k] for c in chunks]) for k in range(len(chunks[0]))]
        aurocs = {
            k: round(float(roc_auc_score(labels, v.numpy())), 4)
            for k, v in reductions(detector, latents).items()
        }
        rows.append(
            {"lr": lr, "epoch": epoch, "fit_s": round(time.perf_counter() - start), **aurocs}
        )
        print(json.dumps(rows[-1]), flush=True)

    epochs_done = 0

    def batches():
        """Called by the loop once per epoch, so the model here has finished ``epochs_done``."""
        nonlocal epochs_done
        if epochs_done and epochs_done % args.every == 0:
            evaluate(epochs_done)
        epochs_done += 1
        order = torch.randperm(data["n_train"], generator=generator)
        for begin in range(0, len(order), args.batch_size):
            index = order[begin : begin + args.batch_size]
            yield [f[index] for f in data["train"]], None

    fit_detector(detector, batches, TrainingConfig(lr=lr, epochs=args.epochs, seed=args.seed))
    evaluate(args.epochs)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA)
    defaults = CSFlowConfig()
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    parser.add_argument("--hidden", type=int, default=defaults.hidden_channels)
    parser.add_argument("--lr", type=float, default=TrainingConfig().lr)
    parser.add_argument("--epochs", type=int, default=32)
    parser.add_argument("--every", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=TrainingConfig().batch_size)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--baseline", action="store_true", help=f"also run lr {PAPER_LR}")
    parser.add_argument("--cache-dir", default="/tmp/flowedge_bench_features")
    args = parser.parse_args()
    args.n_scales = defaults.n_scales  # what cached_features needs of the CLI namespace
    torch.set_num_threads(args.threads)
    rows = learning_curve(args, args.lr)
    if args.baseline:
        paper = {r["epoch"]: r for r in learning_curve(args, PAPER_LR)}
        for row in rows:
            ratio = row["mean_all"] / paper[row["epoch"]]["mean_all"]
            print(json.dumps({"epoch": row["epoch"], "ratio_to_paper_lr": round(ratio, 3)}))


if __name__ == "__main__":
    main()
