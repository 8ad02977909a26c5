"""Cutting a machine-data log into the samples a model scores: cycles or windows.

Three ways, one per kind of process:

``cycle_id``  rows sharing a cycle/sample id (voraus-AD ``sample``, a controller's
              cycle counter) form one cycle; a cycle is contiguous rows of one id.
``trigger``   a cycle runs while a trigger signal (robot ``active``, a digital
              input) is above ``threshold``.
``window``    fixed windows of ``window_rows`` every ``step_rows`` rows, for
              continuous processes without cycles.

``complete_only`` (streaming) leaves out the last cycle, which may still grow:
a cycle is closed by the first row of the next one (or the trigger falling).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from flowedge.core.errors import BadInputError
from flowedge.core.validation import Strict
from flowedge.modalities.series_io import LogFormat, SignalTable

MAX_CYCLE_ROWS = 10**6  # rows of one cycle or window: 1000 s at 1 kHz


class SegmentConfig(Strict):
    mode: Literal["cycle_id", "trigger", "window"] = "cycle_id"
    column: str | None = Field(None, description="cycle id column (cycle_id) or trigger signal")
    threshold: float = 0.5  # trigger: a cycle runs while the signal is above it
    window_rows: int = Field(64, ge=2, le=MAX_CYCLE_ROWS)
    step_rows: int = Field(64, ge=1, le=MAX_CYCLE_ROWS)
    min_rows: int = Field(
        2, ge=1, le=MAX_CYCLE_ROWS, description="shorter cycles are dropped (logger glitches)"
    )

    @model_validator(mode="after")
    def _column_when_needed(self) -> SegmentConfig:
        if self.mode != "window" and not self.column:
            raise ValueError(f"segment mode {self.mode!r} needs 'column' (the id or trigger)")
        return self


@dataclass(frozen=True)
class CycleSpan:
    """Rows ``start:stop`` of a table are one cycle called ``cycle_id``."""

    cycle_id: str
    start: int
    stop: int


def id_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _runs(keys: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of each run of equal consecutive values (NaN equals NaN)."""
    if len(keys) == 0:
        return []
    same = (keys[1:] == keys[:-1]) | (np.isnan(keys[1:]) & np.isnan(keys[:-1]))
    edges = np.flatnonzero(~same) + 1
    bounds = [0, *edges.tolist(), len(keys)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _column(table: SignalTable, name: str) -> np.ndarray:
    if name not in table.columns:
        raise BadInputError(
            f"log {table.name}: segmenting needs column {name!r}, which it lacks; "
            f"columns are {', '.join(table.columns)}"
        )
    return table.columns[name]


def cycle_spans(
    table: SignalTable, cfg: SegmentConfig, complete_only: bool = False
) -> list[CycleSpan]:
    """Where the cycles of ``table`` are (row ranges); see the module docstring."""
    n = len(table)
    spans: list[CycleSpan] = []
    if cfg.mode == "window":
        last_start = n - cfg.window_rows
        for start in range(0, max(last_start + 1, 0), cfg.step_rows):
            row = table.first_row + start
            spans.append(CycleSpan(f"w{row}", start, start + cfg.window_rows))
        return spans
    values = _column(table, cfg.column or "")
    if cfg.mode == "cycle_id":
        runs = [(a, b) for a, b in _runs(values) if not np.isnan(values[a])]
        if complete_only and runs and runs[-1][1] == n:
            runs = runs[:-1]
        spans = [CycleSpan(id_text(values[a]), a, b) for a, b in runs]
    else:
        active = np.nan_to_num(values, nan=-np.inf) > cfg.threshold
        runs = [(a, b) for a, b in _runs(active.astype(np.float64)) if active[a]]
        if complete_only and runs and runs[-1][1] == n:
            runs = runs[:-1]
        spans = [CycleSpan(f"c{table.first_row + a}", a, b) for a, b in runs]
    return [s for s in spans if s.stop - s.start >= cfg.min_rows]


def segment(
    table: SignalTable, cfg: SegmentConfig, complete_only: bool = False
) -> list[SignalTable]:
    """The cycles of ``table`` as tables named ``<log>:<cycle id>``."""
    return [
        table.rows(s.start, s.stop, f"{table.name}:{s.cycle_id}")
        for s in cycle_spans(table, cfg, complete_only)
    ]


@dataclass(frozen=True)
class CycleReading:
    """How evaluation and calibration read a test log: the model card's log format and
    segmenter, so a log of many cycles is scored per cycle, as training cut its logs and
    as the station cuts what it tails (no segment: one file is one cycle)."""

    log: LogFormat
    segment: SegmentConfig | None = None

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> CycleReading:
        """From a series detector's card parameters (their ``log`` and ``segment``)."""
        segment = params.get("segment")
        return cls(
            LogFormat.model_validate(params.get("log") or {}),
            None if segment is None else SegmentConfig.model_validate(segment),
        )
