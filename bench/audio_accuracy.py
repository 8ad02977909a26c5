"""AUROC per fault type and severity of seed 000's three input types on generated motor sound.

Generates a fold-motion dataset with the gear-motor generator (train/good, test/good,
test/<fault>_<severity>), extracts the frozen backbone's passes (full, half and quarter
spectrogram image) once, then fits the hybrid, multiscale and multifeature flows on the
same features for several seeds and reports the mean AUROC per fault and severity.
Example (about 13 minutes on 2 shared CPU cores; the paper's 256 x 384 image and 64
hidden channels take about 4 times longer)::

    python bench/audio_accuracy.py --out /tmp/audio-bench --n-train 48 --n-test-good 20 \
        --n-test-defect 8 --epochs 20 --seeds 1 --image-size 128 256 --hidden 32 \
        --json docs/data/audio_accuracy.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from flowedge.flows.config import AUDIO_INPUT_TYPES, AudioFlowConfig, TrainingConfig
from flowedge.flows.data.datasets import (
    LoadSummary,
    iter_batches,
    labelled_samples,
    training_samples,
)
from flowedge.flows.detectors import build_detector
from flowedge.flows.detectors.audioflow import AudioFlow
from flowedge.flows.fit import fit_detector
from flowedge.flows.train import FeatureCache
from flowedge.modalities.audio_synthetic import SEVERITIES, write_dataset


@torch.no_grad()
def backbone_passes(
    detector: AudioFlow, samples: list, batch_size: int
) -> list[list[torch.Tensor]]:
    """[full, half, quarter] backbone outputs (3 stages each) of every sample."""
    parts: list[list[list[torch.Tensor]]] = []
    for batch, _ in iter_batches(samples, detector.input_spec(), batch_size, LoadSummary("bench")):
        image = detector.image(torch.from_numpy(batch))
        parts.append(
            [detector.backbone(image if k == 0 else F.avg_pool2d(image, 2**k)) for k in range(3)]
        )
    return [[torch.cat([p[k][s] for p in parts]) for s in range(3)] for k in range(3)]


def pyramid(input_type: str, passes: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    """The three maps the flow of ``input_type`` sees (as AudioFlow.features builds them)."""
    full, half, quarter = passes
    if input_type == "hybrid":
        return [full[1], torch.cat([full[2], half[1]], dim=1), half[2]]
    if input_type == "multiscale":
        return [full[2], half[2], quarter[2]]
    return full


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out", type=Path, required=True, help="dataset folder (generated if absent)"
    )
    parser.add_argument("--n-train", type=int, default=80)
    parser.add_argument("--n-test-good", type=int, default=40)
    parser.add_argument("--n-test-defect", type=int, default=15, help="per fault and severity")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seeds", type=int, default=3, help="flow initialisations averaged")
    parser.add_argument("--image-size", type=int, nargs=2, default=[256, 384], metavar=("H", "W"))
    parser.add_argument("--hidden", type=int, default=64, help="hidden channels of the subnets")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    start = time.perf_counter()
    if not (args.out / "train").is_dir():
        write_dataset(
            args.out,
            args.n_train,
            args.n_test_good,
            args.n_test_defect,
            severities=tuple(SEVERITIES),
        )
    print(f"dataset {args.out}: {time.perf_counter() - start:.0f} s")

    base = AudioFlowConfig(
        image_size=tuple(args.image_size),
        hidden_channels=args.hidden,
        kernel_sizes=[3, 3, 3, 3],  # 5x5 in the last block costs 3x on a CPU for no gain here
    )
    extractor = build_detector(base).eval()
    train = training_samples(args.out, "audio")
    test = labelled_samples(args.out, "audio")
    start = time.perf_counter()
    train_passes = backbone_passes(extractor, train, 16)
    test_passes = backbone_passes(extractor, test, 16)
    print(f"features of {len(train)} + {len(test)} clips: {time.perf_counter() - start:.0f} s")

    labels = np.array([s.label for s in test])
    groups = sorted({s.defect for s in test if s.label})
    results: dict[str, dict[str, list[float]]] = {}
    for input_type in AUDIO_INPUT_TYPES:
        results[input_type] = {}
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            detector = build_detector(base.model_copy(update={"input_type": input_type}))
            train_cfg = TrainingConfig(epochs=args.epochs, batch_size=16, seed=seed)
            cache = FeatureCache(
                [pyramid(input_type, train_passes)], None, 16, seed, torch.device("cpu")
            )
            t0 = time.perf_counter()
            fit_detector(detector, cache, train_cfg)
            with torch.no_grad():
                z = detector.latents(pyramid(input_type, test_passes))
                scores = detector.reduce(z, detector.map_shape())[0].numpy()
            fit_s = time.perf_counter() - t0
            for group in ["all", *groups]:
                keep = (labels == 0) | np.array([group in ("all", s.defect) for s in test])
                auroc = float(roc_auc_score(labels[keep], scores[keep]))
                results[input_type].setdefault(group, []).append(auroc)
            print(
                f"{input_type} seed {seed}: AUROC {results[input_type]['all'][-1]:.3f} (fit {fit_s:.0f} s)"
            )

    header = "| fault, severity | " + " | ".join(AUDIO_INPUT_TYPES) + " |"
    print("\n" + header + "\n|---|" + "---|" * len(AUDIO_INPUT_TYPES))
    for group in [*groups, "all"]:
        cells = [
            f"{np.mean(results[t][group]):.3f} ± {np.std(results[t][group]):.3f}"
            for t in AUDIO_INPUT_TYPES
        ]
        print(f"| {group} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        summary = {"args": {k: str(v) for k, v in vars(args).items()}, "auroc": results}
        args.json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
