"""Checkpoint round trip and the refusals that protect a station from the wrong model."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch

from flowedge.cli import main
from flowedge.core.card import CardError, ModelCard
from flowedge.core.errors import EXIT_MODEL, EXIT_USAGE, ConfigError
from flowedge.flows.checkpoint import (
    CARD_FILE,
    WEIGHTS_FILE,
    build_detector_from_card,
    load_checkpoint,
    save_checkpoint,
)


@pytest.fixture
def checkpoint_copy(tiny_checkpoint: Path, tmp_path: Path) -> Path:
    """A private copy to tamper with."""
    return Path(shutil.copytree(tiny_checkpoint, tmp_path / "model"))


def _edit_card(folder: Path, edit) -> None:
    data = json.loads((folder / CARD_FILE).read_text())
    edit(data)
    (folder / CARD_FILE).write_text(json.dumps(data))


def test_round_trip_gives_identical_scores(tiny_checkpoint: Path, tmp_path: Path) -> None:
    detector, card = load_checkpoint(tiny_checkpoint)
    batch = torch.randn(
        3,
        3,
        card.input.height,
        card.input.width,
        generator=torch.Generator().manual_seed(0),
    )
    with torch.no_grad():
        scores, maps = detector(batch)
    again = save_checkpoint(detector, card, tmp_path / "again")
    assert again.weights_sha256 == card.weights_sha256  # same tensors, same bytes
    reloaded, card2 = load_checkpoint(tmp_path / "again" / CARD_FILE)
    with torch.no_grad():
        scores2, maps2 = reloaded(batch)
    torch.testing.assert_close(scores2, scores, rtol=0, atol=0)
    torch.testing.assert_close(maps2, maps, rtol=0, atol=0)
    assert maps.shape == (3, card.input.height, card.input.width)
    assert card2.input == card.input and card2.detector_params == card.detector_params


def test_card_records_provenance(tiny_checkpoint: Path) -> None:
    from flowedge import __version__

    card = ModelCard.load(tiny_checkpoint / CARD_FILE)
    assert card.flowedge_version == __version__
    assert card.created_utc.endswith("Z") and len(card.weights_sha256) == 64
    assert card.detector == "csflow" and card.detector_params["image_size"] == card.input.height
    assert card.backbone["name"] and "out_indices" in card.backbone
    data = card.training["data"]
    assert data["n_images"] == 16 and data["n_skipped"] == 0
    assert card.training["epochs"] >= 1 and card.training["final_loss"] is not None


def test_refuses_another_card_format(checkpoint_copy: Path) -> None:
    _edit_card(checkpoint_copy, lambda d: d.update(card_format="1.0"))
    with pytest.raises(CardError, match="format 1.0 is not readable"):
        load_checkpoint(checkpoint_copy)


def test_refuses_edited_preprocessing(checkpoint_copy: Path) -> None:
    _edit_card(checkpoint_copy, lambda d: d["input"].update(interpolation="linear"))
    with pytest.raises(CardError, match="input spec was changed"):
        load_checkpoint(checkpoint_copy)


def test_refuses_a_preprocessing_step_it_does_not_know(checkpoint_copy: Path) -> None:
    """A card from a newer flowedge naming an unknown step is refused, never run without it."""

    def edit(data: dict) -> None:
        data["input"]["intensity"] = "clahe"
        data["input_digest"] = ""

    _edit_card(checkpoint_copy, edit)
    with pytest.raises(CardError, match="input.intensity 'clahe' is not one of raw, standardize"):
        load_checkpoint(checkpoint_copy)


def test_refuses_preprocessing_edited_together_with_its_digest(checkpoint_copy: Path) -> None:
    def edit(data: dict) -> None:
        data["input"]["interpolation"] = "linear"
        data["input_digest"] = ""

    _edit_card(checkpoint_copy, edit)
    with pytest.raises(CardError, match="differs from what this detector needs"):
        load_checkpoint(checkpoint_copy)


def test_refuses_a_card_whose_score_is_not_the_detectors(checkpoint_copy: Path) -> None:
    """A threshold calibrated on one score means nothing for another: never load silently."""
    _edit_card(checkpoint_copy, lambda d: d["score"].update(kind="max_z2"))
    with pytest.raises(
        CardError, match="the card's score .*max_z2.* differs from what this detector"
    ):
        load_checkpoint(checkpoint_copy)


def test_refuses_weights_that_do_not_match_the_hash(checkpoint_copy: Path) -> None:
    weights = checkpoint_copy / WEIGHTS_FILE
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(CardError, match=rf"{WEIGHTS_FILE}: sha256 .* does not match the card"):
        load_checkpoint(checkpoint_copy)


@pytest.mark.parametrize("name", [WEIGHTS_FILE, CARD_FILE])
def test_refuses_missing_files_by_name(checkpoint_copy: Path, name: str) -> None:
    (checkpoint_copy / name).unlink()
    with pytest.raises(CardError, match=rf"{name} missing") as info:
        load_checkpoint(checkpoint_copy)
    assert info.value.exit_code == EXIT_MODEL


def test_refuses_absent_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found") as info:
        load_checkpoint(tmp_path / "nothing")
    assert info.value.exit_code == EXIT_USAGE  # a path that does not exist


def test_detector_is_built_from_the_card_alone(tiny_checkpoint: Path) -> None:
    """No training configuration is needed for inference: the card's detector section is enough."""
    card = ModelCard.load(tiny_checkpoint / CARD_FILE)
    card.training = {}
    detector = build_detector_from_card(card)
    assert detector.name == card.detector and detector.input_spec() == card.input
    assert detector.map_shape() == (card.input.height, card.input.width)


def test_refuses_detector_parameters_of_another_detector(checkpoint_copy: Path) -> None:
    _edit_card(checkpoint_copy, lambda d: d["detector_params"].update(pca_variance=0.9))
    with pytest.raises(CardError, match="pca_variance: unknown key"):
        load_checkpoint(checkpoint_copy)


def test_checkpoint_files_are_readable_by_the_service_group(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    detector, card = load_checkpoint(tiny_checkpoint)
    umask = os.umask(0o077)  # a trainer's private umask must not lock the station out
    try:
        save_checkpoint(detector, card, tmp_path / "private" / "model")
    finally:
        os.umask(umask)
    folder = tmp_path / "private" / "model"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    for name in (WEIGHTS_FILE, CARD_FILE):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o644


def _as_2x_card(data: dict) -> None:
    """Rewrite a 3.0 card dict in place as flowedge 2.x wrote it."""
    spec = data.pop("input")
    spec.pop("kind")
    spec.update(modality="image", extra={})
    data.pop("input_digest")
    data["preprocess"] = spec
    data["preprocess_digest"] = hashlib.sha256(
        json.dumps(spec, sort_keys=True).encode()
    ).hexdigest()[:16]
    data["score"]["map_source"] = "scale0"
    data["card_format"] = "2.0"


def test_a_2x_checkpoint_is_refused_then_upgraded(checkpoint_copy: Path, capsys) -> None:
    original = ModelCard.load(checkpoint_copy / CARD_FILE)
    _edit_card(checkpoint_copy, _as_2x_card)
    with pytest.raises(CardError, match="flowedge upgrade-card"):
        load_checkpoint(checkpoint_copy)
    assert main(["upgrade-card", str(checkpoint_copy)]) == 0
    _, card = load_checkpoint(checkpoint_copy)
    assert card.to_dict() == original.to_dict()
    assert main(["upgrade-card", str(checkpoint_copy / CARD_FILE)]) == 0  # already 3.0: no-op
    assert main(["upgrade-card", str(checkpoint_copy / "model.onnx")]) == 2
    assert "export them again" in capsys.readouterr().err


def test_upgrade_refuses_a_2x_card_edited_after_training(checkpoint_copy: Path, capsys) -> None:
    def edit(data: dict) -> None:
        _as_2x_card(data)
        data["preprocess"]["interpolation"] = "linear"

    _edit_card(checkpoint_copy, edit)
    assert main(["upgrade-card", str(checkpoint_copy)]) == EXIT_MODEL
    assert "changed after training" in capsys.readouterr().err
