"""INT8 calibration for TensorRT engines: normal samples in, per-tensor ranges out.

TensorRT's entropy calibrator pulls batches of *normal* samples (the distribution the
station sees) through the card's modality and input spec, copied into a device
buffer. The resulting cache is reused only while the files, spec and batch size are the
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
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from flowedge.calibration.scoring import sample_files
from flowedge.core.card import InputSpec
from flowedge.core.errors import BadInputError, ConfigError, DataError
from flowedge.core.jsonfile import parse_json
from flowedge.modalities import get_modality
from flowedge.modalities.batches import load_batches

log = logging.getLogger(__name__)


class CalibrationBatches:
    """Full float32 [B, *tensor_shape] batches of preprocessed samples; unreadable files
    skipped and listed.

    A trailing partial batch is dropped (TensorRT calibrates on fixed-size batches).
    """

    def __init__(
        self,
        image_dir: str | Path,
        spec: InputSpec,
        batch_size: int,
        input_shape: tuple[int, ...],
    ) -> None:
        expected = spec.tensor_shape
        if tuple(input_shape) != expected:
            raise ConfigError(
                f"INT8 calibration input shape {tuple(input_shape)} differs from the model card's "
                f"input {expected}; rebuild from the matching ONNX model"
            )
        if batch_size < 1:
            raise ConfigError(f"INT8 calibration batch size must be >= 1, got {batch_size}")
        self.spec = spec
        self.batch_size = batch_size
        self.input_shape = expected
        self.paths = sample_files(Path(image_dir), spec.kind)
        if len(self.paths) < batch_size:
            raise DataError(
                f"INT8 calibration needs at least one full batch ({batch_size} samples); "
                f"{image_dir} holds {len(self.paths)}: add normal samples or lower the batch size"
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

    def _skip(self, path: Path, error: BadInputError) -> None:
        log.warning("INT8 calibration: skipping %s", error)
        self.skipped.append(str(path))

    def __iter__(self) -> Iterator[np.ndarray]:
        load = partial(get_modality(self.spec.kind).load, spec=self.spec)
        for kept, batch in load_batches(self.paths, load, self.batch_size, self._skip):
            if len(kept) < self.batch_size:
                log.info("INT8 calibration: last %d sample(s) dropped (partial batch)", len(kept))
                return
            yield np.ascontiguousarray(batch, dtype=np.float32)


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
            recorded = parse_json(self.meta.read_text(encoding="utf-8")).get("fingerprint")
        except (OSError, ValueError):
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
    spec: InputSpec,
    cache_path: str | Path,
    batch_size: int,
    input_shape: tuple[int, ...],
) -> Any:
    """A ``tensorrt.IInt8EntropyCalibrator2`` over the normal samples in ``image_dir``."""
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
