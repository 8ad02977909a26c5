"""Recipes: each sample to its recipe's model; switches under load lose and misroute
nothing, are timed and announced; an unknown recipe is each sample's ERROR; announced
recipes hold from the sample captured after the announcement."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from mqtt_broker import Broker  # noqa: E402
from runtime_fakes import FakeBackend, fake_card, station_config, validator  # noqa: E402

from flowedge.backends.base import Backend  # noqa: E402
from flowedge.core.errors import ConfigError  # noqa: E402
from flowedge.edge.cmd_run import Station  # noqa: E402
from flowedge.edge.config import FlowedgeConfig  # noqa: E402
from flowedge.edge.loop.pipeline import Pipeline  # noqa: E402
from flowedge.edge.loop.recipes import parse_announcement, recipe_name  # noqa: E402
from flowedge.edge.metrics import Metrics  # noqa: E402
from flowedge.edge.models_config import ModelConfig  # noqa: E402
from flowedge.edge.sources import Frame  # noqa: E402
from flowedge.edge.spool import Spool  # noqa: E402

SIZE = 32


class RecipeBackend(FakeBackend):
    """A recipe's model: its own weights hash (so decisions name it); refuses to score once
    closed, so a model closed under a sample in flight would show as an ERROR."""

    def __init__(self, tag: str, delay_s: float = 0.0) -> None:
        super().__init__(delay_s)
        self.card = replace(fake_card(), weights_sha256=tag * 64)
        self.closed = False

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.closed:
            raise RuntimeError("scored by a closed model")
        return super().infer(batch)

    def close(self) -> None:
        self.closed = True


class SlowOpener:
    """Opens a recipe's model (named by its folder) after a delay, as a real load takes."""

    def __init__(self, delay_s: float = 0.05) -> None:
        self.delay_s, self.opened = delay_s, []

    def __call__(self, cfg: ModelConfig) -> Backend:
        time.sleep(self.delay_s)
        tag = Path(cfg.path).name
        self.opened.append(tag)
        return RecipeBackend(tag, delay_s=0.005)


def model_id(tag: str) -> str:
    return f"fake-{tag * 12}"


def recipes_config(tmp: Path, select: dict[str, Any], **more: Any) -> FlowedgeConfig:
    models = {name: {"path": str(tmp / "models" / name.lower()), "threshold": 3.0} for name in "AB"}
    sections = {"pipeline": {"heatmaps": "none", "max_batch": 4, "queue_size": 4}} | more
    return station_config(tmp, model=None, recipes={"select": select, "models": models}, **sections)


def run(pipeline: Pipeline, spool: Spool) -> list[tuple[str, dict]]:
    pipeline.start()
    assert pipeline.wait(60), "pipeline did not finish"
    rows = [(r.kind, json.loads(r.body)) for r in spool.after(0, 100_000)]
    spool.close()
    return rows


def open_pipeline(cfg: FlowedgeConfig, opener: SlowOpener, **kwargs: Any) -> Pipeline:
    spool = Spool(cfg.spool.path, cfg.spool.max_messages, cfg.spool.overflow)
    return Pipeline(cfg, None, None, spool, Metrics(), opener=opener, **kwargs)


def of_kind(rows: list[tuple[str, dict]], kind: str) -> list[dict]:
    return [doc for k, doc in rows if k == kind]


def test_filename_recipes_switch_under_load_without_loss_or_misrouting(tmp_path: Path) -> None:
    """Blocks of three parts alternate between recipes; one model may stay open, so every
    switch closes one model and opens the other while the previous parts are in flight."""
    folder = tmp_path / "images"
    folder.mkdir()
    plan = ["A" if (i // 3) % 2 == 0 else "B" for i in range(30)]
    for i, recipe in enumerate(plan):
        image = np.full((SIZE, SIZE, 3), (i * 37) % 256, np.uint8)
        cv2.imwrite(str(folder / f"{i:03d}_{recipe}.png"), image)
    cfg = recipes_config(tmp_path, {"by": "filename", "pattern": r"_(?P<recipe>[A-Z]+)\.png$"})
    cfg.recipes.max_loaded = 1  # type: ignore[union-attr]
    opener = SlowOpener()
    pipeline = open_pipeline(cfg, opener)
    rows = run(pipeline, pipeline.spool)
    docs = of_kind(rows, "decision")
    assert [d["part_id"] for d in docs] == [f"{i:03d}_{r}.png" for i, r in enumerate(plan)]
    check = validator("decision")
    for doc, recipe in zip(docs, plan, strict=True):
        check.validate(doc)
        assert doc["recipe"] == recipe and doc["model"]["id"] == model_id(recipe.lower())
        assert doc["decision"] in ("OK", "ANOMALY"), doc["error"]
    switches = [e for e in of_kind(rows, "event") if e["kind"] == "recipe_switched"]
    assert [e["details"]["recipe"] for e in switches] == plan[::3]
    assert switches[0]["details"]["previous"] is None and all(
        e["details"]["waited_s"] >= 0 for e in switches
    )
    registry = pipeline.router.metrics.registry  # type: ignore[attr-defined]
    assert registry.get_sample_value("flowedge_recipe_switch_seconds_count") == len(switches)
    assert registry.get_sample_value(
        "flowedge_recipe_decisions_total", {"recipe": "B", "decision": "OK"}
    ) + registry.get_sample_value(
        "flowedge_recipe_decisions_total", {"recipe": "B", "decision": "ANOMALY"}
    ) == plan.count("B")
    assert len(opener.opened) > 2  # closed and opened again: one model kept at a time


class ScriptedSource:
    """In-memory frames; before some of them the PLC announces a recipe (through the
    station's set_recipe command), so each frame's recipe is known exactly."""

    modality = "image"

    def __init__(self, name: str, script: list[str | None], announce: Any) -> None:
        self.name, self.script, self.announce = name, script, announce

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        for i, announced in enumerate(self.script):
            if announced is not None:
                self.announce(announced)
            yield Frame(f"part{i:03d}", np.full((SIZE, SIZE, 3), i % 200, np.uint8))


def test_announced_recipes_hold_from_the_next_capture_and_unknown_ones_are_errors(
    tmp_path: Path,
) -> None:
    # frames 0-2 come before any announcement; C has no model
    script: list[str | None] = [None] * 40
    script[3], script[12], script[20], script[26], script[30] = "A", "B", "C", "A", "B"
    expected, current = [], None
    for announced in script:
        current = announced or current
        expected.append(current)
    station: dict[str, Station] = {}

    def announce(recipe: str) -> None:
        station["it"].commands.run("set_recipe", {"recipe": recipe}, "opcua ns=2;s=Recipe")

    cfg = recipes_config(
        tmp_path,
        {"by": "command"},
        commands={"allowed": ["set_recipe"]},
        sources=[{"name": "cam1", "kind": "folder", "path": str(tmp_path)}],
    )
    station["it"] = it = Station(
        Path("unused.yaml"),
        cfg,
        None,
        opener=SlowOpener(0.1),
        source_factory=lambda c, ctx: ScriptedSource(c.name, script, announce),
    )
    rows = run(it.pipeline, it.spool)
    it.pipeline.router.close()
    docs = of_kind(rows, "decision")
    assert len(docs) == len(script)
    check = validator("decision")
    for doc, recipe in zip(docs, expected, strict=True):
        check.validate(doc)
        assert doc.get("recipe") == recipe
        if recipe in ("A", "B"):
            assert doc["model"]["id"] == model_id(recipe.lower()) and doc["decision"] != "ERROR"
        elif recipe == "C":
            assert doc["decision"] == "ERROR" and "recipe 'C' has no model" in doc["error"]
            assert doc["model"] is None and doc["threshold"] is None
        else:
            assert doc["decision"] == "ERROR" and "no recipe was announced" in doc["error"]
    commands = [e for e in of_kind(rows, "event") if e["kind"] == "command"]
    assert [e["details"]["arguments"]["recipe"] for e in commands] == ["A", "B", "C", "A", "B"]
    assert "has no model" in commands[2]["message"]


def test_set_recipe_is_refused_unless_allowed_and_only_for_command_recipes(tmp_path) -> None:
    cfg = recipes_config(tmp_path, {"by": "command", "initial": "A"})
    station = Station(Path("unused.yaml"), cfg, None, opener=SlowOpener(0.0))
    try:
        refused = station.commands.run("set_recipe", {"recipe": "B"}, "test")
        assert not refused.accepted and "not allowed" in refused.message
        assert station.pipeline.router.selector.current() == "A"  # type: ignore[union-attr]
        station.commands.allowed.add("set_recipe")
        assert station.commands.run("set_recipe", {"recipe": " B "}, "test").accepted
        assert station.pipeline.router.selector.current() == "B"  # type: ignore[union-attr]
        assert not station.commands.run("set_recipe", {"recipe": 3}, "test").accepted
    finally:
        station.pipeline.router.close()
        station.spool.close()


def test_mqtt_recipe_topic_routes_the_samples_captured_after_it(tmp_path: Path) -> None:
    broker = Broker(tmp_path).start()
    try:
        folder = tmp_path / "images"
        folder.mkdir()
        for i in range(6):
            cv2.imwrite(str(folder / f"p{i}.png"), np.full((SIZE, SIZE, 3), 50, np.uint8))
        import paho.mqtt.publish as publish

        topic = "plant/line1/recipe"
        publish.single(topic, '{"recipe": "B"}', qos=1, retain=True, port=broker.port)
        cfg = recipes_config(
            tmp_path,
            {"by": "mqtt", "topic": topic},
            mqtt={"enabled": False, "port": broker.port},
        )
        pipeline = open_pipeline(cfg, SlowOpener())
        selector = pipeline.router.selector  # type: ignore[attr-defined]
        deadline = time.monotonic() + 20
        while selector.current() != "B" and time.monotonic() < deadline:
            time.sleep(0.02)
        rows = run(pipeline, pipeline.spool)
        pipeline.router.close()
    finally:
        broker.stop()
    docs = of_kind(rows, "decision")
    assert [d["recipe"] for d in docs] == ["B"] * 6
    assert {d["model"]["id"] for d in docs} == {model_id("b")}


def test_announcements_and_column_values_name_recipes() -> None:
    assert parse_announcement(b" B \n") == "B"
    assert parse_announcement(b'{"recipe": "Product 4711"}') == "Product 4711"
    for bad in (b"", b'{"state": "B"}', b"x" * 65, b"A\x00"):
        with pytest.raises(ValueError):
            parse_announcement(bad)
    assert recipe_name(3.0) == "3" and recipe_name(2.5) == "2.5"


@pytest.mark.parametrize(
    ("recipes", "message"),
    [
        ({"select": {"by": "command", "initial": "X"}}, "select.initial 'X' is not one"),
        ({"select": {"by": "filename", "pattern": "^[A-Z]+_"}}, "named group"),
        ({"select": {"by": "filename", "pattern": "(?P<recipe>"}}, "not a regular expression"),
        ({"select": {"by": "bluetooth"}}, "by"),
        ({"select": {"by": "column", "column": "program"}, "models": {}}, "models"),
    ],
)
def test_recipe_config_errors_name_the_key(tmp_path: Path, recipes: dict, message: str) -> None:
    models = {"A": {"path": str(tmp_path / "a"), "threshold": 1.0}}
    with pytest.raises(ConfigError, match=message):
        station_config(tmp_path, model=None, recipes={"models": models} | recipes)


def test_model_and_recipes_together_and_a_half_set_baseline_are_refused(tmp_path: Path) -> None:
    models = {"A": {"path": str(tmp_path / "a"), "threshold": 1.0}}
    recipes = {"select": {"by": "column", "column": "program"}, "models": models}
    with pytest.raises(ConfigError, match="either 'model'"):
        station_config(tmp_path, recipes=recipes)
    for rebaseline in ({}, {"samples": 5, "seconds": 3.0}, {"samples": 1}):
        with pytest.raises(ConfigError, match="rebaseline"):
            station_config(tmp_path, model={"path": "m", "threshold": 1, "rebaseline": rebaseline})


def test_the_commented_recipes_example_in_config_yaml_is_valid(tmp_path: Path) -> None:
    import yaml

    text = (Path(__file__).resolve().parents[1] / "config.yaml").read_text(encoding="utf-8")
    block = text[text.index("# recipes:") : text.index("# end of recipes")]
    example = yaml.safe_load("\n".join(line[2:] for line in block.splitlines()))["recipes"]
    rebaseline = text[text.index("  # rebaseline:") : text.index("# One model per recipe")]
    model = yaml.safe_load("\n".join(line[4:] for line in rebaseline.splitlines() if line))
    cfg = station_config(tmp_path, model=None, recipes=example)
    assert list(cfg.recipes.models) == ["housing-A", "housing-B"]  # type: ignore[union-attr]
    assert cfg.recipes.select.by == "mqtt"  # type: ignore[union-attr]
    single = station_config(tmp_path, model={"path": "m", "threshold": 1.0} | model)
    assert single.model.rebaseline is not None and single.model.rebaseline.samples == 20


def test_each_recipe_has_its_own_threshold_status_and_reload(tmp_path: Path) -> None:
    import yaml

    script: list[str | None] = [None] * 6
    script[0], script[3] = "A", "B"
    station: dict[str, Station] = {}
    cfg = recipes_config(
        tmp_path,
        {"by": "command"},
        commands={"allowed": ["set_recipe", "set_threshold"]},
        sources=[{"name": "cam1", "kind": "folder", "path": str(tmp_path)}],
    )
    path = tmp_path / "station.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude={"model"})))
    station["it"] = it = Station(
        path,
        cfg,
        None,
        opener=SlowOpener(0.0),
        source_factory=lambda c, ctx: ScriptedSource(
            c.name, script, lambda r: station["it"].commands.run("set_recipe", {"recipe": r}, "t")
        ),
    )
    it.start()
    assert it.pipeline.wait(30)
    status = it.status_fields()
    assert status["recipe_in_force"] == {"cam1": "B"}
    assert {name: sum(s["counts"].values()) for name, s in status["recipes"].items()} == {
        "A": 3,
        "B": 3,
    }
    refused = it.commands.run("set_threshold", {"value": 9.0}, "t")
    assert not refused.accepted and "name the recipe" in refused.message
    assert it.commands.run("set_threshold", {"value": 9.0, "recipe": "B"}, "t").accepted
    assert it.pipeline.router.states["B"].policy.threshold == 9.0  # type: ignore[attr-defined]
    assert it.pipeline.router.states["A"].policy.threshold == 3.0  # type: ignore[attr-defined]
    data = yaml.safe_load(path.read_text())
    data["recipes"]["models"]["A"]["threshold"] = 4.5
    path.write_text(yaml.safe_dump(data))
    it.reload()
    states = it.pipeline.router.states  # type: ignore[attr-defined]
    assert (states["A"].policy.threshold, states["B"].policy.threshold) == (4.5, 3.0)
    it.shutdown("test over", False, threading.Event())
