"""INT8 calibration: the pure-Python batch reader and cache, and the TensorRT calibrator."""

from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest

from flowedge.calibration.int8 import CalibrationBatches, CalibrationCache, make_int8_calibrator
from flowedge.core.card import ImageInput
from flowedge.core.errors import ConfigError, DataError

SPEC = ImageInput(height=32, width=32)
HAS_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(7):
        cv2.imwrite(
            str(tmp_path / f"{i:02d}.png"), rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
        )
    (tmp_path / "99.png").write_bytes(b"not an image")
    return tmp_path


def test_batches_full_preprocessed_and_skip_bad_files(images) -> None:
    reader = CalibrationBatches(images, SPEC, batch_size=3, input_shape=(3, 32, 32))
    batches = list(reader)
    assert len(batches) == 2  # 7 readable images: 2 full batches, 1 dropped
    assert all(b.shape == (3, 3, 32, 32) and b.dtype == np.float32 for b in batches)
    assert batches[0].flags["C_CONTIGUOUS"] and reader.nbytes == batches[0].nbytes
    assert reader.skipped == [str(images / "99.png")]


def test_batches_refuse_wrong_shape_and_too_few_images(images) -> None:
    with pytest.raises(ConfigError, match="differs from the model card"):
        CalibrationBatches(images, SPEC, batch_size=2, input_shape=(3, 64, 64))
    with pytest.raises(DataError, match="at least one full batch"):
        CalibrationBatches(images, SPEC, batch_size=100, input_shape=(3, 32, 32))


def test_cache_reused_only_for_the_same_images(images, tmp_path_factory) -> None:
    cache_path = tmp_path_factory.mktemp("cache") / "model.engine.int8cache"
    reader = CalibrationBatches(images, SPEC, batch_size=3, input_shape=(3, 32, 32))
    cache = CalibrationCache(cache_path, reader.fingerprint())
    assert cache.read() is None
    cache.write(b"ranges")
    assert CalibrationCache(cache_path, reader.fingerprint()).read() == b"ranges"
    other = CalibrationBatches(images, SPEC, batch_size=2, input_shape=(3, 32, 32))
    assert CalibrationCache(cache_path, other.fingerprint()).read() is None


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed: the refusal path cannot be tested")
def test_clear_error_without_tensorrt(images, tmp_path) -> None:
    with pytest.raises(ConfigError, match="needs TensorRT"):
        make_int8_calibrator(images, SPEC, tmp_path / "c.cache", 3, (3, 32, 32))


@pytest.mark.skipif(
    not HAS_TRT, reason="tensorrt not installed (GPU station extra 'flowedge[tensorrt]')"
)
def test_tensorrt_calibrator_feeds_device_batches(images, tmp_path) -> None:
    import tensorrt as trt

    if not hasattr(trt, "IInt8EntropyCalibrator2"):
        pytest.skip(f"TensorRT {trt.__version__} has no implicit INT8 calibration")
    calibrator = make_int8_calibrator(images, SPEC, tmp_path / "c.cache", 3, (3, 32, 32))
    assert isinstance(calibrator, trt.IInt8EntropyCalibrator2)
    assert calibrator.get_batch_size() == 3
    pointers = [calibrator.get_batch(["input"]) for _ in range(3)]
    assert pointers[0] and pointers[0][0] != 0 and pointers[2] is None
    assert calibrator.read_calibration_cache() is None
    calibrator.write_calibration_cache(b"ranges")
    assert (tmp_path / "c.cache").read_bytes() == b"ranges"
