"""Signals that drove an anomalous cycle, named by the station for an ONNX MTS-Flow graph.

The graph's map is flat over signals, so the series modality's ``explain`` occludes each
signal of a cycle decided ANOMALY (modalities.series_explain) and its ``decision_fields``
names them in the decision's ``cycle``; a simulated friction fault on axis 2 must be traced
to axis 2's torque and motor current, at a station without torch.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from flowedge.core.card import SeriesInput
from flowedge.modalities import get_modality
from flowedge.modalities import series_synthetic as sim
from flowedge.modalities.series_explain import top_signals
from flowedge.modalities.series_io import SignalTable

RATE = 10.0
SIGNALS = [f"{name}_{axis}" for name in ("torque_sensor_a", "motor_iq") for axis in (1, 2, 3)]


def test_occlusion_drivers_name_only_signals_that_lower_the_score() -> None:
    flat = np.ones((3, 5))
    drops = np.array([2.0, -1.0, 5.0])
    assert top_signals(flat, drops, ("a", "b", "c")) == [
        {"signal": "c", "score_drop": 5.0},
        {"signal": "a", "score_drop": 2.0},
    ]
    assert top_signals(flat, None, ("a", "b", "c")) == []  # flat map, nothing measured


SPEC = SeriesInput(signals=("a", "b", "c"), units=("",) * 3, mean=(0,) * 3, std=(1,) * 3, length=4)
CYCLE = np.array([[1.0] * 4, [0.0] * 4, [2.0] * 4], dtype=np.float32)


def _energy(batch: np.ndarray) -> np.ndarray:
    """A stand-in model: the score is the cycle's energy, so each signal carries its own."""
    assert len(batch) <= 2  # never more than max_batch at once
    return (batch**2).sum(axis=(1, 2))


def test_series_explain_occludes_each_signal_only_when_the_map_cannot_name_them() -> None:
    series = get_modality("series")
    score = float(_energy(CYCLE[None])[0])
    drops = series.explain(CYCLE, np.ones((3, 4)), score, SPEC, _energy, max_batch=2)
    assert drops.tolist() == [4.0, 0.0, 16.0]  # 4 steps of 1**2 and of 2**2
    telling = np.array([[1.0] * 4, [0.0] * 4, [3.0] * 4])
    assert series.explain(CYCLE, telling, score, SPEC, _energy, max_batch=2) is None


def test_series_decision_fields_complete_the_cycle_with_its_drivers() -> None:
    series = get_modality("series")
    context = {"cycle": {"id": "7", "start_s": 10.0}, "other": 1}
    fields = series.decision_fields(context, np.ones((3, 4)), np.array([4.0, 0.0, 16.0]), SPEC)
    cycle = fields["cycle"]
    assert cycle["id"] == "7" and fields["other"] == 1
    assert [s["signal"] for s in cycle["top_signals"]] == ["c", "a"]
    assert cycle["top_time_ranges"] and cycle["top_time_ranges"][0]["start_s"] >= 10.0
    assert "top_signals" not in context["cycle"]  # the source's context is not changed
    no_cycle = {"event": {"label": "x"}}
    assert series.decision_fields(no_cycle, None, None, SPEC) == no_cycle


@pytest.fixture(scope="module")
def mtsflow_graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from flowedge.export.checked import ExportRequest, run_export
    from flowedge.flows.config import MTSFlowConfig, TrainingConfig
    from flowedge.flows.data.series import train_series

    tmp = tmp_path_factory.mktemp("mtsflow-graph")
    train = [c.table for c in sim.simulate_set(24, 0, seed=0, rate_hz=RATE)]
    config = MTSFlowConfig(signals=SIGNALS, rate_hz=RATE, n_blocks=2)
    training = TrainingConfig(epochs=5, batch_size=8, lr=8e-4, adam_eps=1e-8)
    train_series(train, config, training, tmp / "mtsflow")
    run_export(ExportRequest(tmp / "mtsflow", tmp / "model.onnx"))
    return tmp / "model.onnx"


def _log(cycles: list[SignalTable], path: Path) -> Path:
    lines = ["time,sample," + ",".join(SIGNALS)]
    for number, table in enumerate(cycles):
        for i in range(len(table)):
            values = ",".join(f"{table.columns[s][i]:.6f}" for s in SIGNALS)
            lines.append(f"{table.time_s[i] + 100 * number:.3f},{number},{values}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_station_names_the_faulty_axis_signals_of_an_anomalous_cycle(
    mtsflow_graph: Path, tmp_path: Path
) -> None:
    from runtime_fakes import validator
    from test_station_no_torch import run_station_without_torch

    from flowedge.backends.onnxrt import OnnxRuntimeBackend
    from flowedge.modalities.series_prep import to_tensor

    rng = np.random.default_rng(9)
    normal = sim.simulate_cycle(rng, sim.Anomaly(), RATE)
    friction = sim.simulate_cycle(rng, sim.Anomaly("axis_friction", axis=1, level=3.0), RATE)
    closing = sim.simulate_cycle(rng, sim.Anomaly(), RATE)  # starts, so the fault cycle is closed
    backend = OnnxRuntimeBackend.open(mtsflow_graph, device="cpu", threads=1)
    scores, _ = backend.infer(
        np.stack([to_tensor(t, backend.card.input) for t in (normal, friction)])
    )
    assert scores[0] < scores[1]
    threshold = float(scores.mean())

    log = _log([normal, friction, closing], tmp_path / "robot.csv")
    tail = (
        f"[{{name: robot1, kind: tail, path: {log}, log: {{cycle_column: sample}}, "
        "segment: {mode: cycle_id, column: sample}}]"
    )
    done = run_station_without_torch(tmp_path, mtsflow_graph, tail, threshold, "--max-samples", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    with sqlite3.connect(tmp_path / "spool.sqlite") as db:
        payloads = [
            json.loads(bytes(p))
            for (p,) in db.execute("select body from records where kind = 'decision'")
        ]
    decisions = {p["cycle"]["id"]: p for p in payloads if "cycle" in p}
    for payload in decisions.values():
        validator("decision").validate(payload)
    ok, fault = decisions["0"], decisions["1"]
    assert (ok["decision"], fault["decision"]) == ("OK", "ANOMALY")
    assert ok["cycle"]["top_signals"] == []  # normal cycles pay nothing for drivers
    named = [entry["signal"] for entry in fault["cycle"]["top_signals"]]
    assert set(named[:2]) == {"torque_sensor_a_2", "motor_iq_2"}, fault["cycle"]
    assert fault["cycle"]["top_time_ranges"]
    assert "drivers" in fault["latency_ms"] and "drivers" not in ok["latency_ms"]
