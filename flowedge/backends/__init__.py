"""Backends load lazily by name, so a station without torch (or TensorRT) never imports it.

The model file says which backend runs it: an ``.onnx`` graph runs on ONNX
Runtime, an ``.engine``/``.plan`` on TensorRT, a checkpoint directory on
PyTorch; "auto" (the default) follows that, a named backend overrides it.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from flowedge.backends.base import Backend
from flowedge.core.errors import ConfigError

# backend name -> (module, class); each class has ``open(path, device, threads)``
BACKENDS: dict[str, tuple[str, str]] = {
    "torch": ("flowedge.backends.torch_backend", "TorchBackend"),
    "onnxruntime": ("flowedge.backends.onnxrt", "OnnxRuntimeBackend"),
    "tensorrt": ("flowedge.backends.tensorrt", "TensorRTBackend"),
}

# model file suffix -> backend, for "auto"; a directory is a torch checkpoint
_BY_SUFFIX = {".onnx": "onnxruntime", ".engine": "tensorrt", ".plan": "tensorrt"}

# the package each backend needs, named in the error when it is missing
_PACKAGES = {
    "torch": "torch (pip install flowedge[train])",
    "onnxruntime": "onnxruntime (pip install flowedge[station])",
    "tensorrt": "tensorrt (pip install flowedge[tensorrt])",
}

_MODEL_FILES = (
    "give a checkpoint directory ('flowedge train'), an .onnx graph ('flowedge export onnx') "
    "or a TensorRT .engine/.plan ('flowedge export trt')"
)


def backend_for(path: Path, backend: str = "auto") -> str:
    """The backend that runs ``path``: ``backend`` itself, or for "auto" the one its kind needs."""
    if not path.exists():
        raise ConfigError(f"{path} not found; {_MODEL_FILES}")
    if backend != "auto":
        if backend not in BACKENDS:
            raise ConfigError(
                f"backend {backend!r} is not one of auto, {', '.join(BACKENDS)}; fix model.backend"
            )
        return backend
    if path.is_dir():
        return "torch"
    if path.suffix.lower() in _BY_SUFFIX:
        return _BY_SUFFIX[path.suffix.lower()]
    raise ConfigError(
        f"cannot tell which backend runs {path} from its name; {_MODEL_FILES}, "
        "or set model.backend explicitly"
    )


def open_backend(
    path: str | Path, backend: str = "auto", device: str = "cpu", threads: int = 0
) -> Backend:
    """Load the model at ``path`` with ``backend`` ("auto": by file, see the module docstring)."""
    path = Path(path)
    name = backend_for(path, backend)
    module_name, class_name = BACKENDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"backend '{name}' (for {path}) needs {_PACKAGES[name]}, which cannot be imported "
            f"here ({exc}); install it or choose another model file"
        ) from exc
    return getattr(module, class_name).open(path, device, threads)


__all__ = ["BACKENDS", "Backend", "backend_for", "open_backend"]
