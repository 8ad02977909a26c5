"""One exit-code rule for every command (README.md's table), and paths no file system takes.

2: the command line or a config file is wrong, a path that does not exist or cannot be
one included; 3: data that exists but cannot be used; 4: a model file that exists but
cannot be used or belongs to another model; 5: a check or gate failed.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from flowedge.cli import main
from flowedge.core.errors import EXIT_DATA, EXIT_MODEL, EXIT_USAGE

Argv = Callable[[Path, Path, Path], list[str]]  # (tmp_path, checkpoint, dataset) -> argv


def exit_code(argv: list[str]) -> int:
    """``flowedge ARGV``'s exit status, argparse's own refusals (SystemExit) included."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def station_config(tmp: Path, **model: object) -> Path:
    """A station replaying an existing folder, MQTT and metrics off; ``model`` keys on top."""
    images = tmp / "images"
    images.mkdir(exist_ok=True)
    config = {
        "model": {"path": str(tmp / "model.onnx"), "threshold": 1.0, **model},
        "sources": [{"name": "cam1", "kind": "folder", "path": str(images)}],
        "mqtt": {"enabled": False},
        "metrics": {"enabled": False},
        "spool": {"path": str(tmp / "spool.sqlite")},
        "pipeline": {"heatmap_dir": str(tmp / "heatmaps")},
    }
    path = tmp / "station.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def folder(path: Path, *files: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name in files:
        (path / name).write_text("not a sample", encoding="utf-8")
    return path


def damaged(checkpoint: Path, tmp: Path) -> Path:
    copy = tmp / "damaged"
    shutil.copytree(checkpoint, copy)
    weights = copy / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    return copy


def text(path: Path, content: str) -> Path:
    path.write_text(content, encoding="utf-8")
    return path


GOOD = "test/good"
CASES: dict[str, tuple[Argv, int, str]] = {
    "predict: no model file": (
        lambda t, m, d: ["predict", str(t / "gone.onnx"), str(d / GOOD), "--out", str(t / "s")],
        EXIT_USAGE,
        "gone.onnx not found",
    ),
    "predict: no such input": (
        lambda t, m, d: ["predict", str(m), str(t / "nothing"), "--out", str(t / "s.csv")],
        EXIT_USAGE,
        "no such file or folder",
    ),
    "predict: no calibration file": (
        lambda t, m, d: (
            ["predict", str(m), str(d / GOOD), "--out", str(t / "s.csv")]
            + ["--calibration", str(t / "none.json")]
        ),
        EXIT_USAGE,
        "none.json not found",
    ),
    "predict: damaged calibration file": (
        lambda t, m, d: (
            ["predict", str(m), str(d / GOOD), "--out", str(t / "s.csv")]
            + ["--calibration", str(text(t / "c.json", "{"))]
        ),
        EXIT_MODEL,
        "not valid JSON",
    ),
    "predict: folder without samples": (
        lambda t, m, d: ["predict", str(m), str(folder(t / "e", "a.txt")), "--out", str(t / "s")],
        EXIT_DATA,
        "no input files found",
    ),
    "eval: no checkpoint": (
        lambda t, m, d: ["eval", str(t / "gone"), str(d), "--out", str(t / "eval")],
        EXIT_USAGE,
        "gone not found",
    ),
    "eval: no test folder": (
        lambda t, m, d: ["eval", str(m), str(t / "gone"), "--out", str(t / "eval")],
        EXIT_USAGE,
        "gone not found",
    ),
    "eval: test folder without defects": (
        lambda t, m, d: (
            ["eval", str(m), str(folder(t / "test" / "good", "a.png").parent)]
            + ["--out", str(t / "eval")]
        ),
        EXIT_DATA,
        "at least one defect subfolder",
    ),
    "eval: damaged checkpoint": (
        lambda t, m, d: ["eval", str(damaged(m, t)), str(d), "--out", str(t / "eval")],
        EXIT_MODEL,
        "does not match the card",
    ),
    "train: no data folder": (
        lambda t, m, d: ["train", str(t / "gone"), "--out", str(t / "m")],
        EXIT_USAGE,
        "gone not found",
    ),
    "train: folder without samples": (
        lambda t, m, d: ["train", str(folder(t / "e", "a.txt")), "--out", str(t / "m")],
        EXIT_DATA,
        "no image files",
    ),
    "train: no backbone weights file": (
        lambda t, m, d: (
            ["train", str(d), "--out", str(t / "m"), "--detector", "gaussian"]
            + ["--image-size", "32", "--backbone-weights", str(t / "none.pth")]
        ),
        EXIT_USAGE,
        "none.pth not found",
    ),
    "calibrate: no checkpoint": (
        lambda t, m, d: (
            ["calibrate", str(t / "gone"), "--normal", str(d / GOOD)] + ["--out", str(t / "c.json")]
        ),
        EXIT_USAGE,
        "gone not found",
    ),
    "calibrate: no normal folder": (
        lambda t, m, d: (
            ["calibrate", str(m), "--normal", str(t / "gone")] + ["--out", str(t / "c.json")]
        ),
        EXIT_USAGE,
        "gone is not a directory",
    ),
    "export onnx: no checkpoint": (
        lambda t, m, d: ["export", "onnx", str(t / "gone"), "--out", str(t / "m.onnx")],
        EXIT_USAGE,
        "gone not found",
    ),
    "export onnx: opset 5": (
        lambda t, m, d: ["export", "onnx", str(m), "--out", str(t / "m.onnx"), "--opset", "5"],
        EXIT_USAGE,
        "opset 5 is too old",
    ),
    "export onnx: no calibration file": (
        lambda t, m, d: (
            ["export", "onnx", str(m), "--out", str(t / "m.onnx")]
            + ["--calibration", str(t / "none.json")]
        ),
        EXIT_USAGE,
        "none.json not found",
    ),
    "export onnx: no samples folder": (
        lambda t, m, d: (
            ["export", "onnx", str(m), "--out", str(t / "m.onnx")] + ["--samples", str(t / "gone")]
        ),
        EXIT_USAGE,
        "--samples",
    ),
    "export trt: no graph": (
        lambda t, m, d: ["export", "trt", str(t / "gone.onnx")],
        EXIT_USAGE,
        "gone.onnx not found",
    ),
    "upgrade-card: no checkpoint": (
        lambda t, m, d: ["upgrade-card", str(t / "gone")],
        EXIT_USAGE,
        "gone not found",
    ),
    "run: no config file": (
        lambda t, m, d: ["run", "--config", str(t / "gone.yaml")],
        EXIT_USAGE,
        "gone.yaml not found",
    ),
    "run: no model file": (
        lambda t, m, d: ["run", "--config", str(station_config(t))],
        EXIT_USAGE,
        "model.onnx not found",
    ),
    "check: no model file": (
        lambda t, m, d: ["check", "--config", str(station_config(t))],
        EXIT_USAGE,
        "model.onnx not found",
    ),
    "check: no calibration file": (
        lambda t, m, d: [
            "check",
            "--config",
            str(station_config(t, path=str(m), calibration=str(t / "none.json"))),
        ],
        EXIT_USAGE,
        "none.json not found",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_command_follows_the_rule(
    case: str, tiny_checkpoint: Path, synthetic_dataset: Path, tmp_path: Path, capsys
) -> None:
    argv, expected, message = CASES[case]
    code = exit_code(argv(tmp_path, tiny_checkpoint, synthetic_dataset))
    out = capsys.readouterr()
    said = out.out + out.err
    assert (code, message in said) == (expected, True), said[-2000:]
    assert "Traceback" not in said


LONG = "/tmp/" + "x" * 4096  # a 4 KB path, its last name far over 255 bytes
DEEP = "/tmp/" + "/".join(["d" * 200] * 25)  # names that fit, 5 KB together

# (tmp, checkpoint, dataset, path) -> argv with ``path`` in one path argument or config key
LongArgv = Callable[[Path, Path, Path, str], list[str]]


def long_config(tmp: Path, key: str, path: str) -> Path:
    """The station config with ``key`` (``section.name`` or ``sources.path``) set to ``path``."""
    config = yaml.safe_load(station_config(tmp).read_text(encoding="utf-8"))
    section, name = key.split(".")
    if section == "sources":
        config["sources"][0][name] = path
    elif section == "detector":
        config["detector"] = {"kind": "gaussian", "backbone": {"weights": path}}
    else:
        config[section][name] = path
    return text(tmp / "long.yaml", yaml.safe_dump(config))


LONG_PATHS: dict[str, LongArgv] = {
    "predict MODEL": lambda t, m, d, p: ["predict", p, str(d), "--out", str(t / "s.csv")],
    "predict INPUT": lambda t, m, d, p: ["predict", str(m), p, "--out", str(t / "s.csv")],
    "predict --out": lambda t, m, d, p: ["predict", str(m), str(d), "--out", p],
    "predict --calibration": lambda t, m, d, p: (
        ["predict", str(m), str(d), "--out", "s.csv"] + ["--calibration", p]
    ),
    "eval CHECKPOINT": lambda t, m, d, p: ["eval", p, str(d), "--out", str(t / "e")],
    "eval TEST_ROOT": lambda t, m, d, p: ["eval", str(m), p, "--out", str(t / "e")],
    "eval --out": lambda t, m, d, p: ["eval", str(m), str(d), "--out", p],
    "calibrate CHECKPOINT": lambda t, m, d, p: ["calibrate", p, "--normal", str(d)],
    "calibrate --normal": lambda t, m, d, p: ["calibrate", str(m), "--normal", p],
    "calibrate --out": lambda t, m, d, p: ["calibrate", str(m), "--normal", str(d), "--out", p],
    "calibrate --update": lambda t, m, d, p: (
        ["calibrate", str(m), "--normal", str(d)] + ["--update", p]
    ),
    "export onnx CHECKPOINT": lambda t, m, d, p: ["export", "onnx", p],
    "export onnx --out": lambda t, m, d, p: ["export", "onnx", str(m), "--out", p],
    "export onnx --calibration": lambda t, m, d, p: ["export", "onnx", str(m), "--calibration", p],
    "export onnx --samples": lambda t, m, d, p: ["export", "onnx", str(m), "--samples", p],
    "export trt MODEL": lambda t, m, d, p: ["export", "trt", p],
    "export trt --int8-images": lambda t, m, d, p: ["export", "trt", "m.onnx", "--int8-images", p],
    "train DATA_DIR": lambda t, m, d, p: ["train", p, "--out", str(t / "m")],
    "train --out": lambda t, m, d, p: ["train", str(d), "--out", p],
    "train --config": lambda t, m, d, p: ["train", str(d), "--out", str(t / "m"), "--config", p],
    "train --backbone-weights": lambda t, m, d, p: (
        ["train", str(d), "--out", str(t / "m")] + ["--backbone-weights", p]
    ),
    "train detector.backbone.weights": lambda t, m, d, p: (
        ["train", str(d), "--out", str(t / "m")]
        + ["--config", str(long_config(t, "detector.weights", p))]
    ),
    "upgrade-card CHECKPOINT": lambda t, m, d, p: ["upgrade-card", p],
    "demo --out": lambda t, m, d, p: ["demo", "--out", p],
    "run --config": lambda t, m, d, p: ["run", "--config", p],
    "check --config": lambda t, m, d, p: ["check", "--config", p],
    **{
        f"{command} {key}": (
            lambda t, m, d, p, command=command, key=key: [
                command,
                "--config",
                str(long_config(t, key, p)),
            ]
        )
        for command in ("run", "check")
        for key in (
            "model.path",
            "model.calibration",
            "sources.path",
            "spool.path",
            "pipeline.heatmap_dir",
        )
    },
}


@pytest.mark.parametrize("case", sorted(LONG_PATHS))
def test_a_path_no_file_system_takes_is_a_usage_error(
    case: str, tiny_checkpoint: Path, synthetic_dataset: Path, tmp_path: Path, capsys
) -> None:
    argv = LONG_PATHS[case](tmp_path, tiny_checkpoint, synthetic_dataset, LONG)
    assert exit_code(argv) == EXIT_USAGE
    out = capsys.readouterr()
    said = out.out + out.err
    assert "too long" in said and "give a shorter path" in said, said[-2000:]
    where = case.split(" ")[-1]  # the argument (argparse names it) or the config key
    named = where.lower().replace("-", "_").lstrip("_").split(".")[-1]
    assert named in said.lower().replace("-", "_").replace(".", "_"), said[-2000:]
    assert "Traceback" not in said


def test_a_path_of_short_names_too_long_together_is_refused(tmp_path: Path, capsys) -> None:
    assert exit_code(["predict", "model.onnx", "in", "--out", DEEP]) == EXIT_USAGE
    assert "is too long: 5029 bytes" in capsys.readouterr().err
