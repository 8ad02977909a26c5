"""Configuration errors name the key path and the expectation; the CLI exits 2 without a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flowedge.cli import main
from flowedge.core.errors import EXIT_USAGE, ConfigError
from flowedge.edge.config import load_config, parse_config

REPO = Path(__file__).resolve().parents[1]


def _error(data: object) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="station.yaml")
    return str(info.value)


def test_defaults_are_valid() -> None:
    config = parse_config({})
    assert config.detector.kind == "csflow" and config.sources == []


@pytest.mark.skipif(
    not (REPO / "config.yaml").is_file(), reason="no config.yaml in the repository yet"
)
def test_example_config_is_valid() -> None:
    config = load_config(REPO / "config.yaml")
    assert config.sources and config.detector.backbone.name


def test_a_key_of_another_detector_is_named() -> None:
    message = _error({"detector": {"kind": "gaussian", "n_blocks": 4}})
    assert "detector.n_blocks: unknown key" in message and "1 problem(s)" in message


def test_image_size_is_one_side_or_height_and_width() -> None:
    assert parse_config({"detector": {"image_size": [256, 512]}}).detector.input_hw == (256, 512)
    assert parse_config(
        {"detector": {"kind": "gaussian", "image_size": 256}}
    ).detector.input_hw == (
        256,
        256,
    )
    assert "detector.image_size: give one side or [height, width]" in _error(
        {"detector": {"image_size": [256, 512, 3]}}
    )


def test_detector_configs_validate_without_torch() -> None:
    """The station checks config.yaml with the detector models and must not pull in torch."""
    code = (
        "import sys; import flowedge.edge.config, flowedge.flows.config; "
        "assert not {'torch', 'timm', 'FrEIA'} & set(sys.modules), 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_key_names_its_path() -> None:
    message = _error({"mqtt": {"hots": "broker"}})
    assert "mqtt.hots: unknown key" in message
    assert message.startswith("station.yaml: invalid configuration (1 problem(s))")


def test_wrong_enum_names_path_choices_and_value() -> None:
    message = _error(
        {"sources": [{"name": "cam", "kind": "folder", "path": "x", "backpressure": "drop"}]}
    )
    assert (
        "sources[0].backpressure: Input should be 'block' or 'drop_oldest' (got 'drop')" in message
    )


def test_missing_source_path_is_explained() -> None:
    message = _error(
        {
            "sources": [
                {"name": "ok", "kind": "folder", "path": "x"},
                {"name": "cam", "kind": "watch"},
            ]
        }
    )
    assert "sources[1]: a watch source needs 'path'" in message
    assert "got {" not in message  # the whole section is not dumped into the message


def test_several_problems_are_all_listed() -> None:
    message = _error({"detector": {"image_size": 8, "kind": "flow"}, "training": {"epochs": 0}})
    assert "3 problem(s)" in message
    for path in ("detector.image_size", "detector.kind", "training.epochs"):
        assert path in message


@pytest.mark.parametrize(
    "text, expected",
    [
        ("- a\n- b\n", "top level must be a mapping"),
        ("site: [unclosed\n", "not valid YAML"),
    ],
)
def test_malformed_files(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_config(path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")


def test_train_cli_bad_config_exits_2_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "detector:\n  kind: csflow\n  backbone:\n    wieghts: none\ntraining:\n  epochs: -1\n"
    )
    code = main(["train", str(tmp_path), "--out", str(tmp_path / "out"), "--config", str(path)])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert "detector.backbone.wieghts: unknown key" in err
    assert "training.epochs: Input should be greater than or equal to 1 (got -1)" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_train_cli_flag_is_validated_like_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["train", str(tmp_path), "--out", str(tmp_path / "out"), "--image-size", "16"])
    err = capsys.readouterr().err
    assert (
        code == EXIT_USAGE
        and "command line" in err
        and "detector.image_size" in err
        and "Traceback" not in err
    )
