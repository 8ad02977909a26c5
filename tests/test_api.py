"""The Python API on the shared tiny checkpoint and its ONNX export: load, score, decide, train."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

import flowedge
from flowedge.api import ERROR
from flowedge.core.errors import ConfigError
from flowedge.export.calibration_ref import CalibrationRef
from flowedge.modalities.image import read_image

OK, ANOMALY = "OK", "ANOMALY"
EMBEDDED_THRESHOLD = 0.75


@pytest.fixture(scope="module")
def onnx_model(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint exported to ONNX with an embedded calibration threshold."""
    from flowedge.export.onnx_export import export_onnx
    from flowedge.flows.checkpoint import load_checkpoint

    detector, card = load_checkpoint(tiny_checkpoint)
    out = tmp_path_factory.mktemp("api") / "model.onnx"
    export_onnx(detector, card, out, calibration=CalibrationRef(EMBEDDED_THRESHOLD, "ab" * 32, "c"))
    return out


@pytest.fixture(scope="module")
def image(synthetic_dataset: Path) -> Path:
    return sorted((synthetic_dataset / "test" / "good").glob("*.png"))[0]


def test_file_bytes_and_array_score_alike(onnx_model: Path, image: Path) -> None:
    with flowedge.load(onnx_model) as model:
        assert model.threshold == EMBEDDED_THRESHOLD
        assert model.card.detector == "csflow"
        by_path = model.score(image)
        by_bytes = model.score(image.read_bytes(), name="frame")
        by_array = model.score(read_image(image))
    assert by_path.name == str(image) and by_bytes.name == "frame"
    assert by_path.error == "" and np.isfinite(by_path.score)
    assert by_path.score == pytest.approx(by_bytes.score) == pytest.approx(by_array.score)
    assert by_path.decision == (ANOMALY if by_path.score > EMBEDDED_THRESHOLD else OK)
    assert by_path.anomaly_map is not None and by_path.anomaly_map.ndim == 2


def test_bad_sample_is_an_error_result_in_its_place(onnx_model: Path, image: Path) -> None:
    with flowedge.load(onnx_model) as model:
        results = model.score_batch([image, b"not an image", image.parent / "missing.png"])
    assert [r.decision for r in results][1:] == [ERROR, ERROR]
    assert results[0].decision in (OK, ANOMALY)
    assert results[1].score is None and "not a decodable image" in results[1].error
    assert "missing.png" in results[2].error


def test_score_equal_to_threshold_is_ok(onnx_model: Path, image: Path) -> None:
    with flowedge.load(onnx_model) as model:
        score = model.score(image).score
    with flowedge.load(onnx_model, threshold=score) as model:
        assert model.score(image).decision == OK
    with flowedge.load(onnx_model, threshold=np.nextafter(score, -np.inf)) as model:
        assert model.score(image).decision == ANOMALY


def test_checkpoint_without_threshold_scores_without_decision(
    tiny_checkpoint: Path, onnx_model: Path, image: Path, tmp_path: Path, caplog
) -> None:
    checkpoint = shutil.copytree(tiny_checkpoint, tmp_path / "model")
    (checkpoint / "calibration.json").unlink(missing_ok=True)  # another test may calibrate it
    with caplog.at_level(logging.WARNING), flowedge.load(checkpoint) as model:
        result = model.score(image)
    assert model.threshold is None and result.decision is None
    assert "no threshold" in caplog.text
    with flowedge.load(onnx_model) as exported:
        assert result.score == pytest.approx(exported.score(image).score, rel=1e-3)


def test_missing_or_unknown_model_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        flowedge.load(tmp_path / "nope.onnx")
    odd = tmp_path / "model.bin"
    odd.write_bytes(b"\0")
    with pytest.raises(ConfigError, match="cannot tell which backend"):
        flowedge.load(odd)


def test_train_returns_a_loadable_checkpoint(synthetic_dataset: Path, tmp_path: Path) -> None:
    from conftest import tiny_detector_config

    config = tmp_path / "config.yaml"
    detector = tiny_detector_config().model_dump(mode="json")
    config.write_text(yaml.safe_dump({"detector": detector}), encoding="utf-8")
    out = flowedge.train(
        synthetic_dataset, tmp_path / "run", config=config, epochs=1, progress=False
    )
    assert out == tmp_path / "run"
    with flowedge.load(out, threshold=1e9) as model:
        assert model.card.training["epochs"] == 1
    with pytest.raises(ConfigError, match="unknown training option"):
        flowedge.train(synthetic_dataset, tmp_path / "x", epoch=1)
