"""``flowedge calibrate``: choose a threshold from held-out normal data and bind it to a model.

Scores the ``--normal`` images (never training images: refused) and optionally labelled
``--anomalous`` ones, picks the threshold with the chosen strategy and writes
calibration.json bound to the model's weights hash. ``--update`` recalibrates an existing
file from newly collected normal data without retraining (merge by default, or replace).
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from flowedge.calibration.calibfile import check_binding, read_calibration, save_calibration
from flowedge.calibration.calibrate import CalibrationOptions, build_calibration, update_calibration
from flowedge.calibration.per_run import score_runs
from flowedge.calibration.reviewed import report_lines, reviewed_scores, scorer
from flowedge.calibration.scoring import (
    ScoredFolder,
    open_model,
    sample_files,
    score_folders,
    training_overlap,
)
from flowedge.calibration.thresholds import STRATEGIES
from flowedge.core.backend_table import BACKENDS, directory_backend, model_files_hint
from flowedge.core.card import ModelCard
from flowedge.core.errors import ConfigError, DataError
from flowedge.core.outpaths import check_output_file
from flowedge.flows.recipes import matched, recipe_folders
from flowedge.flows.runs import baseline_count, require_per_run

log = logging.getLogger(__name__)

DEFAULTS = CalibrationOptions()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint", type=Path, help=f"the model (with --backend to match): {model_files_hint()}"
    )
    parser.add_argument(
        "--normal",
        type=Path,
        action="append",
        metavar="DIR",
        help="held-out normal samples (recursive; repeatable); never the training samples "
        "(needed unless --history or --update gives normal scores)",
    )
    parser.add_argument(
        "--history",
        type=Path,
        action="append",
        metavar="PATH",
        help="a station history (its folder or history.sqlite; repeatable): reviewed false "
        "alarms join the normal set, confirmed defects are what recall is reported on",
    )
    parser.add_argument(
        "--history-confirmed-ok",
        action="store_true",
        help="with --history: OK decisions reviewed as confirmed_normal join the normal set too",
    )
    parser.add_argument(
        "--anomalous",
        type=Path,
        action="append",
        metavar="DIR",
        help="labelled defect samples (repeatable): needed by f1/youden/cost, reported otherwise",
    )
    parser.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default=None,
        help="far: target false-alarm rate (default; or the updated file's); sigma: mean + k*std; "
        "f1, youden, cost: need --anomalous",
    )
    parser.add_argument(
        "--target-far", type=float, default=None, help="false-alarm rate for 'far' (0.01)"
    )
    parser.add_argument("--k", type=float, default=None, help="k for 'sigma' (3)")
    parser.add_argument(
        "--cost-ratio", type=float, default=None, help="missed defect / false alarm cost (10)"
    )
    parser.add_argument(
        "--prevalence", type=float, default=None, help="defect share on the line, for 'cost'"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output file (default: the --update file, else CHECKPOINT_DIR/calibration.json)",
    )
    parser.add_argument(
        "--update", type=Path, metavar="CALIBRATION.json", help="recalibrate this file"
    )
    parser.add_argument(
        "--replace",
        action="store_true",
        help="with --update: use only the new normal data (default: merge with the stored sample)",
    )
    parser.add_argument(
        "--backend",
        choices=tuple(BACKENDS),
        default=directory_backend(),  # the checkpoint's own runtime
        help="runtime that scores the samples: calibrate with the one the station will run",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=16, help="samples per inference (>= 1)")
    parser.add_argument(
        "--bootstrap", type=int, default=DEFAULTS.bootstrap, help="resamples for tail intervals"
    )
    parser.add_argument("--scores-out", type=Path, help="also write the raw scores (JSON) here")
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar (periodic log lines only)"
    )
    parser.add_argument(
        "--recipes",
        action="store_true",
        help="CHECKPOINT holds one model per recipe ('flowedge train --recipes') and each "
        "--normal/--anomalous DIR one folder per recipe: each model calibrated on its own, "
        "written to CHECKPOINT/<recipe>/calibration.json (or OUT/<recipe>/calibration.json)",
    )
    parser.add_argument(
        "--per-run",
        type=baseline_count,
        metavar="N",
        help="for a model trained with 'flowedge train --per-run': --normal DIR (and "
        "--anomalous DIR) hold one folder per run; the first N files of each run's normal "
        "folder are its baseline (as the station's rebaseline.samples), the rest and its "
        "defects are scored with that baseline's statistics",
    )


def _options(args: argparse.Namespace, previous: dict | None) -> CalibrationOptions:
    """CLI values, else the updated file's, else the defaults."""
    known = {f.name for f in fields(CalibrationOptions)}
    stored = {k: v for k, v in (previous or {}).get("options", {}).items() if k in known}
    base = CalibrationOptions(**stored)
    given = {
        "strategy": args.strategy,
        "target_far": args.target_far,
        "k": args.k,
        "cost_ratio": args.cost_ratio,
        "prevalence": args.prevalence,
        "bootstrap": args.bootstrap,
    }
    return CalibrationOptions(
        **{**asdict(base), **{k: v for k, v in given.items() if v is not None}}
    )


def _default_out(args: argparse.Namespace) -> Path:
    if args.update is not None:
        return args.update
    folder = args.checkpoint if args.checkpoint.is_dir() else args.checkpoint.parent
    return folder / "calibration.json"


def run(args: argparse.Namespace) -> int:
    if args.replace and args.update is None:
        raise ConfigError("--replace only applies with --update CALIBRATION.json")
    if args.history_confirmed_ok and not args.history:
        raise ConfigError("--history-confirmed-ok only applies with --history PATH")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1 (got {args.batch_size})")
    if args.per_run is not None:
        _check_per_run(args)
    if not args.recipes:
        if not args.normal and not args.history and (args.update is None or args.replace):
            raise ConfigError(
                "no normal samples: give --normal DIR (held-out normal samples), --history PATH "
                "(reviewed false alarms) or --update CALIBRATION.json (its stored normal scores)"
            )
        out = args.out or _default_out(args)
        _calibrate(args, args.checkpoint, args.normal or [], args.anomalous, out)
        return 0
    if args.update is not None or args.scores_out is not None or args.history:
        raise ConfigError(
            "--update, --scores-out and --history take one model: leave out --recipes"
        )
    if not args.normal:
        raise ConfigError("--recipes needs --normal DIR (one folder per recipe)")
    models = recipe_folders(args.checkpoint, "CHECKPOINT")
    normal = [matched(models, recipe_folders(d, "--normal"), f"--normal {d}") for d in args.normal]
    anomalous = [
        matched(models, recipe_folders(d, "--anomalous"), f"--anomalous {d}")
        for d in args.anomalous or []
    ]
    for recipe, model in models.items():
        print(f"recipe {recipe}:")
        out = (args.out or args.checkpoint) / recipe / "calibration.json"
        _calibrate(
            args,
            model,
            [folders[recipe] for folders in normal],
            [folders[recipe] for folders in anomalous] or None,
            out,
        )
    return 0


def _calibrate(
    args: argparse.Namespace,
    checkpoint: Path,
    normal_dirs: list[Path],
    anomalous_dirs: list[Path] | None,
    out: Path,
) -> None:
    """Calibrate one model on its folders (and the ``--history`` reviews) and write ``out``."""
    previous = read_calibration(args.update) if args.update else None
    opts = _options(args, previous.data if previous else None)
    check_output_file(out)
    if args.scores_out:
        check_output_file(args.scores_out, "--scores-out")
    infer, card, close = open_model(checkpoint, args.backend, args.device)
    try:
        if previous is not None:
            check_binding(previous, card)
        if normal_dirs or anomalous_dirs:  # reviewed and stored scores are the station's own
            require_per_run(card, args.per_run, str(checkpoint))
        _refuse_training_images(normal_dirs, card)
        _log_plan(args, opts, card, normal_dirs, anomalous_dirs or [])
        bar = not args.no_progress
        if args.per_run is not None:
            normal, anomalous = score_runs(
                normal_dirs[0],
                anomalous_dirs[0] if anomalous_dirs else None,
                args.per_run,
                infer,
                card,
                args.batch_size,
                bar,
            )
        else:
            normal = (
                score_folders(normal_dirs, infer, card, args.batch_size, "normal", bar)
                if normal_dirs
                else None
            )
            anomalous = (
                score_folders(anomalous_dirs, infer, card, args.batch_size, "anomalous", bar)
                if anomalous_dirs
                else None
            )
        reviewed = (
            reviewed_scores(
                args.history,
                card,
                scorer(infer, card, args.batch_size, bar),
                args.history_confirmed_ok,
            )
            if args.history
            else None
        )
    finally:
        close()
    sources = {
        "normal": normal.summary() if normal else None,
        "anomalous": anomalous.summary() if anomalous else None,
        "history": reviewed.summary() if reviewed else None,
    }
    normal_scores = _joined(normal, reviewed.normal if reviewed else None)
    if normal_scores is None:  # --update alone: its stored sample
        normal_scores = np.zeros(0)
    abnormal = _joined(anomalous, reviewed.defects if reviewed else None)
    if previous is None:
        data = build_calibration(normal_scores, card, opts, abnormal, sources)
    else:
        mode = "replace" if args.replace else "merge"
        data = update_calibration(previous.data, normal_scores, card, opts, mode, abnormal, sources)
    calibration = save_calibration(data, out)
    if args.scores_out:
        _write_scores(args.scores_out, normal_scores, abnormal)
    _print_summary(data, out)
    if reviewed is not None:
        before = previous.threshold if previous is not None else reviewed.threshold_before
        print("\n".join(report_lines(reviewed, before, data["threshold"])))
    log.info("calibration %s written for %s", calibration.sha256[:12], card.model_id)


def _check_per_run(args: argparse.Namespace) -> None:
    """--per-run takes one model, one --normal folder of runs and at most one --anomalous."""
    if args.recipes:
        raise ConfigError("--per-run calibrates one model: leave out --recipes")
    if len(args.normal or []) != 1 or len(args.anomalous or []) > 1:
        raise ConfigError(
            "--per-run takes one --normal DIR (one folder per run) and at most one --anomalous DIR"
        )


def _joined(scored: ScoredFolder | None, reviewed: np.ndarray | None) -> np.ndarray | None:
    """Folder scores and reviewed-sample scores together; None when there are neither."""
    parts = [scored.scores] if scored is not None else []
    if reviewed is not None and reviewed.size:
        parts.append(reviewed)
    return np.concatenate(parts) if parts else None


def _log_plan(
    args: argparse.Namespace,
    opts: CalibrationOptions,
    card: ModelCard,
    normal: list[Path],
    anomalous: list[Path],
) -> None:
    """Say what was found and which settings apply, before the long scoring starts."""
    for kind, folders in (("normal", normal), ("anomalous", anomalous)):
        for folder in folders:
            count = len(sample_files(folder, card.input.kind))
            log.info("%s samples: %d in %s", kind, count, folder)
    log.info(
        "calibrating %s with %s on %s: strategy %s (target false-alarm rate %g, k %g, "
        "cost ratio %g), batch %d",
        card.model_id,
        args.backend,
        args.device,
        opts.strategy,
        opts.target_far,
        opts.k,
        opts.cost_ratio,
        args.batch_size,
    )


def _refuse_training_images(folders: list[Path], card: ModelCard) -> None:
    files = [str(p) for folder in folders for p in sample_files(folder, card.input.kind)]
    overlap = training_overlap(files, card)
    if overlap:
        raise DataError(
            f"{len(overlap)} of {len(files)} --normal images were used to train {card.model_id} "
            f"(e.g. {overlap[0]}); training scores are optimistic, so the false-alarm rate "
            "would be wrong: calibrate on held-out normal images"
        )


def _write_scores(path: Path, normal: np.ndarray, anomalous: np.ndarray | None) -> None:
    scores = {
        "normal": normal.tolist(),
        "anomalous": None if anomalous is None else anomalous.tolist(),
    }
    path.write_text(json.dumps(scores) + "\n", encoding="utf-8")


def _print_summary(data: dict, out: Path) -> None:
    far = data["expected_far"]
    lines = [
        f"calibration written to {out} (model {data['model_id']})",
        f"  strategy    {data['strategy']['name']} {data['strategy']['params']} "
        f"({data['strategy']['detail'].get('method', '')})",
        f"  threshold   {data['threshold']:.6g}  (normalised {data['normalised_threshold']:.3f})",
        f"  normal      n={data['normal']['n']}  in-sample alarms {far['in_sample_alarms']}",
        f"  false alarms expected {far['value']:.3%}  [{far['low']:.3%}, {far['high']:.3%}] "
        f"{far['confidence']:.0%} {far['method']}",
    ]
    if data["anomalous"]:
        rec = data["anomalous"]["recall"]
        lines.append(
            f"  anomalous   n={data['anomalous']['n']}  AUROC {data['anomalous']['auroc_vs_normal']:.3f}  "
            f"recall {rec['value']:.1%} [{rec['low']:.1%}, {rec['high']:.1%}]"
        )
    print("\n".join(lines))
