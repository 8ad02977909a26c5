"""The ``flowedge`` command itself: predict, Ctrl-C, --help defaults, missing extras."""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from flowedge.cli import COMMANDS, EXIT_INTERRUPTED, command_parser, main

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="module")
def images(synthetic_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two good images in a nested folder, one loose defect image and one broken file."""
    folder = tmp_path_factory.mktemp("predict")
    good = sorted((synthetic_dataset / "test" / "good").glob("*.png"))[:2]
    (folder / "line1").mkdir()
    for path in good:
        shutil.copy(path, folder / "line1" / path.name)
    defect = next((synthetic_dataset / "test").glob("*/*.png"))
    shutil.copy(defect, folder / "defect.png")
    (folder / "broken.png").write_bytes(b"\x89PNG truncated")
    (folder / "notes.txt").write_text("not an image", encoding="utf-8")
    return folder


def test_predict_writes_one_row_per_image(
    tiny_checkpoint: Path, images: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "scores.csv"
    code = main(
        ["predict", str(tiny_checkpoint), str(images), "--out", str(out), "--threshold", "0"]
    )
    assert code == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert list(rows[0]) == ["file", "score", "decision", "normalised_score", "error"]
    by_name = {Path(r["file"]).name: r for r in rows}
    assert len(rows) == 4 and "notes.txt" not in by_name
    assert by_name["broken.png"]["decision"] == "ERROR" and by_name["broken.png"]["error"]
    scored = [r for r in rows if r["decision"] != "ERROR"]
    assert all(r["decision"] == ("ANOMALY" if float(r["score"]) > 0 else "OK") for r in scored)
    summary = capsys.readouterr().out
    assert "4 file(s) scored (threshold 0)" in summary and "1 ERROR" in summary


def test_predict_without_inputs_exits_3(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "scores.csv"
    assert main(["predict", str(tiny_checkpoint), str(empty), "--out", str(out)]) == 3
    assert "no input files found" in capsys.readouterr().err


def test_ctrl_c_exits_130(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    def interrupted(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    module = types.ModuleType("interrupted_command")
    module.add_arguments = lambda parser: None
    module.run = interrupted
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(COMMANDS, "slow", (module.__name__, "a command that gets Ctrl-C"))
    assert main(["slow"]) == EXIT_INTERRUPTED == 130
    assert "interrupted" in capsys.readouterr().err


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """A parser and those of its subcommands (``export onnx``, ``export trt``)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return [
        parser,
        *(p for action in subs for sub in action.choices.values() for p in _parsers(sub)),
    ]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_names_every_option_and_its_default(name: str) -> None:
    top, _ = command_parser(name)
    for parser in _parsers(top):
        text = " ".join(parser.format_help().split())
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            assert action.help, f"{parser.prog}: {action.dest} has no help text"
            takes_value = action.option_strings and action.nargs != 0
            if takes_value and action.default not in (None, argparse.SUPPRESS):
                assert "default" in str(action.help) or f"(default: {action.default})" in text, (
                    f"{parser.prog}: {action.dest}'s default {action.default!r} is not shown"
                )


@pytest.mark.parametrize("command", ["train", "eval"])
def test_training_command_without_torch_names_the_extra(
    command: str, synthetic_dataset: Path, tmp_path: Path
) -> None:
    from test_station_no_torch import _env

    args = {
        "train": [str(synthetic_dataset), "--out", str(tmp_path / "run")],
        "eval": [str(tmp_path), str(synthetic_dataset), "--out", str(tmp_path / "eval")],
    }[command]
    done = subprocess.run(
        [sys.executable, "-m", "flowedge.cli", command, *args],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"flowedge {command} needs the training extra: pip install 'flowedge[train]'" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr
