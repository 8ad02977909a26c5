"""The series modality: log readers, cycle segmenter, repair rules, resampling, simulator, plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flowedge.core.card import SeriesInput
from flowedge.core.errors import BadInputError
from flowedge.modalities import get_modality
from flowedge.modalities import series_synthetic as sim
from flowedge.modalities.series_cycles import SegmentConfig, cycle_spans, segment
from flowedge.modalities.series_io import VORAUS_FORMAT, LogFormat, SignalTable, read_log
from flowedge.modalities.series_prep import at_model_rate, to_tensor

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
VORAUS = DATA / "voraus-sample" / "test.parquet"
UR3 = DATA / "ur3-cobotops" / "dataset_02052023.csv"
UR3_FORMAT = LogFormat(
    separator=";",
    decimal=",",
    time_column="Timestamp",
    cycle_column="cycle",
    meta_columns=["Num", "Robot_ProtectiveStop", "grip_lost"],
)
needs_voraus = pytest.mark.skipif(not VORAUS.is_file(), reason=f"{VORAUS} not present")
needs_ur3 = pytest.mark.skipif(not UR3.is_file(), reason=f"{UR3} not present")


def spec_for(signals: tuple[str, ...], rate_hz: float = 10.0, length: int = 8) -> SeriesInput:
    n = len(signals)
    return SeriesInput(
        signals=signals,
        units=("",) * n,
        rate_hz=rate_hz,
        length=length,
        mean=(0.0,) * n,
        std=(1.0,) * n,
    )


def table(values: dict[str, list[float]], times: list[float] | None = None) -> SignalTable:
    columns = {k: np.asarray(v, dtype=float) for k, v in values.items()}
    return SignalTable(
        "log",
        columns,
        None if times is None else np.asarray(times, float),
        rate_hz=10.0,
        signals=tuple(columns),
    )


@needs_voraus
def test_voraus_sample_reads_130_signals_and_four_cycles_exactly() -> None:
    log = read_log(VORAUS, VORAUS_FORMAT)
    assert len(log) == 398 and len(log.signals) == 130
    assert not set(log.signals) & set(VORAUS_FORMAT.meta_columns)
    cycles = segment(log, SegmentConfig(column="sample"))
    assert [c.name.rsplit(":", 1)[1] for c in cycles] == ["12", "755", "1702", "1703"]
    assert [len(c) for c in cycles] == [100, 100, 99, 99]
    spec = spec_for(log.signals, rate_hz=100.0, length=100)
    tensor = to_tensor(cycles[0], spec)
    assert tensor.shape == (130, 100) and np.isfinite(tensor).all()


@needs_ur3
def test_ur3_csv_reads_as_is_from_a_config() -> None:
    log = read_log(UR3, UR3_FORMAT)
    assert len(log) == 7409
    assert log.signals[0] == "Current_J0" and len(log.signals) == 19  # 6x3 joints + tool
    assert "cycle" in log.columns and "" not in log.columns  # names stripped, empties dropped
    assert np.nansum(log.columns["Robot_ProtectiveStop"]) == 278  # labels kept, never signals
    assert log.columns["grip_lost"].sum() == 243
    assert log.time_s is not None and np.all(np.diff(log.time_s) > 0)
    assert log.columns["Current_J0"][0] == pytest.approx(0.109627604)  # decimal comma


def test_generic_csv_with_a_config(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("t\tmotor\tlabel\n0.0\t1.5\t0\n0.1\t2.5\t1\n0.2\t3.5\t0\n", encoding="utf-8")
    fmt = LogFormat(
        time_column="t", signals=["motor"], units={"motor": "A"}, meta_columns=["label"]
    )
    log = read_log(path, fmt)
    assert log.signals == ("motor",) and log.units == {"motor": "A"}
    assert log.columns["motor"].tolist() == [1.5, 2.5, 3.5]
    with pytest.raises(BadInputError, match="'current'.*missing"):
        read_log(path, fmt.model_copy(update={"signals": ["current"]}))


def test_segmenter_by_id_trigger_and_window() -> None:
    log = table({"id": [1, 1, 1, 2, 2, 3], "active": [0, 1, 1, 0, 1, 1], "x": list(range(6))})
    spans = cycle_spans(log, SegmentConfig(column="id"))
    assert [(s.cycle_id, s.start, s.stop) for s in spans] == [("1", 0, 3), ("2", 3, 5)]
    streaming = cycle_spans(log, SegmentConfig(column="id", min_rows=1), complete_only=True)
    assert [s.cycle_id for s in streaming] == ["1", "2"]  # cycle 3 may still grow
    trigger = cycle_spans(log, SegmentConfig(mode="trigger", column="active"))
    assert [(s.start, s.stop) for s in trigger] == [(1, 3), (4, 6)]
    windows = cycle_spans(log, SegmentConfig(mode="window", window_rows=4, step_rows=2))
    assert [(s.start, s.stop) for s in windows] == [(0, 4), (2, 6)]


@pytest.mark.parametrize(
    ("times", "values", "problem"),
    [
        ([0.0, 0.1, 0.1, 0.3], [1, 2, 3, 4], "backwards or repeats"),
        ([0.0, 0.1, 0.2, 0.9, 1.0], [1, 2, 3, 4, 5], "stalled logger or a rate change"),
        ([0.0, 0.1, 0.2, 0.3, 0.4], [1, np.nan, np.nan, np.nan, 5], "NaN"),
    ],
)
def test_bad_cycles_are_rejected_naming_the_cycle(times, values, problem) -> None:
    with pytest.raises(BadInputError, match=problem) as caught:
        at_model_rate(table({"x": values}, times), spec_for(("x",)))
    assert "cycle log" in str(caught.value)


def test_missing_signal_and_short_nan_gap_repair() -> None:
    with pytest.raises(BadInputError, match="signal.*y missing"):
        at_model_rate(table({"x": [1, 2, 3]}, [0, 0.1, 0.2]), spec_for(("x", "y")))
    repaired = at_model_rate(table({"x": [1, np.nan, 3, 4]}, [0, 0.1, 0.2, 0.3]), spec_for(("x",)))
    assert repaired[0].tolist() == pytest.approx([1, 2, 3, 4])


def test_resampling_filters_before_downsampling() -> None:
    rate, n = 1000.0, 2000
    t = np.arange(n) / rate
    slow, fast = np.sin(2 * np.pi * 2 * t), np.sin(2 * np.pi * 180 * t)  # 180 Hz > 50 Hz Nyquist
    out = at_model_rate(table({"x": slow + fast}, t.tolist()), spec_for(("x",), rate_hz=100.0))
    expected = np.sin(2 * np.pi * 2 * np.arange(out.shape[1]) / 100.0)
    assert np.abs(out[0, 5:-5] - expected[5:-5]).max() < 0.05  # the 180 Hz tone did not alias
    assert out.shape[1] == 200


def test_padding_and_cropping_to_the_model_length() -> None:
    cycle = table({"x": [1.0, 2.0, 3.0]}, [0, 0.1, 0.2])
    assert to_tensor(cycle, spec_for(("x",), length=5))[0].tolist() == [1, 2, 3, 0, 0]
    assert to_tensor(cycle, spec_for(("x",), length=2))[0].tolist() == [1, 2]


@pytest.mark.parametrize("kind", sim.ANOMALY_TYPES)
def test_every_simulated_anomaly_changes_the_signals(kind: str) -> None:
    normal = sim.simulate_cycle(np.random.default_rng(3), sim.Anomaly(), 50.0)
    anomalous = sim.simulate_cycle(np.random.default_rng(3), sim.Anomaly(kind, 2, 2.0, 0.5), 50.0)
    assert set(normal.columns) >= set(sim.SIGNALS)
    torque = [f"torque_sensor_a_{a}" for a in range(1, 7)] + [f"motor_iq_{a}" for a in range(1, 7)]
    change = max(np.abs(anomalous.columns[s] - normal.columns[s]).max() for s in torque)
    assert change > 0.05


def test_modality_reads_simulated_files_and_draws_them(tmp_path: Path) -> None:
    series = get_modality("series")
    root = series.synthesize(tmp_path / "robot", 2, 1, 2, seed=1)
    files = series.list_files(root / "test")
    assert len(files) == 3 and all(f.suffix == ".csv" for f in files)
    spec = spec_for(sim.SIGNALS, rate_hz=20.0, length=64)
    tensor = series.load(files[0], spec)
    assert tensor.shape == spec.tensor_shape and tensor.dtype == np.float32
    picture = series.render(tensor, np.abs(tensor), spec, 3.0, "ANOMALY", 2.0)
    assert picture.ndim == 3 and picture.dtype == np.uint8
    shown = series.display(files[0], spec)  # eval reports: aligned with the map
    assert shown.shape == (*spec.map_shape, 3) and shown.dtype == np.uint8
    batch = series.synthetic_batch(spec_for(("unknown_signal", "joint_position_1")), 2, 2)
    assert batch.shape == (4, 2, 8) and np.isfinite(batch).all()
