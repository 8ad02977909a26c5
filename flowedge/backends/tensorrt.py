"""TensorRT backend for GPU stations: one execution context, stream and buffer set per thread.

Engines are refused at load when they were built with another TensorRT
version or for another GPU architecture (see :mod:`flowedge.core.engine_meta`), with
a message saying how to rebuild. Device buffers are sized for the engine's
largest batch once; host staging buffers are pinned so copies run async on
the worker's stream.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from flowedge.backends.base import Backend, as_model_batch
from flowedge.core.engine_meta import EngineMeta, check_compatible, read_meta
from flowedge.core.errors import ConfigError, ModelMismatchError
from flowedge.core.metadata import INPUT_NAME, OUTPUT_NAMES

log = logging.getLogger(__name__)


def import_tensorrt(purpose: str = "model.backend 'tensorrt'") -> Any:
    try:
        import tensorrt
    except ImportError as exc:
        raise ConfigError(
            f"{purpose} needs TensorRT, which is not installed here; install "
            "'flowedge[tensorrt]' on the GPU station (or use the 'onnxruntime' backend)"
        ) from exc
    return tensorrt


def import_cudart() -> Any:
    """cuda-python's runtime module (``cuda.bindings.runtime`` from 12.6 on, else ``cuda.cudart``)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as exc:
            raise ConfigError(
                "the TensorRT backend needs cuda-python; install 'flowedge[tensorrt]'"
            ) from exc
    return cudart


def check_cuda(result: tuple, what: str) -> Any:
    """Unpack a cuda-python call's ``(err, *values)`` and raise on an error code."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA {what} failed: {err}")
    return values[0] if len(values) == 1 else values


def device_index(device: str) -> int:
    if device in ("cuda", "gpu"):
        return 0
    if device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    raise ConfigError(f"model.device '{device}' is not valid for TensorRT; use 'cuda' or 'cuda:N'")


def gpu_identity(index: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability "major.minor") of CUDA device ``index``."""
    cudart = import_cudart()
    props = check_cuda(cudart.cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return name.rstrip("\x00").strip(), f"{props.major}.{props.minor}"


class _Worker:
    """Everything one thread needs: context, stream, pinned host and device buffers."""

    def __init__(self, engine: Any, trt: Any, max_batch: int) -> None:
        self.cudart = cudart = import_cudart()
        self.context = engine.create_execution_context()
        if self.context is None:
            raise RuntimeError("TensorRT could not create an execution context (GPU memory?)")
        self.stream = check_cuda(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self.buffers: dict[str, tuple[int, np.ndarray, int]] = {}  # name -> (device, host, nbytes)
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            shape = [max_batch if d < 0 else d for d in engine.get_tensor_shape(name)]
            nbytes = int(np.prod(shape)) * dtype.itemsize
            dev = check_cuda(cudart.cudaMalloc(nbytes), "cudaMalloc")
            pinned = check_cuda(cudart.cudaMallocHost(nbytes), "cudaMallocHost")
            raw = (ctypes.c_byte * nbytes).from_address(int(pinned))
            host = np.frombuffer(raw, dtype=dtype).reshape(shape)
            self.buffers[name] = (int(dev), host, int(pinned))
            self.context.set_tensor_address(name, int(dev))

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cudart, n = self.cudart, len(batch)
        dev, host, _ = self.buffers[INPUT_NAME]
        host[:n] = batch
        h2d, d2h = (
            cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
            cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost,
        )
        check_cuda(
            cudart.cudaMemcpyAsync(dev, host.ctypes.data, host[:n].nbytes, h2d, self.stream),
            "copy in",
        )
        if not self.context.set_input_shape(INPUT_NAME, tuple(batch.shape)):
            raise ValueError(f"TensorRT refused input shape {batch.shape}")
        if not self.context.execute_async_v3(int(self.stream)):
            raise RuntimeError("TensorRT execution failed (see the TensorRT log above)")
        outputs = []
        for name in OUTPUT_NAMES:
            dev, host, _ = self.buffers[name]
            view = host[:n]
            check_cuda(
                cudart.cudaMemcpyAsync(view.ctypes.data, dev, view.nbytes, d2h, self.stream),
                "copy out",
            )
            outputs.append(view)
        check_cuda(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return outputs[0].astype(np.float32), outputs[1].astype(np.float32)

    def close(self) -> None:
        for dev, _, pinned in self.buffers.values():
            self.cudart.cudaFree(dev)
            self.cudart.cudaFreeHost(pinned)
        self.buffers.clear()
        self.cudart.cudaStreamDestroy(self.stream)


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, engine: Any, trt: Any, meta: EngineMeta, source: str) -> None:
        super().__init__(meta.model_card(source), meta.calibration)
        self.engine, self.trt, self.meta, self.source = engine, trt, meta, source
        self._local = threading.local()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path, device: str = "cuda", threads: int = 0) -> TensorRTBackend:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(
                f"TensorRT engine {path} not found; build it with 'flowedge export trt'"
            )
        meta = read_meta(path)
        trt = import_tensorrt()
        index = device_index(device)
        name, capability = gpu_identity(index)
        check_compatible(meta, trt.__version__, name, capability, str(path))
        check_cuda(import_cudart().cudaSetDevice(index), "cudaSetDevice")
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise ModelMismatchError(
                f"{path}: TensorRT could not load the engine; rebuild it on this station"
            )
        log.info(
            "tensorrt %s: %s (%s, batch %d..%d) on %s",
            trt.__version__,
            path,
            meta.precision,
            meta.profile.min,
            meta.profile.max,
            name,
        )
        return cls(engine, trt, meta, str(path))

    @property
    def max_batch(self) -> int:
        return self.meta.profile.max

    def _worker(self) -> _Worker:
        worker = getattr(self._local, "worker", None)
        if worker is None:
            worker = self._local.worker = _Worker(self.engine, self.trt, self.max_batch)
            with self._lock:
                self._workers.append(worker)
        return worker

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = as_model_batch(batch, self.input_shape, self.source)
        if len(batch) < self.meta.profile.min:
            raise ValueError(
                f"{self.source}: batch {len(batch)} below the engine's minimum {self.meta.profile.min}"
            )
        worker = self._worker()
        parts = [
            worker.run(batch[i : i + self.max_batch]) for i in range(0, len(batch), self.max_batch)
        ]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def close(self) -> None:
        with self._lock:
            for worker in self._workers:
                worker.close()
            self._workers.clear()
