"""Calibration evidence on MTD: threshold from held-out normal images only, checked on test.

MTD's dev split has only 64 good test images, too few to calibrate a 1 % false-alarm
rate (that needs about 100 normal samples) *and* to check it. So ``split`` holds out
``--holdout`` images of train/good from training (seeded shuffle; symlinks, nothing is
copied), the model is trained on the rest, calibrated on the held-out ones, and ``check``
measures the false-alarm rate on test/good and the recall on the defect folders.

    python bench/calibration_mtd.py split MTD_ROOT WORK --holdout 200
    flowedge train WORK/train --out WORK/model [--config ...] --device cuda
    flowedge calibrate WORK/model --normal WORK/holdout --target-far 0.01 --out WORK/calibration.json
    python bench/calibration_mtd.py check MTD_ROOT WORK/model WORK/calibration.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from flowedge.calibration.calibfile import load_calibration
from flowedge.calibration.scoring import open_model, sample_files, score_folders
from flowedge.calibration.thresholds import clopper_pearson
from flowedge.core.metrics import separation_auroc


def split(root: Path, work: Path, holdout: int, seed: int) -> None:
    good = sample_files(root / "train" / "good", "image")
    order = np.random.default_rng(seed).permutation(len(good))
    parts = {"holdout": order[:holdout], "train": order[holdout:]}
    for name, indices in parts.items():
        folder = work / name
        folder.mkdir(parents=True, exist_ok=False)
        for i in sorted(indices):
            (folder / good[i].name).symlink_to(good[i].resolve())
        print(f"{folder}: {len(indices)} images")


def check(root: Path, model: Path, calibration_path: Path, backend: str, device: str) -> dict:
    infer, card, close = open_model(model, backend, device)
    try:
        cal = load_calibration(calibration_path, card)
        test = root / "test"
        good = score_folders([test / "good"], infer, card).scores
        defects = {
            d.name: score_folders([d], infer, card).scores
            for d in sorted(test.iterdir())
            if d.name != "good"
        }
    finally:
        close()
    anomalous = np.concatenate(list(defects.values()))
    alarms = int(np.count_nonzero(good > cal.threshold))
    caught = int(np.count_nonzero(anomalous > cal.threshold))
    result = {
        "model": card.model_id,
        "threshold": cal.threshold,
        "expected_far": cal.data["expected_far"],
        "test_good": {
            "n": int(good.size),
            "false_alarms": alarms,
            "rate": alarms / good.size,
            "ci95": clopper_pearson(alarms, good.size),
        },
        "test_defect": {
            "n": int(anomalous.size),
            "caught": caught,
            "recall": caught / anomalous.size,
            "ci95": clopper_pearson(caught, anomalous.size),
        },
        "recall_by_defect": {k: float(np.mean(v > cal.threshold)) for k, v in defects.items()},
        "auroc_test": separation_auroc(good, anomalous),
        "normalised_test_good_median": cal.normalise(float(np.median(good))),
    }
    print(json.dumps(result, indent=2))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="step", required=True)
    s = sub.add_parser("split")
    s.add_argument("root", type=Path)
    s.add_argument("work", type=Path)
    s.add_argument("--holdout", type=int, default=200)
    s.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("check")
    c.add_argument("root", type=Path)
    c.add_argument("model", type=Path)
    c.add_argument("calibration", type=Path)
    c.add_argument("--backend", default="torch")
    c.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.step == "split":
        split(args.root, args.work, args.holdout, args.seed)
    else:
        check(args.root, args.model, args.calibration, args.backend, args.device)


if __name__ == "__main__":
    main()
