"""``flowedge export onnx`` on the shared tiny checkpoint: exit codes, files, embedded metadata."""

from __future__ import annotations

import json
from pathlib import Path

import onnx

from flowedge.cli import main
from flowedge.core import metadata
from flowedge.export.onnx_graph import get_metadata


def test_export_onnx_fp32_and_fp16(tiny_checkpoint: Path, tmp_path: Path) -> None:
    calibration = tmp_path / "calibration.json"
    calibration.write_text(json.dumps({"threshold": 0.5}), encoding="utf-8")
    out = tmp_path / "model.onnx"
    assert (
        main(
            [
                "export",
                "onnx",
                str(tiny_checkpoint),
                "--out",
                str(out),
                "--calibration",
                str(calibration),
            ]
        )
        == 0
    )
    meta = get_metadata(onnx.load(str(out)))
    assert json.loads(meta[metadata.PARITY_KEY])["passed"]
    assert json.loads(meta[metadata.CALIBRATION_KEY])["threshold"] == 0.5
    assert metadata.card_from_metadata(meta, "t").calibration_sha256
    half = tmp_path / "half.onnx"
    assert main(["export", "onnx", str(tiny_checkpoint), "--out", str(half), "--fp16"]) == 0
    assert get_metadata(onnx.load(str(half)))[metadata.PRECISION_KEY] == "fp16"


def test_too_tight_tolerance_fails_with_exit_5(
    tiny_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "model.onnx"
    assert main(["export", "onnx", str(tiny_checkpoint), "--out", str(out), "--rtol", "1e-12"]) == 5
    assert not out.exists() and (tmp_path / "model.onnx.failed").exists()
    assert "parity check failed" in capsys.readouterr().err


def test_bad_calibration_file_is_a_usage_error(
    tiny_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    calibration = tmp_path / "calibration.json"
    calibration.write_text(json.dumps({"thresh": 1}), encoding="utf-8")
    code = main(
        [
            "export",
            "onnx",
            str(tiny_checkpoint),
            "--out",
            str(tmp_path / "m.onnx"),
            "--calibration",
            str(calibration),
        ]
    )
    assert code == 2 and "threshold" in capsys.readouterr().err
