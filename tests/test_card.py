"""Model card 3.0: every input kind round-trips, and a damaged card is refused by name."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from flowedge.core import metadata
from flowedge.core.card import (
    INPUT_KINDS,
    AudioInput,
    CardError,
    ImageInput,
    InputSpec,
    ModelCard,
    ScoreSpec,
    SeriesInput,
    register_input_kind,
)
from flowedge.core.engine_meta import read_meta
from flowedge.core.errors import EXIT_MODEL

SERIES = SeriesInput(
    signals=("torque_1", "speed_1"), units=("Nm", "rad/s"), rate_hz=100.0, length=64,
    mean=(0.5, 0.0), std=(2.0, 1.5),
)  # fmt: skip
INPUTS = [ImageInput(height=32, width=48, channels=1), AudioInput(duration_s=2.0), SERIES]


def card_with(spec) -> ModelCard:
    return ModelCard("standin", {"a": 1}, {"name": "conv"}, spec, ScoreSpec("sum_z2"), weights_sha256="ab" * 32)  # fmt: skip


@pytest.mark.parametrize("spec", INPUTS, ids=lambda s: s.kind)
def test_card_round_trips_every_input_kind(spec, tmp_path: Path) -> None:
    card = card_with(spec)
    card.save(tmp_path / "card.json")
    loaded = ModelCard.load(tmp_path / "card.json")
    assert loaded.input == spec and type(loaded.input) is type(spec)
    assert loaded.input_digest == spec.digest() and loaded.to_dict() == card.to_dict()
    assert json.loads(card.to_json())["input"]["kind"] == spec.kind


def test_shapes_follow_the_modality() -> None:
    image, audio, series = INPUTS
    assert image.tensor_shape == (1, 32, 48) and image.map_shape == (32, 48)
    assert audio.tensor_shape == (1, 128, 1 + 32000 // 512) and audio.map_shape == (128, 63)
    assert series.tensor_shape == (2, 64) == series.map_shape


@dataclass(frozen=True)
class PressureInput(InputSpec):
    """A kind this flowedge does not know until it is registered."""

    kind: str = field(default="pressure", init=False)
    steps: int = 8

    @property
    def tensor_shape(self) -> tuple[int, ...]:
        return (self.steps,)

    @property
    def map_shape(self) -> tuple[int, ...]:
        return (self.steps,)


def test_a_registered_input_kind_round_trips_and_is_refused_before(tmp_path: Path) -> None:
    card_with(PressureInput(steps=5)).save(tmp_path / "card.json")
    try:
        with pytest.raises(CardError, match="input.kind 'pressure' is not one of image"):
            ModelCard.load(tmp_path / "card.json")
        register_input_kind("pressure", PressureInput)
        register_input_kind("pressure", PressureInput)  # the same again: a no-op
        assert ModelCard.load(tmp_path / "card.json").input == PressureInput(steps=5)
        with pytest.raises(ValueError, match="'pressure' is registered twice"):
            register_input_kind("pressure", type("Other", (PressureInput,), {}))
        with pytest.raises(ValueError, match=r"PressureInput.kind is 'pressure'"):
            register_input_kind("vibration", PressureInput)
    finally:
        INPUT_KINDS.pop("pressure", None)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ImageInput(channels=2), "channels 2 must be 1 or 3"),
        (lambda: AudioInput(f_max=9000.0), "f_max"),
        (lambda: AudioInput(channels="left"), "'mix' or a channel index"),
        (
            lambda: SeriesInput(signals=("a", "b"), units=("A",), mean=(0, 0), std=(1, 1)),
            "one entry per signal",
        ),  # fmt: skip
        (
            lambda: SeriesInput(signals=("a",), units=("A",), mean=(0,), std=(0,)),
            "std must be positive",
        ),  # fmt: skip
    ],
)
def test_input_specs_refuse_impossible_values(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def _write(tmp_path: Path, content) -> Path:
    path = tmp_path / "card.json"
    path.write_text(json.dumps(content), encoding="utf-8")
    return path


def _valid() -> dict:
    return card_with(ImageInput()).to_dict()


@pytest.mark.parametrize(
    "content, message",
    [
        ([1, 2], "a model card is a JSON object, this is list"),
        (None, "a model card is a JSON object, this is NoneType"),
        ({**_valid(), "weights_sha256": None}, "'weights_sha256' must be a JSON string"),
        (
            {k: v for k, v in _valid().items() if k not in ("input", "score")},
            "missing key 'input'; missing key 'score'",
        ),  # fmt: skip
        ({**_valid(), "colour": "red"}, "unknown key 'colour'"),
        ({**_valid(), "input": {"kind": "video"}}, "input.kind 'video' is not one of"),
        ({**_valid(), "input": {"kind": "image", "height": "big"}}, "malformed model card"),
        ({**_valid(), "score": {"kind": "x", "map_source": "scale0"}}, "malformed model card"),
    ],
)
def test_malformed_card_is_a_card_error_naming_the_file(tmp_path: Path, content, message) -> None:
    path = _write(tmp_path, content)
    with pytest.raises(CardError, match=message) as info:
        ModelCard.load(path)
    assert str(path) in str(info.value) and info.value.exit_code == EXIT_MODEL


def test_a_2x_card_is_refused_naming_the_converter(tmp_path: Path) -> None:
    path = _write(tmp_path, {**_valid(), "card_format": "2.0"})
    with pytest.raises(CardError, match=r"format 2\.0 .*'flowedge upgrade-card CHECKPOINT_DIR'"):
        ModelCard.load(path)
    with pytest.raises(CardError, match="re-export or retrain"):
        ModelCard.load(_write(tmp_path, {**_valid(), "card_format": "4.0"}))


def test_broken_onnx_metadata_is_a_card_error() -> None:
    broken = "metadata entry '{}' is not valid JSON"
    with pytest.raises(CardError, match=broken.format(metadata.CARD_KEY)):
        metadata.card_from_metadata({metadata.CARD_KEY: "{not json"}, "model.onnx")
    with pytest.raises(CardError, match=broken.format(metadata.LATENTS_KEY)):
        metadata.json_entry({metadata.LATENTS_KEY: "[z0"}, metadata.LATENTS_KEY, "model.onnx")
    with pytest.raises(CardError, match="model.onnx: a model card is a JSON object, this is list"):
        metadata.card_from_metadata({metadata.CARD_KEY: "[1]"}, "model.onnx")


@pytest.mark.parametrize(
    "content",
    [
        None,
        [1],
        {"profile": [1, 2]},
        {"profile": {"min": 1}, "card": None},
        {"profile": {"min": 9, "opt": 1}, "card": {}},
    ],  # fmt: skip
)
def test_broken_engine_metadata_is_a_card_error(tmp_path: Path, content) -> None:
    engine = tmp_path / "model.engine"
    (tmp_path / "model.engine.json").write_text(json.dumps(content), encoding="utf-8")
    with pytest.raises(CardError, match="rebuild the engine") as info:
        read_meta(engine)
    assert "model.engine.json" in str(info.value)
