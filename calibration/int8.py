"""INT8 calibration for TensorRT engines: normal images in, per-tensor ranges out.

TensorRT's entropy calibrator pulls batches of *normal* images (the distribution the
station sees) through :mod:`flows.preprocess` with the card's spec, copied into a device
buffer. The resulting cache is reused only while the images, spec and batch size are the
same (a fingerprint is kept beside it), so a stale cache never silently calibrates a
different model. Implicit INT8 calibration exists up to TensorRT 10.x (removed in 11.x,
which wants explicit Q/DQ graphs). Importing this module never needs tensorrt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from flowedge.calibration.scoring import image_files
from flowedge.core.card import PreprocessSpec
from flowedge.core.errors import BadInputError, ConfigError, DataError
from flowedge.modalities.image import load_tensor

log = logging.getLogger(__name__)


class CalibrationBatches:
    """Full float32 NCHW batches of preprocessed images; unreadable files skipped and listed.

    A trailing partial batch is dropped (TensorRT calibrates on fixed-size batches).
    """

    def __init__(
        self,
        image_dir: str | Path,
        spec: PreprocessSpec,
        batch_size: int,
        input_shape: tuple[int, int, int],
    ) -> None:
        expected = (spec.channels, spec.height, spec.width)
        if tuple(input_shape) != expected:
            raise ConfigError(
                f"INT8 calibration input shape {tuple(input_shape)} differs from the model card's "
                f"preprocessing {expected} (C, H, W); rebuild from the matching ONNX model"
            )
        if batch_size < 1:
            raise ConfigError(f"INT8 calibration batch size must be >= 1, got {batch_size}")
        self.spec = spec
        self.batch_size = batch_size
        self.input_shape = expected
        self.paths = image_files(Path(image_dir))
        if len(self.paths) < batch_size:
            raise DataError(
                f"INT8 calibration needs at least one full batch ({batch_size} images); "
                f"{image_dir} holds {len(self.paths)}: add normal images or lower the batch size"
            )
        self.skipped: list[str] = []

    @property
    def nbytes(self) -> int:
        return self.batch_size * math.prod(self.input_shape) * 4

    def fingerprint(self) -> str:
        """Changes whenever the images (names, sizes), the spec or the batch size change."""
        digest = hashlib.sha256(f"{self.spec.digest()}|{self.batch_size}".encode())
        for path in self.paths:
            digest.update(f"|{path.name}:{path.stat().st_size}".encode())
        return digest.hexdigest()

    def __iter__(self) -> Iterator[np.ndarray]:
        chunk: list[np.ndarray] = []
        for path in self.paths:
            try:
                chunk.append(load_tensor(path, self.spec))
            except BadInputError as exc:
                log.warning("INT8 calibration: skipping %s", exc)
                self.skipped.append(str(path))
                continue
            if len(chunk) == self.batch_size:
                yield np.ascontiguousarray(np.stack(chunk), dtype=np.float32)
                chunk = []
        if chunk:
            log.info("INT8 calibration: last %d image(s) dropped (partial batch)", len(chunk))


class CalibrationCache:
    """The TensorRT cache file plus a ``.json`` fingerprint beside it."""

    def __init__(self, path: str | Path, fingerprint: str) -> None:
        self.path = Path(path)
        self.meta = self.path.with_name(self.path.name + ".json")
        self.fingerprint = fingerprint

    def read(self) -> bytes | None:
        if not self.path.is_file():
            return None
        try:
            recorded = json.loads(self.meta.read_text(encoding="utf-8")).get("fingerprint")
        except (OSError, json.JSONDecodeError):
            recorded = None
        if recorded != self.fingerprint:
            log.info("INT8 cache %s is for other images or preprocessing; recalibrating", self.path)
            return None
        log.info("INT8 calibration: reusing cache %s", self.path)
        return self.path.read_bytes()

    def write(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(data)
        self.meta.write_text(json.dumps({"fingerprint": self.fingerprint}) + "\n", encoding="utf-8")


def make_int8_calibrator(
    image_dir: str | Path,
    spec: PreprocessSpec,
    cache_path: str | Path,
    batch_size: int,
    input_shape: tuple[int, int, int],
) -> Any:
    """A ``tensorrt.IInt8EntropyCalibrator2`` over the normal images in ``image_dir``."""
    from flowedge.backends.tensorrt import check_cuda, import_cudart, import_tensorrt

    trt = import_tensorrt("INT8 calibration")
    base = getattr(trt, "IInt8EntropyCalibrator2", None)
    if base is None:
        raise ConfigError(
            f"TensorRT {trt.__version__} has no implicit INT8 calibration (removed in 11.x); "
            "build fp16, or use TensorRT 10.x for INT8"
        )
    cudart = import_cudart()
    batches = CalibrationBatches(image_dir, spec, batch_size, input_shape)
    cache = CalibrationCache(cache_path, batches.fingerprint())
    host_to_device = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice

    class EntropyCalibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self._batches = iter(batches)
            self._device = check_cuda(cudart.cudaMalloc(batches.nbytes), "cudaMalloc")

        def get_batch_size(self) -> int:
            return batches.batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            batch = next(self._batches, None)
            if batch is None:
                return None
            copy = cudart.cudaMemcpy(self._device, batch.ctypes.data, batch.nbytes, host_to_device)
            check_cuda(copy, "cudaMemcpy")
            return [int(self._device)]

        def read_calibration_cache(self) -> bytes | None:
            return cache.read()

        def write_calibration_cache(self, data: Any) -> None:
            cache.write(bytes(data))

        def __del__(self) -> None:
            cudart.cudaFree(self._device)

    return EntropyCalibrator()
