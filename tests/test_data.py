"""Dataset readers and the synthetic generator, including real broken files."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from flowedge.core.card import ImageInput
from flowedge.core.errors import ConfigError, DataError
from flowedge.flows.data.datasets import (
    LoadSummary,
    Sample,
    iter_batches,
    labelled_samples,
    load_mask,
    training_samples,
)
from flowedge.modalities.image_synthetic import DEFECTS, generate_dataset

SPEC = ImageInput(height=32, width=32)


def _load_all(samples: list[Sample], root: Path) -> tuple[np.ndarray, LoadSummary]:
    summary = LoadSummary(root=str(root))
    batches = [batch for batch, _ in iter_batches(samples, SPEC, batch_size=4, summary=summary)]
    return np.concatenate(batches), summary


def _write_broken_files(folder: Path) -> list[str]:
    """A truncated JPEG, a PNG with a damaged body and an empty BMP."""
    folder.mkdir(parents=True, exist_ok=True)
    _, jpeg = cv2.imencode(".jpg", np.full((32, 32, 3), 128, np.uint8))
    (folder / "truncated.jpg").write_bytes(jpeg.tobytes()[:-200])
    _, png = cv2.imencode(".png", np.full((32, 32), 7, np.uint8))
    (folder / "damaged.png").write_bytes(png.tobytes()[:20] + b"\x00" * 40)
    (folder / "empty.bmp").write_bytes(b"")
    return ["damaged.png", "empty.bmp", "truncated.jpg"]


def test_generator_layout_and_masks(synthetic_dataset: Path) -> None:
    assert len(list((synthetic_dataset / "train" / "good").glob("*.png"))) == 16
    assert len(list((synthetic_dataset / "test" / "good").glob("*.png"))) == 4
    for defect in DEFECTS:
        images = sorted((synthetic_dataset / "test" / defect).glob("*.png"))
        assert len(images) == 2
        for image in images:
            mask = cv2.imread(
                str(synthetic_dataset / "ground_truth" / defect / f"{image.stem}_mask.png"),
                cv2.IMREAD_UNCHANGED,
            )
            assert mask.shape == (64, 64) and set(np.unique(mask)) == {0, 255}


def test_generator_is_deterministic(tmp_path: Path) -> None:
    a = generate_dataset(tmp_path / "a", n_train=2, n_test_good=1, n_test_defect=1, size=48, seed=3)
    b = generate_dataset(tmp_path / "b", n_train=2, n_test_good=1, n_test_defect=1, size=48, seed=3)
    c = generate_dataset(tmp_path / "c", n_train=2, n_test_good=1, n_test_defect=1, size=48, seed=4)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.png"))
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert (a / "train/good/000.png").read_bytes() != (c / "train/good/000.png").read_bytes()


def test_defects_change_pixels_inside_their_mask(tmp_path: Path) -> None:
    """A defect is visible where its mask says: the masked pixels differ from a good part's."""
    root = generate_dataset(
        tmp_path / "d", n_train=0, n_test_good=0, n_test_defect=3, size=64, seed=1
    )
    for defect in DEFECTS:
        for image_path in (root / "test" / defect).glob("*.png"):
            image = cv2.imread(str(image_path), cv2.IMREAD_GRAYSCALE).astype(float)
            mask = (
                cv2.imread(
                    str(root / "ground_truth" / defect / f"{image_path.stem}_mask.png"),
                    cv2.IMREAD_GRAYSCALE,
                )
                > 0
            )
            ring = cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool) & ~mask
            ring &= image > 60  # the part around the defect, not the dark table
            assert abs(image[mask].mean() - image[ring].mean()) > 10, (defect, image_path.name)


def test_training_samples_mvtec_root_uses_train_good(synthetic_dataset: Path) -> None:
    samples = training_samples(synthetic_dataset)
    assert len(samples) == 16
    assert all(
        s.path.parent == synthetic_dataset / "train" / "good" and s.label == 0 for s in samples
    )


def test_dataset_root_with_masks_is_not_taken_for_normal_images(synthetic_dataset: Path) -> None:
    """Several categories under one root: recursing would train on defects and masks."""
    with pytest.raises(DataError, match="not a folder of normal images"):
        training_samples(synthetic_dataset.parent)


def test_plain_folder_is_recursive_and_mixed_formats(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    (tmp_path / "line1" / "day2").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "a.png"), rng.integers(0, 256, (50, 70), dtype=np.uint8))  # gray
    cv2.imwrite(
        str(tmp_path / "line1" / "b.JPG"), rng.integers(0, 256, (90, 40, 3), dtype=np.uint8)
    )
    cv2.imwrite(
        str(tmp_path / "line1" / "day2" / "c.tif"),
        rng.integers(0, 65535, (33, 33), dtype=np.uint16),
    )
    (tmp_path / "notes.txt").write_text("not an image")
    samples = training_samples(tmp_path)
    assert [s.path.name for s in samples] == ["a.png", "b.JPG", "c.tif"]
    tensors, summary = _load_all(samples, tmp_path)
    assert tensors.shape == (3, 3, 32, 32) and summary.n_ok == 3 and summary.n_skipped == 0


def test_broken_files_are_skipped_counted_and_named(
    synthetic_dataset: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "normal"
    shutil.copytree(synthetic_dataset / "train" / "good", folder)
    broken = _write_broken_files(folder)
    samples = training_samples(folder)
    with caplog.at_level(logging.WARNING):
        tensors, summary = _load_all(samples, folder)
    assert tensors.shape[0] == 16 and summary.n_ok == 16 and summary.n_skipped == 3
    assert sorted(Path(name).name for name in summary.skipped) == broken
    for name in broken:
        assert name in caplog.text
    assert summary.to_dict()["skipped"] == summary.skipped


def test_threaded_loading_gives_the_same_batches(synthetic_dataset: Path) -> None:
    samples = training_samples(synthetic_dataset)
    serial = [b for b, _ in iter_batches(samples, SPEC, 5, LoadSummary(root="x"))]
    threaded = [b for b, _ in iter_batches(samples, SPEC, 5, LoadSummary(root="x"), num_workers=2)]
    np.testing.assert_array_equal(np.concatenate(serial), np.concatenate(threaded))


def test_folder_without_usable_images_names_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=str(tmp_path / "empty")):
        (tmp_path / "empty").mkdir()
        training_samples(tmp_path / "empty")
    broken = tmp_path / "broken"
    _write_broken_files(broken)
    with pytest.raises(DataError, match=rf"{broken}.*none of the 3"):
        _load_all(training_samples(broken), broken)
    with pytest.raises(ConfigError, match="not a directory"):  # a wrong path: exit 2
        training_samples(tmp_path / "missing")


def test_labelled_samples_and_masks(synthetic_dataset: Path) -> None:
    samples = labelled_samples(synthetic_dataset)
    assert sum(s.label == 0 for s in samples) == 4
    assert {s.defect for s in samples if s.label} == set(DEFECTS)
    assert all(s.mask_path is not None for s in samples if s.label)
    assert (
        labelled_samples(synthetic_dataset / "test") == samples
    )  # the test folder itself works too
    defect = next(s for s in samples if s.label)
    mask = load_mask(defect, SPEC)
    assert mask.shape == (32, 32) and mask.dtype == bool and mask.any()
    good = next(s for s in samples if not s.label)
    assert not load_mask(good, SPEC).any()
    assert load_mask(Sample(defect.path, defect.defect, None), SPEC) is None


def test_test_folder_needs_both_classes(synthetic_dataset: Path, tmp_path: Path) -> None:
    shutil.copytree(synthetic_dataset / "test" / "good", tmp_path / "test" / "good")
    with pytest.raises(DataError, match="defect subfolder"):
        labelled_samples(tmp_path)


def test_reads_real_mtd_layout(mtd_root: Path) -> None:
    samples = labelled_samples(mtd_root)
    assert {s.defect for s in samples} >= {"good", "crack", "blowhole"}
    assert all(s.mask_path is not None for s in samples if s.label)
    normal = training_samples(mtd_root)
    assert len(normal) > 700
    tensors, _ = _load_all(normal[:4], mtd_root)
    assert tensors.shape == (4, 3, 32, 32)
