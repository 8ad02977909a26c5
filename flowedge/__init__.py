"""flowedge: normalizing-flow anomaly detection, from the workstation to the PLC.

The package maps the repository's design folders onto one import name:
``flowedge.flows`` (training: detectors, data, evaluation), ``flowedge.calibration``,
``flowedge.export`` and ``flowedge.edge`` (the station), with the shared contract in
``flowedge.core``, sample handling per modality in ``flowedge.modalities`` and the
inference runtimes in ``flowedge.backends``.

The Python API (see README): :func:`load` a trained or exported model and
``score`` samples with it, or :func:`train` one. Both import their dependencies
only when called, so ``import flowedge`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

if TYPE_CHECKING:
    from flowedge.api import Model


def load(model: Any, **options: Any) -> Model:
    """Open a checkpoint directory, ``.onnx`` graph or TensorRT engine for scoring."""
    from flowedge.api import load as _load

    return _load(model, **options)


def train(data: Any, out: Any, **options: Any) -> Any:
    """Train a detector on the normal samples under ``data``; returns the checkpoint path."""
    from flowedge.api import train as _train

    return _train(data, out, **options)


__all__ = ["__version__", "load", "train"]
