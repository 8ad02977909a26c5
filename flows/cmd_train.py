"""``flowedge train DATA_DIR --out DIR``: train a detector and write a checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from flowedge.core.card import INTENSITIES
from flowedge.core.errors import ConfigError, DataError
from flowedge.core.validation import format_validation_error
from flowedge.flows.config import (
    DETECTOR_KINDS,
    ImageDetectorConfig,
    TrainingConfig,
    TrainingSections,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "data_dir",
        type=Path,
        metavar="DATA_DIR",
        help="MVTec category root (uses train/good) or a folder of normal images",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="checkpoint directory to write (weights.safetensors + card.json)",
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
    parser.add_argument("--seed", type=int, help="overrides training.seed")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")


def _sections(path: Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The raw 'detector' and 'training' mappings of the config file (empty without one)."""
    if path is None:
        return {}, {}
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
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


def build_configs(args: argparse.Namespace) -> tuple[ImageDetectorConfig, TrainingConfig]:
    """Config file sections with the command-line flags on top, validated together."""
    detector, training = _sections(args.config)
    overrides = {
        ("detector", "kind"): args.detector,
        ("detector", "image_size"): args.image_size,
        ("detector", "intensity"): args.intensity,
        ("training", "epochs"): args.epochs,
        ("training", "batch_size"): args.batch_size,
        ("training", "seed"): args.seed,
    }
    for (section, key), value in overrides.items():
        if value is not None:
            (detector if section == "detector" else training)[key] = value
    if args.backbone_weights is not None:
        backbone = detector.get("backbone") or {}
        # a malformed section stays as it is, so validation reports it
        detector["backbone"] = (
            {**backbone, "weights": args.backbone_weights}
            if isinstance(backbone, dict)
            else backbone
        )
    source = str(args.config) if args.config else "command line"
    try:
        sections = TrainingSections.model_validate({"detector": detector, "training": training})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None
    return sections.detector, sections.training


def run(args: argparse.Namespace) -> int:
    det_cfg, train_cfg = build_configs(args)
    if not args.data_dir.is_dir():
        raise DataError(f"training data folder {args.data_dir} not found")
    from flowedge.flows.train import train  # heavy: torch, timm

    card = train(
        det_cfg,
        train_cfg,
        args.data_dir,
        args.out,
        device=args.device,
        show_progress=not args.no_progress,
    )
    data = card.training["data"]
    loss = card.training["final_loss"]
    print(
        f"model {card.model_id}: {card.detector} trained on {data['n_images']} images, "
        f"{card.training['epochs']} epochs, final loss {'n/a' if loss is None else f'{loss:.4g}'}"
    )
    if data["n_skipped"]:
        print(
            f"skipped {data['n_skipped']} unreadable image(s): {', '.join(data['skipped'][:5])}{' ...' if data['n_skipped'] > 5 else ''}"
        )
    print(f"checkpoint: {args.out} (weights.safetensors, card.json)")
    return 0
