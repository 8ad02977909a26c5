"""Typed drift-monitoring settings (the ``drift`` section of config.yaml)."""

from __future__ import annotations

from pydantic import Field

from flowedge.core.validation import Strict


class DriftConfig(Strict):
    enabled: bool = True
    window: int = Field(
        500, ge=20, le=100_000, description="rolling window of recent scores per sensor"
    )
    check_every: int = Field(
        50, ge=1, le=1_000_000, description="run the drift tests every N decisions"
    )
    p_value: float = Field(0.001, gt=0, lt=1, description="significance of the drift tests")
