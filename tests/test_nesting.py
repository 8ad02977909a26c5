"""Deeply nested YAML and JSON files are a clear configuration or model error, not a RecursionError."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flowedge.cli import main
from flowedge.core.card import CardError, ModelCard
from flowedge.core.errors import EXIT_USAGE, ConfigError, FlowedgeError
from flowedge.core.yamlfile import MAX_DEPTH, read_yaml

DEEP = 10_000


@pytest.mark.parametrize(
    "text",
    ["[" * DEEP + "]" * DEEP, "{a: " * DEEP + "1" + "}" * DEEP, "- " * DEEP + "1\n"],
    ids=["flow lists", "flow mappings", "block lists"],
)
def test_a_deeply_nested_yaml_file_is_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"deep\.yaml, line \d+.*nested deeper than {MAX_DEPTH}"):
        read_yaml(path, "config file")


def test_nesting_a_config_needs_is_read(tmp_path: Path) -> None:
    path = tmp_path / "fine.yaml"
    path.write_text("a: " + "[" * 20 + "1" + "]" * 20 + "\n", encoding="utf-8")
    value = read_yaml(path, "config file")["a"]
    for _ in range(20):
        value = value[0]
    assert value == 1


@pytest.mark.parametrize("command", ["run", "check", "train"])
def test_commands_reading_a_deep_config_exit_2(tmp_path: Path, command: str, capsys) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("[" * DEEP + "]" * DEEP, encoding="utf-8")
    argv = {
        "run": ["run", "--config", str(path)],
        "check": ["check", "--config", str(path)],
        "train": ["train", str(tmp_path), "--config", str(path), "--out", str(tmp_path / "m")],
    }[command]
    assert main(argv) == EXIT_USAGE
    captured = capsys.readouterr()
    assert "nested deeper than" in captured.out + captured.err
    assert "RecursionError" not in captured.err


def test_a_deeply_nested_json_file_names_the_file(tmp_path: Path) -> None:
    card = tmp_path / "card.json"
    card.write_text("[" * DEEP + "]" * DEEP, encoding="utf-8")
    with pytest.raises(CardError, match=r"card\.json: not valid JSON \(nested too deeply"):
        ModelCard.load(card)


def test_a_deeply_nested_calibration_for_export_is_refused(tmp_path: Path) -> None:
    from flowedge.export.calibration_ref import load_calibration

    path = tmp_path / "calibration.json"
    path.write_text(
        json.dumps({"threshold": 1.0, "x": 0})[:-1] + ', "y": ' + "[" * DEEP + "]" * DEEP + "}"
    )
    with pytest.raises(
        FlowedgeError, match=r"calibration\.json: not valid JSON \(nested too deeply"
    ):
        load_calibration(path)


def test_a_deeply_nested_onnx_metadata_entry_is_a_card_error() -> None:
    from flowedge.core.metadata import json_entry

    with pytest.raises(CardError, match="nested too deeply"):
        json_entry({"card": "[" * DEEP + "]" * DEEP}, "card", "model.onnx")
