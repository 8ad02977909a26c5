"""``flowedge upgrade-card CHECKPOINT_DIR``: rewrite a 2.x checkpoint card as format 3.0.

Card 3.0 replaced the image-only ``preprocess`` section with the
modality-discriminated ``input`` section. The weights do not change, so a
checkpoint only needs its card.json rewritten; ONNX graphs and TensorRT engines
carry the card inside them and are exported again from the upgraded checkpoint.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from flowedge.core.backend_table import export_commands, model_file_suffixes
from flowedge.core.card import (
    CARD_FORMAT,
    UPGRADABLE_FORMAT,
    CardError,
    ModelCard,
    read_card_json,
)
from flowedge.core.errors import ConfigError

log = logging.getLogger(__name__)

CARD_FILE = "card.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint", type=Path, help="checkpoint directory (or its card.json) with a 2.x card"
    )


def _card_path(path: Path) -> Path:
    if path.suffix.lower() in model_file_suffixes():
        raise ConfigError(
            f"{path}: graphs and engines carry their card inside; upgrade the checkpoint they "
            f"came from, then export them again ({', '.join(export_commands())})"
        )
    return path if path.name == CARD_FILE else path / CARD_FILE


def upgrade_2x(data: dict[str, Any], source: str) -> dict[str, Any]:
    """The 3.0 form of a 2.x card: ``preprocess`` -> ``input`` (kind image), ``map_source`` and
    the preprocessing digest dropped (the 3.0 digest is written on save)."""
    old = data.get("preprocess")
    if not isinstance(old, dict):
        raise CardError(f"{source}: 2.x card without a 'preprocess' object; retrain the model")
    recorded = data.get("preprocess_digest")
    actual = hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:16]
    if recorded and recorded != actual:
        raise CardError(
            f"{source}: the preprocessing was changed after training (digest {actual} != "
            f"recorded {recorded}); the card cannot be trusted: retrain instead"
        )
    if old.get("modality", "image") != "image" or old.get("extra"):
        raise CardError(
            f"{source}: 2.x preprocessing for modality {old.get('modality')!r} with extra "
            f"parameters {old.get('extra')} has no 3.0 equivalent; retrain the model"
        )
    upgraded = {k: v for k, v in data.items() if k not in ("preprocess", "preprocess_digest")}
    upgraded["input"] = {
        "kind": "image",
        **{k: v for k, v in old.items() if k not in ("modality", "extra")},
    }
    score = data.get("score")
    if not isinstance(score, dict):
        raise CardError(f"{source}: 2.x card without a 'score' object; retrain the model")
    upgraded["score"] = {k: v for k, v in score.items() if k != "map_source"}
    upgraded["card_format"] = CARD_FORMAT
    return upgraded


def run(args: argparse.Namespace) -> int:
    path = _card_path(args.checkpoint)
    if not args.checkpoint.exists():
        raise ConfigError(
            f"checkpoint {args.checkpoint} not found; give the directory 'flowedge train' wrote"
        )
    data = read_card_json(path)
    fmt = str(data.get("card_format", "?")) if isinstance(data, dict) else "?"
    if fmt.split(".")[0] == CARD_FORMAT.split(".")[0]:
        log.info("%s is already card format %s; nothing to do", path, fmt)
        return 0
    if fmt.split(".")[0] != UPGRADABLE_FORMAT:
        raise CardError(
            f"{path}: card format {fmt} cannot be upgraded (only {UPGRADABLE_FORMAT}.x); "
            "retrain the model with this flowedge"
        )
    card = ModelCard.from_dict(upgrade_2x(data, str(path)), source=str(path))
    card.save(path)
    log.info("%s upgraded from card format %s to %s (%s)", path, fmt, CARD_FORMAT, card.model_id)
    return 0
