"""Changeover re-baselining in the station: after the start, a setpoint step or a recipe
switch the first samples are BASELINING and re-estimate the input statistics; the later
ones are judged with them; a baseline far outside training's is refused with an event."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from runtime_fakes import FakeBackend, station_config, validator  # noqa: E402

from flowedge.backends.base import Backend  # noqa: E402
from flowedge.core.card import ModelCard, ScoreSpec, SeriesInput  # noqa: E402
from flowedge.core.errors import ConfigError  # noqa: E402
from flowedge.edge.cmd_run import Station  # noqa: E402
from flowedge.edge.models_config import ModelConfig  # noqa: E402
from flowedge.edge.sources import Frame  # noqa: E402
from flowedge.modalities.series_io import SignalTable  # noqa: E402

SIGNALS = ("pressure", "flow")
SPEC = SeriesInput(
    signals=SIGNALS, units=("bar", "l/min"), rate_hz=10.0, length=20, mean=(0.0, 0.0), std=(1, 1)
)


class SeriesBackend(Backend):
    """Score: the mean square of the standardised signals (1 for a standardised normal)."""

    name = "onnxruntime"

    def __init__(self, training: dict | None = None) -> None:
        card = ModelCard(
            "fake", {}, {}, SPEC, ScoreSpec(kind="mean"), training or {}, weights_sha256="c" * 64
        )
        super().__init__(card)

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.square(batch).mean(axis=(1, 2)), np.square(batch)


def cycle(level: float, setpoint: float, rng: np.random.Generator, spike: bool = False) -> Any:
    """A pump cycle at ``level`` (both signals) around its noise; ``spike``: a fault."""
    values = level + rng.normal(0, 1, (2, 20))
    if spike:
        values[0, 8:12] += 12
    columns = {name: values[i] for i, name in enumerate(SIGNALS)}
    columns["setpoint"] = np.full(20, setpoint)
    return SignalTable("c", columns, time_s=np.arange(20) / 10.0, signals=SIGNALS)


class Cycles:
    """A pump log's cycles, in memory."""

    modality = "series"

    def __init__(self, name: str, plan: list[tuple[float, float, bool]]) -> None:
        self.name, self.plan = name, plan

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        rng = np.random.default_rng(0)
        for i, (level, setpoint, spike) in enumerate(self.plan):
            yield Frame(f"c{i:03d}", cycle(level, setpoint, rng, spike))


def run_station(
    tmp: Path, plan: list, training: dict | None = None, **sections: Any
) -> tuple[list[dict], list[dict]]:
    """``training``: what the fake model's card says of its training."""
    cfg = station_config(
        tmp, sources=[{"name": "pump", "kind": "folder", "path": str(tmp)}], **sections
    )
    station = Station(
        Path("unused.yaml"),
        cfg,
        None,
        backend=SeriesBackend(training) if cfg.recipes is None else None,
        opener=lambda model: SeriesBackend(training),
        source_factory=lambda c, ctx: Cycles(c.name, plan),
    )
    station.start()
    assert station.pipeline.wait(30)
    rows = [(r.kind, json.loads(r.body)) for r in station.spool.after(0, 10_000)]
    station.shutdown("test over", False, threading.Event())
    docs = [doc for kind, doc in rows if kind == "decision"]
    check = validator("decision")
    for doc in docs:
        check.validate(doc)
    return docs, [doc for kind, doc in rows if kind == "event"]


def test_start_and_setpoint_steps_rebaseline_and_a_broken_baseline_is_refused(tmp_path) -> None:
    plan = [(2.5, 1.0, False)] * 6  # the start: 3 baseline cycles, then judged in their units
    plan += [(2.5, 1.0, True)]  # a fault after the baseline
    plan += [(-2.0, 2.0, False)] * 5  # setpoint 2: a plausible new level
    plan += [(80.0, 3.0, False)] * 5  # setpoint 3: far outside what training saw
    model = {"path": "m", "threshold": 3.0, "rebaseline": {"samples": 3, "setpoint": {}}}
    model["rebaseline"]["setpoint"] = {"value": "setpoint", "step": 0.5}
    docs, events = run_station(tmp_path, plan, model=model)
    decisions = [d["decision"] for d in docs]
    assert decisions[:7] == ["BASELINING"] * 3 + ["OK"] * 3 + ["ANOMALY"]
    assert decisions[7:12] == ["BASELINING"] * 3 + ["OK"] * 2
    assert decisions[12:] == ["BASELINING"] * 3 + ["ANOMALY"] * 2  # the model's own statistics
    for doc in docs[:3]:
        assert doc["score"] is None and doc["normalised_score"] is None and doc["threshold"] == 3.0
    kinds = [(e["kind"], e["details"].get("reason")) for e in events if "baseline" in e["kind"]]
    assert ("baseline_started", "station start") in kinds
    assert ("rebaselined", "setpoint 1 -> 2") in kinds
    refused = [e for e in events if e["kind"] == "baseline_refused"]
    assert len(refused) == 1 and refused[0]["severity"] == "error"
    assert "pressure level moved" in refused[0]["message"]


def test_without_rebaseline_nothing_is_baselining(tmp_path: Path) -> None:
    docs, events = run_station(
        tmp_path, [(0.0, 1.0, False)] * 3, model={"path": "m"} | {"threshold": 3.0}
    )
    assert [d["decision"] for d in docs] == ["OK"] * 3
    assert not [e for e in events if "baseline" in e["kind"]]


def test_a_recipe_switch_rebaselines_that_recipes_model(tmp_path: Path) -> None:
    plan = [(2.5, 1.0, False)] * 4 + [(-2.5, 2.0, False)] * 4 + [(2.5, 1.0, False)] * 3
    models = {
        name: {"path": name, "threshold": 3.0, "rebaseline": {"samples": 2, "on_start": False}}
        for name in ("1", "2")
    }
    recipes = {"select": {"by": "column", "column": "setpoint"}, "models": models}
    docs, events = run_station(tmp_path, plan, model=None, recipes=recipes)
    assert [d["recipe"] for d in docs] == ["1"] * 4 + ["2"] * 4 + ["1"] * 3
    # the start is no changeover here (on_start false): judged with the card's statistics
    assert [d["decision"] for d in docs] == ["ANOMALY"] * 4 + ["BASELINING"] * 2 + ["OK"] * 2 + [
        "BASELINING"
    ] * 2 + ["OK"]
    reasons = [e["details"]["reason"] for e in events if e["kind"] == "rebaselined"]
    assert reasons == ["recipe switch from 1", "recipe switch from 2"]


def test_a_seconds_window_closes_at_the_first_sample_after_it(tmp_path: Path) -> None:
    # all cycles come within far less than a minute: the window never closes
    model = {"path": "m", "threshold": 3.0, "rebaseline": {"seconds": 60.0}}
    docs, _ = run_station(tmp_path, [(2.5, 1.0, False)] * 4, model=model)
    assert [d["decision"] for d in docs] == ["BASELINING"] * 4
    model["rebaseline"] = {"seconds": 1e-6}  # closes once two samples are in
    docs, events = run_station(tmp_path / "again", [(2.5, 1.0, False)] * 4, model=model)
    assert [d["decision"] for d in docs] == ["BASELINING"] * 2 + ["OK"] * 2
    assert [e["details"]["samples"] for e in events if e["kind"] == "rebaselined"] == [2]


def test_an_image_model_cannot_rebaseline(tmp_path: Path) -> None:
    cfg = station_config(
        tmp_path, model={"path": "m", "threshold": 3, "rebaseline": {"samples": 3}}
    )
    with pytest.raises(ConfigError, match="cannot re-baseline"):
        Station(Path("unused.yaml"), cfg, None, backend=FakeBackend())
    assert ModelConfig(path="m").rebaseline is None


def test_a_model_trained_per_run_is_run_only_re_baselined(tmp_path: Path) -> None:
    per_run = {"data": {"per_run": ["light", "heavy"]}}  # flowedge train --per-run
    with pytest.raises(ConfigError, match="model: model fake-c* was trained per run"):
        run_station(tmp_path, [], per_run, model={"path": "m", "threshold": 3.0})
    model = {"path": "m", "threshold": 3.0, "rebaseline": {"samples": 3}}
    docs, _ = run_station(tmp_path / "again", [(2.5, 1.0, False)] * 5, per_run, model=model)
    assert [d["decision"] for d in docs] == ["BASELINING"] * 3 + ["OK"] * 2
