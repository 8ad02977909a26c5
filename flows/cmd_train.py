"""``flowedge train DATA_DIR --out DIR``: train a detector and write a checkpoint."""

from __future__ import annotations

import argparse
import importlib
import logging
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from flowedge.core.card import INTENSITIES, ModelCard
from flowedge.core.errors import ConfigError
from flowedge.core.outpaths import check_output_dir
from flowedge.core.validation import format_validation_error
from flowedge.core.yamlfile import read_yaml
from flowedge.flows.config import (
    DETECTOR_KINDS,
    DetectorConfigBase,
    TrainingConfig,
    TrainingSections,
)
from flowedge.flows.recipes import looks_like_recipes, recipe_folders
from flowedge.flows.runs import require_rebaselining

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "data_dir",
        type=Path,
        metavar="DATA_DIR",
        help="MVTec-like root (uses train/good) or a folder of normal samples (images, sounds, logs)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="checkpoint directory to write (weights.safetensors + card.json); with --recipes "
        "one per recipe inside it",
    )
    layout = parser.add_mutually_exclusive_group()
    layout.add_argument(
        "--recipes",
        action="store_true",
        help="DATA_DIR holds one folder per recipe (each a data set as above): one model per "
        "recipe, written to OUT/<recipe> (the station's recipes.models)",
    )
    layout.add_argument(
        "--per-run",
        action="store_true",
        help="DATA_DIR holds one folder per run or operating point (each a data set as above): "
        "ONE model, each run standardised with its own statistics, for a station that "
        "re-baselines after each changeover (series and audio; its config needs rebaseline:)",
    )
    parser.add_argument(
        "--config", type=Path, help="config.yaml whose 'detector' and 'training' sections are used"
    )
    parser.add_argument("--detector", choices=DETECTOR_KINDS, help="overrides detector.kind")
    parser.add_argument("--epochs", type=int, help="overrides training.epochs")
    parser.add_argument("--batch-size", type=int, help="overrides training.batch_size")
    parser.add_argument("--image-size", type=int, help="overrides detector.image_size")
    parser.add_argument(
        "--intensity",
        choices=INTENSITIES,
        help="overrides detector.intensity: standardize (default) evens out each image's "
        "brightness and contrast; raw keeps them, when too dark or bright is itself a defect",
    )
    parser.add_argument(
        "--backbone-weights", metavar="auto|none|PATH", help="overrides detector.backbone.weights"
    )
    parser.add_argument("--lr", type=float, help="overrides training.lr (> 0)")
    parser.add_argument("--seed", type=int, help="overrides training.seed")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bars (periodic log lines only)"
    )


def _sections(path: Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The raw 'detector' and 'training' mappings of the config file (empty without one)."""
    if path is None:
        return {}, {}
    data = read_yaml(path, "config file") or {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of keys, got {type(data).__name__}"
        )
    sections = []
    for key in ("detector", "training"):
        section = data.get(key) or {}
        if not isinstance(section, dict):
            raise ConfigError(
                f"{path}: {key}: must be a mapping of keys, got {type(section).__name__}"
            )
        sections.append(dict(section))
    return sections[0], sections[1]


# command-line flag (and flowedge.train keyword) -> the config key it overrides
OVERRIDES: dict[str, tuple[str, ...]] = {
    "detector": ("detector", "kind"),
    "image_size": ("detector", "image_size"),
    "intensity": ("detector", "intensity"),
    "backbone_weights": ("detector", "backbone", "weights"),
    "epochs": ("training", "epochs"),
    "batch_size": ("training", "batch_size"),
    "lr": ("training", "lr"),
    "seed": ("training", "seed"),
}


def build_configs(args: argparse.Namespace) -> tuple[DetectorConfigBase, TrainingConfig]:
    """Config file sections with the command-line flags on top, validated together."""
    return training_configs(args.config, {name: getattr(args, name) for name in OVERRIDES})


def training_configs(
    config: Path | None, overrides: Mapping[str, Any]
) -> tuple[DetectorConfigBase, TrainingConfig]:
    """The config file's sections with ``overrides`` (names of :data:`OVERRIDES`, None: keep)."""
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise ConfigError(
            f"unknown training option(s) {', '.join(unknown)}; known: {', '.join(OVERRIDES)} "
            "(anything else goes in the config file's 'detector' and 'training' sections)"
        )
    detector, training = _sections(config)
    sections = {"detector": detector, "training": training}
    for name, value in overrides.items():
        if value is not None:
            _set(sections, OVERRIDES[name], value)
    source = str(config) if config else "command line"
    try:
        validated = TrainingSections.model_validate(sections)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None
    return validated.detector, validated.training


def _set(tree: dict[str, Any], key_path: tuple[str, ...], value: Any) -> None:
    """Set a nested key; a malformed (non-mapping) section stays as it is, so validation reports it."""
    *parents, key = key_path
    for part in parents:
        child = tree.get(part) or {}
        if not isinstance(child, dict):
            return
        tree[part] = child = dict(child)
        tree = child
    tree[key] = value


def log_plan(
    det_cfg: DetectorConfigBase,
    train_cfg: TrainingConfig,
    folders: list[Path],
    device: str,
) -> None:
    """Say what was found and which settings apply, before the long part starts."""
    from flowedge.flows.data.datasets import training_samples

    samples = [s for folder in folders for s in training_samples(folder, det_cfg.modality)]
    per_folder = Counter(str(sample.path.parent) for sample in samples)
    for folder, count in sorted(per_folder.items()):
        log.info("training %s files: %d in %s", det_cfg.modality, count, folder)
    backbone = getattr(det_cfg, "backbone", None)  # series detectors have none
    log.info(
        "training %s on %s: %s, %s, %s, batch %d, lr %g, seed %d",
        det_cfg.kind,
        device,
        "no backbone"
        if backbone is None
        else f"backbone {backbone.name} (weights {backbone.weights})",
        det_cfg.input_summary(),
        det_cfg.epochs_summary(train_cfg.epochs),
        train_cfg.batch_size,
        train_cfg.lr,
        train_cfg.seed,
    )


def train_checkpoint(
    det_cfg: DetectorConfigBase,
    train_cfg: TrainingConfig,
    data_dir: Path,
    out: Path,
    device: str = "cpu",
    show_progress: bool = True,
    per_run: bool = False,
) -> ModelCard:
    """What ``flowedge train`` and :func:`flowedge.train` run: check, describe, train, save;
    ``per_run``: ``data_dir`` holds one folder per run (:mod:`flowedge.flows.runs`)."""
    if not data_dir.is_dir():
        raise ConfigError(
            f"training data folder {data_dir} not found; give an MVTec category root (with "
            "train/good) or a folder of normal samples"
        )
    check_output_dir(out)
    runs = None
    if per_run:
        require_rebaselining(det_cfg.modality)
        runs = recipe_folders(data_dir, "training data folder", "run")
    else:
        recipes = looks_like_recipes(data_dir)
        if recipes:
            log.warning(
                "%s holds one data set per recipe (%s): training ONE model on all of them; "
                "'flowedge train --recipes' trains one per recipe, '--per-run' one on them "
                "standardised each with its own statistics",
                data_dir,
                ", ".join(recipes),
            )
    log_plan(det_cfg, train_cfg, list(runs.values()) if runs else [data_dir], device)
    trainer = importlib.import_module(det_cfg.trainer)
    return trainer.train(
        det_cfg, train_cfg, data_dir, out, device=device, show_progress=show_progress, runs=runs
    )


def _trained_on(card: ModelCard) -> str:
    """'40 images', '120 samples' (windows of recordings) or '12 cycles', from the card."""
    data = card.training["data"]
    if "n_cycles" in data:
        return f"{data['n_cycles']} cycles"
    return f"{data['n_images']} {'images' if card.input.kind == 'image' else 'samples'}"


def run(args: argparse.Namespace) -> int:
    det_cfg, train_cfg = build_configs(args)
    if not args.recipes:
        card = train_checkpoint(
            det_cfg,
            train_cfg,
            args.data_dir,
            args.out,
            args.device,
            not args.no_progress,
            per_run=args.per_run,
        )
        _report(card, args.out)
        if card.trained_per_run:
            print(
                f"trained on {len(card.trained_per_run)} runs, each standardised with its own "
                "statistics: the station's model section needs rebaseline: (samples or "
                "seconds; spread: true), and calibrate it with 'flowedge calibrate --per-run'"
            )
        return 0
    folders = recipe_folders(args.data_dir, "training data folder")
    check_output_dir(args.out)
    for recipe, folder in folders.items():
        log.info("recipe %s: training on %s", recipe, folder)
        out = args.out / recipe
        card = train_checkpoint(det_cfg, train_cfg, folder, out, args.device, not args.no_progress)
        _report(card, out, f"recipe {recipe}: ")
    models = "\n".join(f"    {recipe}: {{path: {args.out / recipe}}}" for recipe in folders)
    print(
        f"{len(folders)} recipe models; the station's section (add select and each model's "
        f"calibration or threshold):\nrecipes:\n  models:\n{models}"
    )
    return 0


def _report(card: ModelCard, out: Path, prefix: str = "") -> None:
    data = card.training["data"]
    loss = card.training["final_loss"]
    print(
        f"{prefix}model {card.model_id}: {card.detector} trained on {_trained_on(card)}, "
        f"{card.training['epochs']} epochs, final loss {'n/a' if loss is None else f'{loss:.4g}'}"
    )
    if data["n_skipped"]:
        print(
            f"skipped {data['n_skipped']} unusable sample(s): {', '.join(data['skipped'][:5])}{' ...' if data['n_skipped'] > 5 else ''}"
        )
    print(f"checkpoint: {out} (weights.safetensors, card.json)")
