"""``flowedge export onnx`` on the shared tiny checkpoint: exit codes, files, embedded metadata."""

from __future__ import annotations

import json
from pathlib import Path

import onnx

from flowedge.cli import main
from flowedge.core import metadata
from flowedge.core.card import ModelCard
from flowedge.export.onnx_graph import get_metadata


def _calibration(path: Path, weights_sha256: str) -> Path:
    """The two keys export reads: the threshold and the weights it is bound to."""
    data = {"threshold": 0.5, "weights_sha256": weights_sha256}
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_export_onnx_fp32_and_fp16(tiny_checkpoint: Path, tmp_path: Path) -> None:
    card = ModelCard.load(tiny_checkpoint / "card.json")
    calibration = _calibration(tmp_path / "calibration.json", card.weights_sha256)
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


def test_bad_calibration_file_is_a_model_error(
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
    assert code == 4 and "threshold" in capsys.readouterr().err


def test_calibration_of_another_model_is_refused_before_export(
    tiny_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "model.onnx"
    args = ["export", "onnx", str(tiny_checkpoint), "--out", str(out), "--calibration"]
    foreign = _calibration(tmp_path / "foreign.json", "0" * 64)
    assert main([*args, str(foreign)]) == 4
    unbound = tmp_path / "unbound.json"
    unbound.write_text(json.dumps({"threshold": 0.5}), encoding="utf-8")
    assert main([*args, str(unbound)]) == 4
    err = capsys.readouterr().err
    assert "belongs to weights 000000000000, not to the exported model" in err
    assert "names no 'weights_sha256'" in err and not out.exists()


def test_unusable_out_is_refused_before_export(
    tiny_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    taken = tmp_path / "taken"
    taken.write_text("x")
    assert main(["export", "onnx", str(tiny_checkpoint), "--out", str(taken / "m.onnx")]) == 2
    assert main(["export", "onnx", str(tiny_checkpoint), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a file, so no directory can be created" in err and "is a directory" in err
    assert "Traceback" not in err
