"""Where the recipes meet the station history, Sparkplug, evidence and bounded config: a
BASELINING decision or one without a model is stored, published and reviewed like any
other, never a crash, and recipe settings are bounded at load like every other value."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from flowedge.calibration.history.query import Query
from flowedge.calibration.history.review import _mismatch
from flowedge.cli import main
from flowedge.core.errors import EXIT_USAGE, ConfigError
from flowedge.core.sparkplug import decision_metrics
from flowedge.edge.config import EvidenceConfig, load_config, parse_config
from flowedge.edge.loop.evidence import InputKeeper
from flowedge.edge.loop.sample import Sample

RECIPES = {
    "select": {"by": "filename", "pattern": "^(?P<recipe>[A-Z]+)_"},
    "models": {"A": {"path": "a"}, "B": {"path": "b"}},
}


def test_the_history_queries_baselining_decisions() -> None:
    assert Query(decision="BASELINING").decision == "BASELINING"
    with pytest.raises(ConfigError, match="BASELINING"):
        Query(decision="MAYBE")


def test_a_baselining_decision_is_never_given_a_verdict() -> None:
    row = type("Row", (), {"source": "cam1", "seq": 3, "part_id": "p", "decision": "BASELINING"})
    assert "never judged" in _mismatch(row, "false_alarm")  # type: ignore[arg-type]


def test_sparkplug_publishes_a_decision_without_a_model() -> None:
    doc = {
        "decision": "ERROR",
        "score": None,
        "threshold": None,
        "normalised_score": None,
        "model": None,
        "part_id": "X_1.png",
        "seq": 1,
        "error": "recipe X has no model",
        "latency_ms": {"total": 1.0},
    }
    assert decision_metrics(doc)["Model Id"] is None


def test_baselining_inputs_are_not_kept_as_evidence(tmp_path: Path) -> None:
    keeper = InputKeeper(EvidenceConfig(inputs="all", dir=tmp_path), lambda *a, **k: None)
    sample = Sample("cam1", "p.png", None, input_file=str(tmp_path / "p.png"))
    assert keeper.wants(sample, "OK") and not keeper.wants(sample, "BASELINING")


@pytest.mark.parametrize(
    "models, key",
    [
        ({"A": {"path": "a", "intra_op_threads": 10**12}}, "recipes.models.A.intra_op_threads"),
        (
            {"A": {"path": "a", "rebaseline": {"seconds": 1e300}}},
            "recipes.models.A.rebaseline.seconds",
        ),
        (
            {"A": {"path": "a", "rebaseline": {"samples": 10**12}}},
            "recipes.models.A.rebaseline.samples",
        ),
    ],
)
def test_absurd_recipe_values_are_refused_naming_the_key(models: dict, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"recipes": {**RECIPES, "models": models}})
    assert key in str(caught.value)


def test_each_recipes_thread_count_is_checked_against_the_cores(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "recipes:\n  select: {by: filename, pattern: '^(?P<recipe>[A-Z]+)_'}\n"
        "  models:\n    A: {path: a, intra_op_threads: 256}\n"
        f"sources: [{{name: cam, kind: folder, path: {tmp_path}}}]\n"
    )
    with caplog.at_level(logging.WARNING):
        load_config(path)
    assert "recipes.models.A.intra_op_threads 256" in caplog.text


def test_calibrate_refuses_history_with_recipes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["calibrate", str(tmp_path), "--recipes", "--normal", str(tmp_path), "--history", "h"]
    )
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and "--history take one model" in err and "Traceback" not in err
