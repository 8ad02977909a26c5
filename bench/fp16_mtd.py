"""fp32 vs fp16 ONNX graphs on a labelled image set (MTD dev split): score error and AUROC.

Scores every test image with PyTorch (reference), the fp32 graph and the
fp16-safe graph on ONNX Runtime CPU (what a CPU station runs), and a subset
with true fp16 arithmetic (ONNX reference evaluator: fp16-safe and naive
full-fp16 graphs), as a GPU would compute them.

    .venv/bin/python bench/fp16_mtd.py CHECKPOINT [--data ../shared/data/mtd] [--faithful 6]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flowedge.backends.onnxrt import OnnxRuntimeBackend  # noqa: E402
from flowedge.export.checked import torch_outputs  # noqa: E402
from flowedge.export.fp16 import to_fp16, to_fp16_naive  # noqa: E402
from flowedge.export.onnx_export import export_onnx  # noqa: E402
from flowedge.export.parity import fp16_faithful_infer, run_in_batches  # noqa: E402
from flowedge.flows.checkpoint import load_checkpoint  # noqa: E402
from flowedge.modalities import get_modality  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mtd"


def errors(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    finite = np.isfinite(got)
    rel = np.where(finite, np.abs(got - ref) / np.maximum(np.abs(ref), 1e-6), np.inf)
    return {
        "max_rel_err": float(rel.max()),
        "median_rel_err": float(np.median(rel)),
        "nonfinite": int((~finite).sum()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--faithful", type=int, default=6, help="images scored with true fp16 arithmetic"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    detector, card = load_checkpoint(args.checkpoint)
    modality = get_modality(card.input.kind)
    files = modality.list_files(args.data / "test")
    labels = np.array([0 if p.parent.name == "good" else 1 for p in files])
    images = np.stack([modality.load(p, card.input) for p in files])
    result: dict = {
        "checkpoint": str(args.checkpoint),
        "detector": card.detector,
        "images": len(files),
        "defective": int(labels.sum()),
    }
    ref = torch_outputs(detector, images)[0].astype(np.float64)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_onnx(detector, card, fp32)
        model = onnx.load(str(fp32))
        paths = {
            "fp32": fp32,
            "fp16_safe": Path(tmp) / "fp16.onnx",
            "fp16_naive": Path(tmp) / "naive.onnx",
        }
        onnx.save(to_fp16(model), str(paths["fp16_safe"]))
        onnx.save(to_fp16_naive(model), str(paths["fp16_naive"]))
        scores = {"torch_fp32": ref}
        for name in ("fp32", "fp16_safe"):
            backend = OnnxRuntimeBackend.open(paths[name], "cpu", args.threads)
            scores[f"ort_{name}"] = run_in_batches(backend.infer, images, (8,))[0].astype(
                np.float64
            )
        for name, s in scores.items():
            result[name] = {"auroc": float(roc_auc_score(labels, s)), **errors(ref, s)}
        good, bad = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
        half = args.faithful // 2
        subset = np.concatenate(
            [good[:: max(1, len(good) // half)][:half], bad[:: max(1, len(bad) // half)][:half]]
        )
        for name in ("fp16_safe", "fp16_naive"):
            got = run_in_batches(fp16_faithful_infer(paths[name]), images[subset], (1,))[0].astype(
                np.float64
            )
            result[f"true_fp16_{name}"] = {"images": len(subset), **errors(ref[subset], got)}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
