"""Backends load lazily by name, so a station without torch (or TensorRT) never imports it."""

from __future__ import annotations

import importlib
from pathlib import Path

from flowedge.backends.base import Backend
from flowedge.core.errors import ConfigError
from flowedge.edge.config import ModelConfig

# model.backend -> (module, class); each class has ``open(path, device, threads)``
BACKENDS: dict[str, tuple[str, str]] = {
    "torch": ("flowedge.backends.torch_backend", "TorchBackend"),
    "onnxruntime": ("flowedge.backends.onnxrt", "OnnxRuntimeBackend"),
    "tensorrt": ("flowedge.backends.tensorrt", "TensorRTBackend"),
}

# the package each backend needs, named in the error when it is missing
_PACKAGES = {
    "torch": "torch (pip install flowedge[train])",
    "onnxruntime": "onnxruntime (pip install flowedge[station])",
    "tensorrt": "tensorrt (pip install flowedge[tensorrt])",
}


def open_backend(model_cfg: ModelConfig) -> Backend:
    module_name, class_name = BACKENDS[model_cfg.backend]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"model.backend '{model_cfg.backend}' needs {_PACKAGES[model_cfg.backend]}, "
            f"which cannot be imported here ({exc}); install it or choose another backend"
        ) from exc
    backend_class = getattr(module, class_name)
    return backend_class.open(Path(model_cfg.path), model_cfg.device, model_cfg.intra_op_threads)


__all__ = ["BACKENDS", "Backend", "open_backend"]
