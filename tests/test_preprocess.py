"""The one preprocessing: equal pixels give equal tensors whatever the container."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from flowedge.core.card import ImageInput
from flowedge.core.errors import BadInputError
from flowedge.modalities.image import MODALITY as IMAGE
from flowedge.modalities.image import decode_image, read_image, to_tensor

SPEC = ImageInput(height=32, width=48)


@pytest.fixture
def gray() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (40, 60), dtype=np.uint8)


def test_gray_equals_replicated_bgr(gray: np.ndarray) -> None:
    bgr = np.repeat(gray[:, :, None], 3, axis=2)
    np.testing.assert_allclose(to_tensor(gray, SPEC), to_tensor(bgr, SPEC), atol=1e-6)


def test_single_channel_3d_equals_2d(gray: np.ndarray) -> None:
    np.testing.assert_array_equal(to_tensor(gray[:, :, None], SPEC), to_tensor(gray, SPEC))


def test_bgra_ignores_alpha(gray: np.ndarray) -> None:
    bgr = np.random.default_rng(1).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    bgra = np.dstack([bgr, gray])
    np.testing.assert_array_equal(to_tensor(bgra, SPEC), to_tensor(bgr, SPEC))


def test_uint16_scaled_like_uint8(gray: np.ndarray) -> None:
    wide = gray.astype(np.uint16) * 257  # 255 -> 65535
    np.testing.assert_allclose(to_tensor(wide, SPEC), to_tensor(gray, SPEC), atol=1e-5)


def test_shape_dtype_and_normalisation() -> None:
    white = np.full((10, 10, 3), 255, np.uint8)
    tensor = to_tensor(white, SPEC)
    assert tensor.shape == (3, 32, 48) and tensor.dtype == np.float32
    expected = (1.0 - np.array(SPEC.mean)) / np.array(SPEC.std)
    np.testing.assert_allclose(tensor[:, 0, 0], expected, rtol=1e-6)


def test_bgr_is_converted_to_rgb() -> None:
    blue = np.zeros((8, 8, 3), np.uint8)
    blue[:, :, 0] = 255  # OpenCV order: B first
    tensor = to_tensor(blue, ImageInput(height=8, width=8, mean=(0, 0, 0), std=(1, 1, 1)))
    assert tensor[2].min() == 1.0 and tensor[0].max() == 0.0


def test_one_channel_spec(gray: np.ndarray) -> None:
    spec = ImageInput(height=16, width=16, channels=1, mean=(0.5,), std=(0.25,))
    bgr = np.repeat(gray[:, :, None], 3, axis=2)
    assert to_tensor(bgr, spec).shape == (1, 16, 16)
    np.testing.assert_allclose(to_tensor(bgr, spec), to_tensor(gray, spec)[:1], atol=1e-5)


def test_file_and_frame_paths_agree(tmp_path: Path) -> None:
    """The station gets frames, training reads files: lossless files give the same tensor."""
    frame = np.random.default_rng(2).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    path = tmp_path / "frame.png"
    cv2.imwrite(str(path), frame)
    np.testing.assert_array_equal(IMAGE.load(path, SPEC), to_tensor(frame, SPEC))
    np.testing.assert_array_equal(
        IMAGE.preprocess(path.read_bytes(), SPEC, "f"), IMAGE.load(path, SPEC)
    )


@pytest.mark.parametrize(
    "image, message",
    [
        (np.full((8, 8), np.nan, np.float32), "NaN"),
        (np.zeros((8, 8, 2), np.uint8), "channels"),
        (np.zeros((2, 8, 8, 3), np.uint8), "2-D or 3-D"),
    ],
)
def test_bad_arrays_are_refused(image: np.ndarray, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        to_tensor(image, SPEC, name="cam-1#7")


def test_truncated_jpeg_is_refused_with_its_name(tmp_path: Path) -> None:
    ok, data = cv2.imencode(".jpg", np.zeros((64, 64, 3), np.uint8))
    path = tmp_path / "cut.jpg"
    path.write_bytes(data.tobytes()[: len(data) // 2])
    with pytest.raises(BadInputError, match=r"cut\.jpg.*truncated"):
        read_image(path)


def test_garbage_and_empty_bytes_are_refused() -> None:
    with pytest.raises(BadInputError, match="empty"):
        decode_image(b"", name="x.png")
    with pytest.raises(BadInputError, match="not a decodable image"):
        decode_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, name="x.png")


STANDARDIZED = ImageInput(height=32, width=48, intensity="standardize")


def test_standardize_ignores_illumination_gain_and_offset(gray: np.ndarray) -> None:
    """A dimmer, lower-contrast exposure of the same part gives the same tensor."""
    dim = gray.astype(np.float32) / 255.0 * 0.6 + 0.1
    np.testing.assert_allclose(
        to_tensor(dim, STANDARDIZED), to_tensor(gray, STANDARDIZED), atol=1e-4
    )
    assert not np.allclose(to_tensor(dim, SPEC), to_tensor(gray, SPEC), atol=1e-2)


def test_standardize_gives_imagenet_brightness(gray: np.ndarray) -> None:
    tensor = to_tensor(
        gray,
        ImageInput(height=32, width=48, intensity="standardize", mean=(0, 0, 0), std=(1, 1, 1)),
    )
    assert tensor.mean() == pytest.approx(0.449, abs=1e-4)
    assert tensor.std() == pytest.approx(0.226, abs=1e-4)


def test_standardize_keeps_a_flat_frame_flat() -> None:
    """A lens cap or dark frame is not blown up into noise (it scores as whatever flat looks like)."""
    dark = np.full((20, 20), 3, np.uint8)
    tensor = to_tensor(dark, ImageInput(height=8, width=8, intensity="standardize"))
    assert np.isfinite(tensor).all() and np.ptp(tensor, axis=(1, 2)).max() < 1e-6
