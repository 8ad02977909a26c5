"""What the time-series detectors share: the input spec from their config, no backbone.

A series detector sees standardised cycles ``[B, signals, steps]``; its config
carries the signals and the training statistics, so the card's
:class:`SeriesInput` is rebuilt from the card's detector parameters alone.
"""

from __future__ import annotations

from flowedge.core.card import SeriesInput
from flowedge.core.errors import ConfigError
from flowedge.flows.config import SeriesDetectorConfig
from flowedge.flows.detectors.tensor_input import TensorInputMixin


def series_input(config: SeriesDetectorConfig) -> SeriesInput:
    """The card's input spec; ConfigError when the training statistics were not computed."""
    n = len(config.signals)
    if len(config.mean) != n or len(config.std) != n or config.length is None:
        raise ConfigError(
            f"detector {config.kind}: mean, std ({n} each) and length come from the training "
            "cycles: prepare them with flows.data.series.prepare_series before building"
        )
    return SeriesInput(
        signals=tuple(config.signals),
        units=tuple(config.units) or ("",) * n,
        rate_hz=config.rate_hz,
        length=config.length,
        mean=tuple(config.mean),
        std=tuple(config.std),
    )


class SeriesDetectorMixin(TensorInputMixin):
    """Input spec from the config's signals and statistics; the features are the
    standardised cycle itself."""

    def input_spec(self) -> SeriesInput:
        return series_input(self.config)
