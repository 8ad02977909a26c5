"""The modality registry and the image modality's contract: list, load, fake, draw, skip."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from flowedge.core.card import INPUT_KINDS, AudioInput, ImageInput
from flowedge.core.errors import BadInputError, ConfigError
from flowedge.modalities import MODALITIES, get_modality, register_modality
from flowedge.modalities.audio import AudioLimits
from flowedge.modalities.batches import load_batches
from flowedge.modalities.image import MODALITY as IMAGE
from flowedge.modalities.image import ImageModality
from flowedge.modalities.image_decode import DecodeLimits

SPEC = ImageInput(height=32, width=40)


def test_registry_gives_the_image_modality_and_names_the_known_ones() -> None:
    assert "image" in MODALITIES and get_modality("image") is IMAGE
    with pytest.raises(
        ConfigError,
        match=r"no modality 'video' in this flowedge \(available: audio, image, series",
    ):
        get_modality("video")


def test_a_spec_of_another_kind_is_refused_and_nothing_is_registered() -> None:
    with pytest.raises(ValueError, match="ImageInput.kind is 'image'"):
        register_modality("thermal", ImageModality(), ImageInput)
    assert "thermal" not in MODALITIES and "thermal" not in INPUT_KINDS


def test_register_modality_is_one_call_for_the_modality_and_the_card() -> None:
    register_modality("image", "flowedge.modalities.image", ImageInput)  # the same: a no-op
    with pytest.raises(ValueError, match="modality 'image' is registered twice"):
        register_modality("image", ImageModality(), ImageInput)
    other_spec = type("OtherAudioInput", (AudioInput,), {})
    with pytest.raises(ValueError, match="input kind 'audio' is registered twice"):
        register_modality("audio", "flowedge.modalities.audio", other_spec)
    assert INPUT_KINDS["audio"] is AudioInput and MODALITIES["audio"] == "flowedge.modalities.audio"


def test_the_station_hooks_default_to_nothing_extra() -> None:
    """Image decisions carry the source's context as it is, and no explanation."""
    context = {"event": {"label": "lift"}}
    fields = IMAGE.decision_fields(context, np.ones((2, 2)), None, SPEC)
    assert fields == context and fields is not context
    assert IMAGE.decision_fields(None, None, None, SPEC) == {}
    tensor = np.zeros(SPEC.tensor_shape, np.float32)
    assert IMAGE.explain(tensor, np.ones((32, 40)), 9.0, SPEC, lambda b: b.sum(), 4) is None


def test_limits_come_from_the_stations_per_file_settings() -> None:
    assert IMAGE.limits(1000, 2000) == DecodeLimits(1000, 2000)
    assert get_modality("audio").limits(1000, 2000) == AudioLimits(max_bytes=1000)
    assert get_modality("series").limits(1000, 2000) is None  # its sources deliver cut cycles


def test_list_files_finds_only_this_modalitys_files(tmp_path: Path) -> None:
    for name in ("b.png", "a.JPG", "sub/c.bmp"):  # listing goes by name, it decodes nothing
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "folder.png").mkdir()
    assert [p.name for p in IMAGE.list_files(tmp_path, recursive=False)] == ["a.JPG", "b.png"]
    assert [p.relative_to(tmp_path).as_posix() for p in IMAGE.list_files(tmp_path)] == [
        "a.JPG",
        "b.png",
        "sub/c.bmp",
    ]


def test_preprocess_accepts_a_frame_bytes_or_a_path_alike(tmp_path: Path) -> None:
    frame = np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    path = tmp_path / "f.png"
    cv2.imwrite(str(path), frame)
    tensors = [IMAGE.preprocess(p, SPEC, "f") for p in (frame, path.read_bytes(), path)]
    assert tensors[0].shape == SPEC.tensor_shape and tensors[0].dtype == np.float32
    for tensor in tensors[1:]:
        np.testing.assert_array_equal(tensor, tensors[0])
    with pytest.raises(BadInputError, match="image cam-1: expected a 2-D or 3-D array, got list"):
        IMAGE.preprocess([1, 2], SPEC, "cam-1")


@pytest.mark.parametrize("decision, score", [("ANOMALY", 3.5), ("OK", 0.2), ("ERROR", None)])
def test_render_draws_overlay_banner_and_colour_bar(decision: str, score) -> None:
    tensor = IMAGE.synthetic_batch(SPEC, 1, 0)[0]
    amap = np.linspace(0, 1, 32 * 40, dtype=np.float32).reshape(SPEC.map_shape)
    picture = IMAGE.render(tensor, amap, SPEC, score, decision, 1.0)
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    assert picture.shape[0] > 256 and picture.shape[1] > 320  # enlarged, plus banner and bar
    banners = {d: IMAGE.render(tensor, amap, SPEC, 1.0, d, 1.0)[2, -2] for d in ("ANOMALY", "OK")}
    assert not np.array_equal(banners["ANOMALY"], banners["OK"])  # the decision shows in colour


def test_synthetic_batch_is_normal_then_defective_and_reproducible() -> None:
    batch = IMAGE.synthetic_batch(SPEC, 2, 4, seed=3)
    assert batch.shape == (6, *SPEC.tensor_shape) and np.isfinite(batch).all()
    np.testing.assert_array_equal(batch, IMAGE.synthetic_batch(SPEC, 2, 4, seed=3))


def test_synthesize_writes_an_mvtec_layout(tmp_path: Path) -> None:
    root = IMAGE.synthesize(tmp_path / "part", n_train=2, n_test_good=1, n_test_defect=1, size=32)
    assert len(IMAGE.list_files(root / "train" / "good")) == 2
    assert len(IMAGE.list_files(root / "ground_truth")) == 4  # one mask per defect type


def test_load_batches_skips_bad_files_and_keeps_batches_full(tmp_path: Path) -> None:
    good = np.zeros((8, 8), np.uint8)
    paths = []
    for i in range(7):
        path = tmp_path / f"{i}.png"
        if i in (1, 4):
            path.write_bytes(b"broken")
        else:
            cv2.imwrite(str(path), good)
        paths.append(path)
    skipped: list[Path] = []
    batches = list(
        load_batches(paths, lambda p: IMAGE.load(p, SPEC), 2, lambda p, e: skipped.append(p))
    )
    assert [len(kept) for kept, _ in batches] == [2, 2, 1]
    assert [p.name for p in skipped] == ["1.png", "4.png"]
    assert all(b.shape[1:] == SPEC.tensor_shape for _, b in batches)
