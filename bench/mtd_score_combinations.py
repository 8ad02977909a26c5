"""Two test-time ways to lift image AUROC without retraining: flips and score fusion.

    .venv/bin/python bench/mtd_score_combinations.py ../shared/data/mtd CHECKPOINT [CHECKPOINT]

Per checkpoint: image AUROC of the plain score (the baseline), of each flipped input
(horizontal, vertical, both) and of the mean over the four, each with its ratio to the
baseline. With two checkpoints, also their fusion: the sum of the two scores (or their
logs), each z-normalised with the mean and spread of its scores on the *training*
images (``DATA/train``), so no test image sets the scale. Diagnosis only: whether a
test-time combination is worth building into a detector (docs/results.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from flowedge.core.card import InputSpec
from flowedge.flows.checkpoint import load_checkpoint
from flowedge.flows.data.datasets import LoadSummary, Sample, labelled_samples, training_samples
from flowedge.flows.evaluate import score_samples

FLIPS: dict[str, tuple[int, ...]] = {"plain": (), "h": (-1,), "v": (-2,), "hv": (-1, -2)}


class Flipped(torch.nn.Module):
    """The detector on a flipped input (an empty ``dims`` is the detector itself)."""

    def __init__(self, detector: torch.nn.Module, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.detector, self.dims = detector, dims

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.detector(x.flip(self.dims) if self.dims else x)


def flip_scores(
    detector: torch.nn.Module, spec: InputSpec, samples: list[Sample], root: Path
) -> dict[str, np.ndarray]:
    """Image scores of ``samples`` under each flip, and their mean over the four."""
    scores = {}
    for name, dims in FLIPS.items():
        _, scores[name], _ = score_samples(
            Flipped(detector, dims),
            samples,
            spec,
            LoadSummary(root=str(root)),
            16,
            "cpu",
            False,
        )
    scores["mean of 4"] = np.mean([scores[name] for name in FLIPS], axis=0)
    return scores


def z_fused(test: list[np.ndarray], train: list[np.ndarray]) -> np.ndarray:
    """Sum of scores, each standardised by its training-image mean and spread."""
    return sum((te - tr.mean()) / tr.std() for te, tr in zip(test, train, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="MVTec-like root with train/good and test/")
    parser.add_argument("checkpoints", type=Path, nargs="+", help="one or two run folders")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if len(args.checkpoints) > 2:
        parser.error("give one or two checkpoints")
    torch.set_num_threads(args.threads)

    test = labelled_samples(args.data)
    labels = np.array([sample.label for sample in test])
    train = training_samples(args.data)
    on_test, on_train = [], []
    for checkpoint in args.checkpoints:
        detector, card = load_checkpoint(checkpoint)
        scores = flip_scores(detector, card.input, test, args.data)
        base = roc_auc_score(labels, scores["plain"])
        for name, values in scores.items():
            auroc = roc_auc_score(labels, values)
            print(f"{checkpoint}  {name:<9} image AUROC {auroc:.4f}  ({auroc / base:.3f}x plain)")
        on_test.append(scores)
        if len(args.checkpoints) == 2:
            on_train.append(flip_scores(detector, card.input, train, args.data))
    if len(args.checkpoints) == 2:
        best = max(roc_auc_score(labels, scores["plain"]) for scores in on_test)
        for name in ("plain", "mean of 4"):
            test_scores = [scores[name] for scores in on_test]
            train_scores = [scores[name] for scores in on_train]
            for label, transform in (("scores", lambda s: s), ("log scores", np.log)):
                fused = z_fused(
                    [transform(s) for s in test_scores], [transform(s) for s in train_scores]
                )
                auroc = roc_auc_score(labels, fused)
                print(
                    f"fusion of {name} {label}: image AUROC {auroc:.4f}  "
                    f"({auroc / best:.3f}x the better single plain score)"
                )


if __name__ == "__main__":
    main()
