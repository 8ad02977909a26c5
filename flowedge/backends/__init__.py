"""Backends load lazily by name, so a station without torch (or TensorRT) never imports it.

The model file says which backend runs it (the table in
:mod:`flowedge.core.backend_table`): an ``.onnx`` graph runs on ONNX Runtime, an
``.engine``/``.plan`` on TensorRT, an ``.xml`` IR on OpenVINO, a checkpoint directory on
PyTorch; "auto" (the default) follows that, a named backend overrides it (OpenVINO also
reads an ``.onnx`` graph when named).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from flowedge.backends.base import Backend, Tuning
from flowedge.core.backend_table import (
    AUTO,
    BACKENDS,
    BackendSpec,
    backend_choices,
    backend_of_suffix,
    directory_backend,
    model_files_hint,
)
from flowedge.core.errors import ConfigError
from flowedge.core.validation import MAX_THREADS


def backend_for(path: Path, backend: str = AUTO) -> str:
    """The backend that runs ``path``: ``backend`` itself, or for "auto" the one its kind needs."""
    if not path.exists():
        raise ConfigError(f"{path} not found; give {model_files_hint()}")
    if backend != AUTO:
        if backend not in BACKENDS:
            raise ConfigError(
                f"backend {backend!r} is not one of {', '.join(backend_choices())}; fix model.backend"
            )
        return backend
    name = directory_backend() if path.is_dir() else backend_of_suffix(path.suffix)
    if name is None:
        raise ConfigError(
            f"cannot tell which backend runs {path} from its name; give {model_files_hint()}, "
            "or set model.backend explicitly"
        )
    return name


def open_backend(
    path: str | Path,
    backend: str = AUTO,
    device: str = "cpu",
    threads: int = 0,
    tuning: Tuning | None = None,
) -> Backend:
    """Load the model at ``path`` with ``backend`` ("auto": by file, see the module docstring)."""
    if not 0 <= threads <= MAX_THREADS:  # a C int overflow, or a pool that never starts
        raise ConfigError(
            f"inference threads (--threads, model.intra_op_threads): {threads} is not between 0 "
            f"(the runtime decides) and {MAX_THREADS}; give at most this machine's cores"
        )
    path = Path(path)
    spec = BACKENDS[backend_for(path, backend)]
    try:
        module = importlib.import_module(spec.module)
    except ImportError as exc:
        raise ConfigError(
            f"backend '{spec.name}' (for {path}) needs {', '.join(spec.packages)} "
            f"(pip install flowedge[{spec.extra}]), which cannot be imported here ({exc}); "
            "install it or choose another model file"
        ) from exc
    opener = getattr(module, spec.class_name).open
    if spec.tunable:
        return opener(path, device, threads, tuning or Tuning())
    if tuning is not None and not tuning.is_default:
        raise ConfigError(
            f"model.streams and model.performance_hint ({tuning}) apply to "
            f"{', '.join(s.name for s in BACKENDS.values() if s.tunable)} only; {path} runs on "
            f"{spec.name}: remove them"
        )
    return opener(path, device, threads)


__all__ = ["BACKENDS", "Backend", "BackendSpec", "Tuning", "backend_for", "open_backend"]
