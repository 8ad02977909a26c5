"""One table over trained image detectors on MTD: accuracy, calibrated recall, speed, size.

For each checkpoint (trained beforehand with ``flowedge train``, see docs/results.md):

* ``flowedge eval`` (PyTorch): image AUROC, pixel AUROC, AUPRO, F1-max on the test split;
* ``flowedge export onnx`` (with its parity gate), then ``flowedge calibrate`` of that
  graph on held-out normal images only at a 1 % false-alarm target, and the recall on
  the test defects and false-alarm rate on test/good at that threshold (ONNX Runtime);
* latency at batch 1 (median) in PyTorch and ONNX Runtime, same threads, same image;
* parameters (all / outside the frozen-or-shared backbone) and the training time the
  model card records.

The first checkpoint is the baseline: every latency is also printed as a ratio to it.
Calibration needs normal images the model never saw: a checkpoint trained on ``WORK/train``
of ``bench/calibration_mtd.py split`` is calibrated on ``WORK/holdout``; one trained on all
of train/good gets "n/a" there (``flowedge calibrate`` refuses training images).

    python bench/calibration_mtd.py split ../shared/data/mtd WORK --holdout 200
    flowedge train WORK/train --out runs/csflow            # one per detector
    python bench/image_detectors.py ../shared/data/mtd WORK/holdout runs/csflow runs/ast ...
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.backends import timed  # noqa: E402
from bench.calibration_mtd import check  # noqa: E402
from flowedge.backends.onnxrt import OnnxRuntimeBackend  # noqa: E402
from flowedge.calibration.scoring import sample_files  # noqa: E402
from flowedge.flows.checkpoint import load_checkpoint  # noqa: E402
from flowedge.flows.evaluate import evaluate  # noqa: E402
from flowedge.modalities import get_modality  # noqa: E402

FLOWEDGE = [str(Path(sys.executable).parent / "flowedge")]  # the CLI of this interpreter's venv


def run_cli(*args: str) -> None:
    subprocess.run([*FLOWEDGE, *map(str, args)], check=True)


def latencies(run: Path, onnx_path: Path, image: Path, threads: int, repeats: int) -> dict:
    """Median ms per image at batch 1, PyTorch eager and ONNX Runtime, on one real image."""
    torch.set_num_threads(threads)
    detector, card = load_checkpoint(run)
    batch = get_modality(card.input.kind).load(image, card.input)[None]
    with torch.no_grad():
        eager = timed(lambda b: detector(torch.from_numpy(b)), batch, repeats)
    backend = OnnxRuntimeBackend.open(onnx_path, "cpu", threads)
    try:
        ort = timed(backend.infer, batch, repeats)
    finally:
        backend.close()
    backbone = detector.backbone
    n_all = sum(p.numel() for p in detector.parameters())
    n_backbone = sum(p.numel() for p in backbone.parameters()) if backbone is not None else 0
    return {
        "torch_ms": 1e3 * statistics.median(eager),
        "ort_ms": 1e3 * statistics.median(ort),
        "params": n_all,
        "params_outside_backbone": n_all - n_backbone,
    }


def calibrated_recall(run: Path, onnx_path: Path, data: Path, holdout: Path) -> dict:
    """Recall on the test defects and false-alarm rate on test/good at the threshold that
    ``flowedge calibrate`` sets for 1 % false alarms from ``holdout``; None for both when it
    refuses (a model trained on the holdout images has no unseen normals to calibrate on)."""
    calibration = run / "calibration.json"
    try:
        run_cli(
            "calibrate", onnx_path, "--normal", holdout, "--target-far", "0.01",
            "--backend", "onnxruntime", "--out", calibration, "--no-progress",
        )  # fmt: skip
    except subprocess.CalledProcessError:
        return {"recall_at_1pct_far": None, "far_on_test_good": None}
    checked = check(data, onnx_path, calibration, "onnxruntime", "cpu")
    return {
        "recall_at_1pct_far": checked["test_defect"]["recall"],
        "far_on_test_good": checked["test_good"]["rate"],
    }


def measure(
    run: Path, data: Path, holdout: Path, threads: int, repeats: int, reuse: bool
) -> dict[str, Any]:
    report_path = run / "eval" / "report.json"
    report = json.loads(report_path.read_text()) if reuse and report_path.is_file() else None
    if report is None or "aupro" not in report["metrics"]["overall"]:  # none, or too old
        report = evaluate(run, data, run / "eval", show_progress=False)
    overall = report["metrics"]["overall"]
    onnx_path = run / "model.onnx"
    if not (reuse and onnx_path.is_file()):
        run_cli("export", "onnx", run, "--out", onnx_path)
    calibrated = calibrated_recall(run, onnx_path, data, holdout)
    card = json.loads((run / "card.json").read_text())
    training = card["training"]
    image = sample_files(data / "test" / "good", "image")[0]
    return {
        "run": str(run),
        "model_id": report["model_id"],
        "detector": card["detector"],
        "image_auroc": overall["image_auroc"],
        "pixel_auroc": overall.get("pixel_auroc"),
        "aupro": overall.get("aupro"),
        "f1_max": overall["f1_max"],
        **calibrated,
        "train_s": training["feature_seconds"] + training["fit_seconds"],
        "n_train": training["data"]["n_images"],
        **latencies(run, onnx_path, image, threads, repeats),
    }


def table(rows: list[dict[str, Any]]) -> str:
    base = rows[0]
    lines = [
        "| detector | image AUROC | pixel AUROC | AUPRO | F1-max | recall @ 1 % FAR (FAR on "
        "test/good) | ORT ms (x base) | PyTorch ms (x base) | params (outside backbone) "
        "| train min |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['detector']} `{r['model_id']}` | {r['image_auroc']:.3f} | "
            f"{_fmt(r['pixel_auroc'])} | {_fmt(r['aupro'])} | {r['f1_max']:.3f} | "
            f"{_fmt(r['recall_at_1pct_far'])} ({_fmt(r['far_on_test_good'])}) | "
            f"{r['ort_ms']:.0f} ({r['ort_ms'] / base['ort_ms']:.2f}) | "
            f"{r['torch_ms']:.0f} ({r['torch_ms'] / base['torch_ms']:.2f}) | "
            f"{r['params'] / 1e6:.2f} M ({r['params_outside_backbone'] / 1e6:.2f} M) | "
            f"{r['train_s'] / 60:.1f} |"
        )
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", type=Path, help="MVTec-layout root (its test/ is scored)")
    parser.add_argument("holdout", type=Path, help="held-out normal images for calibration")
    parser.add_argument("runs", type=Path, nargs="+", help="checkpoints; the first is the base")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument(
        "--reuse", action="store_true", help="keep RUN/eval/report.json and RUN/model.onnx if there"
    )
    args = parser.parse_args()
    rows = []
    for run in args.runs:
        rows.append(measure(run, args.data, args.holdout, args.threads, args.repeats, args.reuse))
        print(json.dumps(rows[-1], indent=2), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
