"""Checkpoints: ``weights.safetensors`` plus ``card.json``, and nothing that runs code.

safetensors holds only tensors (no pickle), and the card binds them by hash, so a
station loads exactly the model that was trained and evaluated or refuses with a
message that says which file is wrong. The full state dict (backbone included)
is saved, so loading never needs the original backbone weights or a download.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import torch
from pydantic import TypeAdapter, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from flowedge import __version__
from flowedge.core.card import CardError, ModelCard, sha256_file
from flowedge.core.errors import ConfigError
from flowedge.core.validation import format_validation_error
from flowedge.flows.config import DetectorConfig
from flowedge.flows.detectors.base import Detector

log = logging.getLogger(__name__)

WEIGHTS_FILE = "weights.safetensors"
CARD_FILE = "card.json"
# the station runs as its own user in the service group: it must read what training wrote,
# whatever the trainer's umask
FILE_MODE = 0o644
DIR_MODE = 0o755


def save_checkpoint(detector: Detector, card: ModelCard, out_dir: str | Path) -> ModelCard:
    """Write weights and card to ``out_dir``; returns the card as written (hash, version, time)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        out_dir.mkdir(parents=True)
        os.chmod(out_dir, DIR_MODE)
    # clone: safetensors refuses tensors that share storage (e.g. tied or viewed parameters)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in detector.state_dict().items()}
    weights = out_dir / WEIGHTS_FILE
    # one metadata key only: safetensors writes several in random order, and equal weights
    # must give an equal file hash (reproducible training, re-saved checkpoints)
    save_file(state, str(weights), metadata={"format": "pt"})
    os.chmod(weights, FILE_MODE)
    written = replace(
        card,
        weights_sha256=sha256_file(weights),
        flowedge_version=__version__,
        created_utc=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    written.save(out_dir / CARD_FILE)
    os.chmod(out_dir / CARD_FILE, FILE_MODE)
    log.info("checkpoint %s written to %s", written.model_id, out_dir)
    return written


def torch_device(name: str) -> torch.device:
    """Parse a device name, refusing a CUDA device this machine does not have (exit 2)."""
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"device {name!r} is not a device name; use cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {name!r} asked for, but torch sees no CUDA GPU here; use --device cpu"
        )
    return device


def checkpoint_dir(path: str | Path) -> Path:
    """Accept the checkpoint directory or either of its two files."""
    path = Path(path)
    return path.parent if path.name in (WEIGHTS_FILE, CARD_FILE) else path


def build_detector_from_card(card: ModelCard, source: str = "card") -> Detector:
    """The detector the card describes, with untrained weights: ready for a state dict.

    Only the card is needed (its detector parameters and input spec), no training
    configuration; the backbone is built empty because the weights file carries it too.
    """
    try:
        config = TypeAdapter(DetectorConfig).validate_python(
            {"kind": card.detector, **card.detector_params}
        )
    except ValidationError as exc:
        raise CardError(
            f"{format_validation_error(exc, source)}\nthe card's detector parameters do not fit "
            "this flowedge: retrain, or use the flowedge version that wrote the card"
        ) from None
    if hasattr(config, "backbone"):  # series detectors have none
        config.backbone.weights = "none"
    from flowedge.flows.detectors import build_detector  # heavy (timm): once the card is valid

    try:
        detector = build_detector(config)
    except ConfigError as exc:
        raise CardError(f"{source}: {exc}") from None
    rebuilt = detector.input_spec()
    if rebuilt.digest() != card.input.digest():
        raise CardError(
            f"{source}: the card's preprocessing ({card.input}) differs from what "
            f"this detector needs ({rebuilt}); the card was edited: retrain instead"
        )
    if detector.score_spec() != card.score:
        # a calibrated threshold is a value of the card's score: another score makes it meaningless
        raise CardError(
            f"{source}: the card's score ({card.score}) differs from what this detector "
            f"computes ({detector.score_spec()}); the card was edited or written by another "
            "flowedge version: retrain, or use the version that wrote it"
        )
    return detector


def load_checkpoint(path: str | Path, device: str = "cpu") -> tuple[Detector, ModelCard]:
    """Rebuild the detector described by the card and load its verified weights.

    Raises :class:`ConfigError` when there is no such directory, :class:`CardError` for a
    missing file, a card of another format, a preprocessing spec changed since training, or
    weights that do not match the card.
    """
    folder = checkpoint_dir(path)
    if not folder.is_dir():
        raise ConfigError(
            f"checkpoint {folder} not found; give the directory written by 'flowedge train'"
        )
    missing = [name for name in (CARD_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
    if missing:
        raise CardError(f"checkpoint {folder} is incomplete: {' and '.join(missing)} missing")
    card = ModelCard.load(folder / CARD_FILE)
    weights = folder / WEIGHTS_FILE
    actual = sha256_file(weights)
    if actual != card.weights_sha256:
        raise CardError(
            f"{weights}: sha256 {actual[:12]}... does not match the card "
            f"({card.weights_sha256[:12] or 'none'}...); the weights were replaced or damaged: "
            "copy the checkpoint directory again as a whole"
        )
    detector = build_detector_from_card(card, source=str(folder / CARD_FILE))
    try:
        state = load_file(str(weights), device="cpu")
        detector.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError) as exc:
        raise CardError(f"{weights}: weights do not fit the detector in the card: {exc}") from exc
    detector.to(torch_device(device)).eval()
    return detector, card
