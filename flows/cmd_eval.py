"""``flowedge eval CHECKPOINT TEST_ROOT --out DIR``: metrics, report and figures."""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from flowedge.core.card import CardError, ModelCard
from flowedge.core.errors import CheckFailedError, ConfigError
from flowedge.core.outpaths import check_output_dir
from flowedge.flows.data.datasets import labelled_samples
from flowedge.flows.recipes import matched, recipe_folders
from flowedge.flows.runs import baseline_count, require_per_run

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint",
        type=Path,
        metavar="CHECKPOINT",
        help="checkpoint directory written by 'flowedge train'",
    )
    parser.add_argument(
        "test_root",
        type=Path,
        metavar="TEST_ROOT",
        help="MVTec category root (uses test/ and ground_truth/) or its test folder",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="directory for report.json and the PNG figures"
    )
    layout = parser.add_mutually_exclusive_group()
    layout.add_argument(
        "--recipes",
        action="store_true",
        help="CHECKPOINT holds one model per recipe ('flowedge train --recipes') and TEST_ROOT "
        "one folder per recipe: each model on its own recipe's test set, reports in OUT/<recipe>",
    )
    layout.add_argument(
        "--per-run",
        type=baseline_count,
        metavar="N",
        help="for a model trained with 'flowedge train --per-run': TEST_ROOT holds one test set "
        "per run; the first N normal files of each are its baseline (as the station's "
        "rebaseline.samples), not scored; the rest are scored with that baseline's statistics",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=16, help="samples per inference (>= 1)")
    parser.add_argument(
        "--worst", type=int, default=3, help="heatmap overlays per kind of worst case (>= 0)"
    )
    parser.add_argument(
        "--min-auroc",
        type=float,
        help="exit 5 when the overall detection AUROC (one score per sample: image_auroc in "
        "the report) is below this (0..1)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (periodic log lines only)"
    )


def _fmt(value: Any) -> str:
    return "   n/a" if value is None else f"{value:6.3f}"


def summary_table(metrics: dict[str, Any]) -> str:
    """Overall and per-defect rows: counts, image AUROC, pixel AUROC, AUPRO, F1-max."""
    rows = [
        f"{'':<14} {'good':>5} {'defect':>6} {'img AUROC':>9} {'px AUROC':>9} {'AUPRO':>7} "
        f"{'F1-max':>7} {'threshold':>10}"
    ]
    groups = {"overall": metrics["overall"], **metrics["per_defect"]}
    for name, m in groups.items():
        threshold = "n/a" if m["f1_threshold"] is None else f"{m['f1_threshold']:.4g}"
        rows.append(
            f"{name:<14} {m['n_good']:>5} {m['n_defect']:>6} {_fmt(m['image_auroc']):>9} "
            f"{_fmt(m.get('pixel_auroc')):>9} {_fmt(m.get('aupro')):>7} {_fmt(m['f1_max']):>7} "
            f"{threshold:>10}"
        )
    return "\n".join(rows)


def checkpoint_card(checkpoint: Path) -> ModelCard | None:
    """The checkpoint's card (light: no torch); None when it cannot be read here (evaluate
    then says why)."""
    card = checkpoint if checkpoint.name == "card.json" else checkpoint / "card.json"
    if checkpoint.name == "weights.safetensors":
        card = checkpoint.parent / "card.json"
    try:
        return ModelCard.load(card)
    except CardError:
        return None


def log_plan(args: argparse.Namespace, checkpoint: Path, test_root: Path) -> None:
    """Check the layout against the card and say what was found and which settings apply,
    before the long part starts."""
    card = checkpoint_card(checkpoint)
    if card is not None:
        require_per_run(card, args.per_run, str(checkpoint))
    kind = "image" if card is None else card.input.kind
    roots = (
        list(recipe_folders(test_root, "test data folder", "run").values())
        if args.per_run is not None
        else [test_root]
    )
    samples = [sample for root in roots for sample in labelled_samples(root, kind)]
    per_class = Counter(sample.defect for sample in samples)
    log.info(
        "test files in %s: %s",
        test_root,
        ", ".join(f"{name} {count}" for name, count in sorted(per_class.items())),
    )
    log.info(
        "evaluating %s on %s, batch %d, %d worst case(s) per kind, target AUROC %s",
        checkpoint,
        args.device,
        args.batch_size,
        args.worst,
        "none" if args.min_auroc is None else f"{args.min_auroc:g}",
    )


def run(args: argparse.Namespace) -> int:
    if not args.recipes:
        auroc = _evaluate(args, args.checkpoint, args.test_root, args.out)
        _check_target(args, {"": auroc})
        return 0
    models = recipe_folders(args.checkpoint, "CHECKPOINT")
    tests = matched(models, recipe_folders(args.test_root, "test data folder"), "TEST_ROOT")
    check_output_dir(args.out)
    results = {}
    for recipe, model in models.items():
        print(f"recipe {recipe}:")
        results[recipe] = _evaluate(args, model, tests[recipe], args.out / recipe)
    print("recipe          image AUROC")
    for recipe, auroc in results.items():
        print(f"{recipe:<15} {_fmt(auroc)}")
    _check_target(args, results)
    return 0


def _evaluate(args: argparse.Namespace, checkpoint: Path, test_root: Path, out: Path) -> Any:
    """One model on one test set: report, figures, the summary printed; its image AUROC."""
    if not test_root.is_dir():
        raise ConfigError(
            f"test data folder {test_root} not found; give an MVTec category root (with "
            "test/good and test/<defect>) or its test folder"
        )
    check_output_dir(out)
    log_plan(args, checkpoint, test_root)
    from flowedge.flows.evaluate import evaluate  # heavy: torch, timm, matplotlib

    report = evaluate(
        checkpoint,
        test_root,
        out,
        device=args.device,
        batch_size=args.batch_size,
        n_worst=args.worst,
        show_progress=not args.no_progress,
        per_run=args.per_run,
    )
    data = report["data"]
    print(
        f"model {report['model_id']} on {data['n_ok']} test samples "
        f"({data['n_skipped']} file(s) skipped)"
    )
    print(summary_table(report["metrics"]))
    files = report["files"]
    print(
        f"report: {files['report']}\nfigures: {files['roc']}, {files['histogram']}, {len(files['heatmaps'])} heatmaps in {Path(out) / 'heatmaps'}"
    )
    return report["metrics"]["overall"]["image_auroc"]


def _check_target(args: argparse.Namespace, aurocs: dict[str, Any]) -> None:
    """Exit 5 when a model's image AUROC is below ``--min-auroc``."""
    if args.min_auroc is None:
        return
    low = {name: a for name, a in aurocs.items() if a is None or a < args.min_auroc}
    if low:
        which = ", ".join(f"{name or 'the model'} {a}" for name, a in low.items())
        raise CheckFailedError(f"image AUROC below the target {args.min_auroc}: {which}")
