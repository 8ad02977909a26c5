"""The series modality: robot and machine-data cycles (thesis ch. 7-8) for every stage.

A sample is one cycle, a :class:`SignalTable` (from a log file, a tailed log or the
simulator); :mod:`flowedge.modalities.series_prep` turns it into the card's
(signals, steps) tensor. numpy, scipy and OpenCV only (parquet: pyarrow), so the
station runs it without the training stack.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from flowedge.core.card import ModelCard, SeriesInput
from flowedge.core.errors import BadInputError
from flowedge.modalities import series_synthetic
from flowedge.modalities.base import Modality, ScoreBatch
from flowedge.modalities.baseline import BaselineRules
from flowedge.modalities.overlay import colour_bar, map_range, with_banner
from flowedge.modalities.series_cycles import CycleReading, segment
from flowedge.modalities.series_explain import cycle_report, explain_cycle
from flowedge.modalities.series_io import LogFormat, SignalTable, decode_log, read_log
from flowedge.modalities.series_prep import rebaselined, to_tensor

log = logging.getLogger(__name__)

PLOTTED_SIGNALS = 6  # the signals with the most map mass get a trace each
_PLOT_WIDTH, _ROW_HEIGHT, _LABEL_WIDTH = 640, 56, 150


def _smooth_stand_in(rng: np.random.Generator, n: int, anomalous: bool) -> np.ndarray:
    """A smooth unit-scale signal (for card signals the simulator does not produce)."""
    t = np.linspace(0, 1, n)
    wave = sum(rng.normal() * np.sin(2 * np.pi * (k + 1) * t + rng.uniform(0, 6)) for k in range(3))
    if anomalous:
        wave = wave + 4.0 * np.exp(-((t - rng.uniform(0.3, 0.7)) ** 2) / 0.001)
    return wave / 2.0


def synthetic_tables(
    spec: SeriesInput, n_normal: int, n_anomalous: int, seed: int
) -> list[SignalTable]:
    """Simulated cycles carrying every signal of ``spec`` (normal first)."""
    cycles = series_synthetic.simulate_set(n_normal, 0, seed, spec.rate_hz)
    rng = np.random.default_rng(seed + 1)
    kinds = series_synthetic.ANOMALY_TYPES
    cycles += [
        series_synthetic.SimulatedCycle(
            series_synthetic.simulate_cycle(
                rng, series_synthetic.draw_anomaly(kinds[i % len(kinds)], rng), spec.rate_hz
            ),
            kinds[i % len(kinds)],
        )
        for i in range(n_anomalous)
    ]
    tables = []
    for i, cycle in enumerate(cycles):
        table = cycle.table
        for s, mean, std in zip(spec.signals, spec.mean, spec.std, strict=True):
            if s not in table.columns:
                wave = _smooth_stand_in(rng, len(table), cycle.kind != series_synthetic.NORMAL)
                table.columns[s] = mean + std * wave
        table.name = f"synthetic-{i}"
        tables.append(table)
    return tables


def _log_format(limits: LogFormat | CycleReading | None) -> LogFormat | None:
    return limits.log if isinstance(limits, CycleReading) else limits


def _picture(tensor: np.ndarray) -> np.ndarray:
    """Standardised signals as RGB: |z| up to 3 from blue through white to red."""
    z = np.clip(tensor / 3.0, -1.0, 1.0)
    grey = ((z + 1.0) * 127.5).astype(np.uint8)
    return cv2.applyColorMap(grey, cv2.COLORMAP_COOL)[:, :, ::-1].copy()


def _trace(values: np.ndarray, heat: np.ndarray, label: str) -> np.ndarray:
    """One signal's row: the map as a colour strip behind the signal's white trace."""
    strip = cv2.resize(heat[None, :], (_PLOT_WIDTH, _ROW_HEIGHT), interpolation=cv2.INTER_NEAREST)
    row = (cv2.applyColorMap(strip, cv2.COLORMAP_JET) * 0.6).astype(np.uint8)
    low, high = float(values.min()), float(values.max())
    xs = np.linspace(0, _PLOT_WIDTH - 1, len(values))
    ys = (_ROW_HEIGHT - 4) - (values - low) / ((high - low) or 1.0) * (_ROW_HEIGHT - 8)
    points = np.stack([xs, ys], axis=1).round().astype(np.int32)
    cv2.polylines(row, [points], False, (255, 255, 255), 1, cv2.LINE_AA)
    name = np.zeros((_ROW_HEIGHT, _LABEL_WIDTH, 3), np.uint8)
    cv2.putText(
        name, label[:20], (4, _ROW_HEIGHT // 2 + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255)
    )
    return np.hstack([name, row])


class SeriesModality(Modality[SignalTable, SeriesInput, LogFormat | CycleReading]):
    """Machine-data cycles: CSV or parquet files of one cycle each, or cycles cut from a log.

    ``limits``: a LogFormat (how to read a log), or a CycleReading (also how to cut it); the
    station's per-file limits do not apply (its series sources deliver cut cycles).
    """

    name = "series"
    extensions = frozenset({".csv", ".parquet"})

    def read(self, path: str | Path, limits: LogFormat | CycleReading | None = None) -> SignalTable:
        return read_log(path, _log_format(limits))

    def decode(
        self, data: bytes, name: str, limits: LogFormat | CycleReading | None = None
    ) -> SignalTable:
        return decode_log(data, name, _log_format(limits))

    def reading(self, card: ModelCard) -> CycleReading:
        return CycleReading.from_params(card.detector_params)

    def cuts(self, spec: SeriesInput, limits: LogFormat | CycleReading | None = None) -> bool:
        return isinstance(limits, CycleReading) and limits.segment is not None

    def read_all(
        self, path: str | Path, spec: SeriesInput, limits: LogFormat | CycleReading | None = None
    ) -> list[SignalTable]:
        table = self.read(path, limits)
        if not isinstance(limits, CycleReading) or limits.segment is None:
            return [table]
        return segment(table, limits.segment)

    def load_all(
        self, path: str | Path, spec: SeriesInput, limits: LogFormat | CycleReading | None = None
    ) -> list[np.ndarray]:
        """One tensor per cycle of the file (cut by a CycleReading's segment, else one); a
        cycle that cannot be used is skipped with a warning, none usable is BadInputError."""
        cycles = self.read_all(path, spec, limits)
        if not isinstance(limits, CycleReading) or limits.segment is None:
            return [self.preprocess(cycles[0], spec, str(path))]  # the log is one cycle
        tensors = []
        for cycle in cycles:
            try:
                tensors.append(self.preprocess(cycle, spec, cycle.name))
            except BadInputError as exc:
                log.warning("skipping %s", exc)
        if not tensors:
            raise BadInputError(
                f"log {path}: none of its {len(cycles)} cycle(s) is usable with the model's "
                f"segment {limits.segment.model_dump(exclude_defaults=True)}; check the log "
                "and the segment settings the model was trained with"
            )
        return tensors

    def validate(self, raw: Any, name: str) -> None:
        if not isinstance(raw, SignalTable):
            raise BadInputError(
                f"cycle {name}: expected a signal table (a log file or a cut cycle), "
                f"got {type(raw).__name__}"
            )

    def preprocess(
        self,
        raw: Any,
        spec: SeriesInput,
        name: str,
        limits: LogFormat | CycleReading | None = None,
    ) -> np.ndarray:
        table = self.as_raw(raw, name, limits)
        self.validate(table, name)
        return to_tensor(table, spec)

    def display(
        self, path: str | Path, spec: SeriesInput, limits: LogFormat | CycleReading | None = None
    ) -> np.ndarray:
        """The standardised signals as an RGB picture, one row per signal and one column per
        step, like the map (|z| up to 3 from blue through white to red)."""
        return _picture(self.load(path, spec, limits))

    def display_part(
        self,
        path: str | Path,
        spec: SeriesInput,
        limits: LogFormat | CycleReading | None = None,
        part: int = 0,
    ) -> np.ndarray:
        return _picture(self.load_all(path, spec, limits)[part])

    def synthesize(
        self, root: str | Path, n_train: int, n_test_good: int, n_test_defect: int, seed: int = 0
    ) -> Path:
        return series_synthetic.write_mvtec(root, n_train, n_test_good, n_test_defect, seed)

    def synthetic_batch(
        self, spec: SeriesInput, n_normal: int, n_anomalous: int, seed: int = 0
    ) -> np.ndarray:
        tables = synthetic_tables(spec, n_normal, n_anomalous, seed)
        return np.stack([to_tensor(t, spec) for t in tables])

    def render(
        self,
        input_tensor: np.ndarray,
        amap: np.ndarray,
        spec: SeriesInput,
        score: float | None,
        decision: str,
        threshold: float,
    ) -> np.ndarray:
        """The signals that carry most of the map, each over time on its map colours."""
        values, low, high = map_range(amap)
        heat = ((values - low) / ((high - low) or 1.0) * 255.0).astype(np.uint8)
        order = np.argsort(-values.sum(axis=1), kind="stable")[:PLOTTED_SIGNALS]
        rows = [_trace(input_tensor[i], heat[i], spec.signals[i]) for i in order]
        body = np.vstack(rows)
        axis = np.zeros((18, body.shape[1], 3), np.uint8)
        span = f"0 .. {spec.length / spec.rate_hz:.3g} s at {spec.rate_hz:g} Hz"
        cv2.putText(
            axis, span, (_LABEL_WIDTH + 4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255)
        )
        body = np.vstack([body, axis])
        return with_banner(
            np.hstack([body, colour_bar(body.shape[0], low, high)]), score, decision, threshold
        )

    def explain(
        self,
        tensor: np.ndarray,
        amap: np.ndarray,
        score: float,
        spec: SeriesInput,
        score_batch: ScoreBatch,
        max_batch: int,
    ) -> np.ndarray | None:
        """The score drop per signal when it is occluded, for a map that cannot name the
        signals itself (an MTS-Flow graph's); None otherwise."""
        return explain_cycle(tensor, amap, score, score_batch, max_batch)

    def sample_value(self, raw: SignalTable, name: str) -> float:
        """A log column constant over the cycle (program id, setpoint); BadInputError when the
        cycle lacks it, has no value in it or straddles a change of it."""
        column = raw.columns.get(name)
        values = np.asarray([] if column is None else column, dtype=np.float64)
        values = values[np.isfinite(values)]
        if column is None or not len(values):
            raise BadInputError(
                f"cycle {raw.name}: no value in column {name!r}; the logger must write it "
                "(it routes recipes or marks changeovers)"
            )
        if (values != values[0]).any():
            raise BadInputError(
                f"cycle {raw.name}: {name} changes within the cycle ({values[0]:g} to "
                f"{values[values != values[0]][0]:g}): the cycle straddles a changeover and "
                "is not judged"
            )
        return float(values[0])

    def rebaseline(
        self, raws: Sequence[SignalTable], spec: SeriesInput, rules: BaselineRules
    ) -> SeriesInput:
        """Per-signal mean and std of the cycles (at the model rate, before padding)."""
        return rebaselined(raws, spec, rules)

    def decision_fields(
        self,
        context: dict[str, Any] | None,
        amap: np.ndarray | None,
        explanation: Any,
        spec: SeriesInput,
    ) -> dict[str, Any]:
        """The context, its ``cycle`` completed with the signals and time ranges that drove
        the score (:func:`flowedge.modalities.series_explain.cycle_report`)."""
        fields = dict(context or {})
        cycle = fields.get("cycle")
        if cycle is not None:
            fields["cycle"] = cycle_report(cycle, amap, explanation, spec)
        return fields


MODALITY = SeriesModality()
