"""Sweep CS-Flow / Gaussian settings on the MTD development split (accuracy per setting).

Each run goes through the real training and evaluation code (``flows.train.train``,
``flows.evaluate.evaluate``). Meant for a GPU (a sweep on this 2-core CPU takes
hours); the chosen default is then timed on the CPU with ``flowedge train``.

    python bench/mtd_sweep.py --data ../shared/data/mtd --device cuda --out runs/sweep
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from flows.config import BackboneConfig, DetectorConfig, TrainingConfig
from flows.evaluate import evaluate
from flows.train import train

# name -> (detector overrides, training overrides)
SETTINGS: dict[str, tuple[dict, dict]] = {
    "cs384-s16-h256-e40": ({"image_size": 384, "hidden_channels": 256, "out": [3]}, {"epochs": 40}),
    "cs384-s16-h128-e40": ({"image_size": 384, "hidden_channels": 128, "out": [3]}, {"epochs": 40}),
    "cs384-s16-h64-e40": ({"image_size": 384, "hidden_channels": 64, "out": [3]}, {"epochs": 40}),
    "cs256-s16-h128-e40": ({"image_size": 256, "hidden_channels": 128, "out": [3]}, {"epochs": 40}),
    "cs384-s32-h256-e40": ({"image_size": 384, "hidden_channels": 256, "out": [4]}, {"epochs": 40}),
    "cs512-s32-h256-e40": ({"image_size": 512, "hidden_channels": 256, "out": [4]}, {"epochs": 40}),
    "cs384-s16-h128-e20": ({"image_size": 384, "hidden_channels": 128, "out": [3]}, {"epochs": 20}),
    "cs384-s16-h128-e80": ({"image_size": 384, "hidden_channels": 128, "out": [3]}, {"epochs": 80}),
    "gauss384-s16": ({"kind": "gaussian", "image_size": 384, "out": [3]}, {}),
    "gauss384-s8-16-32": ({"kind": "gaussian", "image_size": 384, "out": [2, 3, 4]}, {}),
}


def run(name: str, data: Path, out: Path, device: str) -> dict:
    det_over, train_over = SETTINGS[name]
    det_over = dict(det_over)
    backbone = BackboneConfig(out_indices=det_over.pop("out"))
    det = DetectorConfig(backbone=backbone, **det_over)
    cfg = TrainingConfig(**train_over)
    start = time.perf_counter()
    card = train(det, cfg, data, out / name, device=device, show_progress=False)
    train_s = time.perf_counter() - start
    report = evaluate(out / name, data, out / name / "eval", device=device, show_progress=False)
    m = report["metrics"]
    return {
        "setting": name,
        "image_auroc": m["overall"]["image_auroc"],
        "pixel_auroc": m["overall"].get("pixel_auroc"),
        "per_defect": {k: v["image_auroc"] for k, v in m["per_defect"].items()},
        "train_s": round(train_s, 1),
        "feature_s": card.training["feature_seconds"],
        "final_loss": card.training["final_loss"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("runs/sweep"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--only", nargs="*", default=list(SETTINGS))
    args = parser.parse_args()
    results = []
    for name in args.only:
        result = run(name, args.data, args.out, args.device)
        results.append(result)
        print(json.dumps(result), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sweep.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
