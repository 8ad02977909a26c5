"""AST: training phases in order, shapes, anomaly ranking and map, ONNX export, config errors."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from pydantic import ValidationError

from flowedge.cli import main
from flowedge.core import metadata
from flowedge.core.errors import ConfigError
from flowedge.export.onnx_graph import get_metadata
from flowedge.flows.config import ASTConfig, BackboneConfig, TrainingConfig, TrainingSections
from flowedge.flows.detectors import build_detector
from flowedge.flows.fit import fit_detector, planned_epochs
from flowedge.flows.positional import positional_encoding
from tests.test_detectors import assert_spot_found, normal_images

SIZE = 64

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_ast(**overrides: object) -> ASTConfig:
    values: dict[str, object] = dict(
        backbone=BackboneConfig(weights="none", out_indices=[3]),
        image_size=SIZE,
        n_blocks=2,
        kernel_sizes=[3, 1],
        teacher_hidden=16,
        student_hidden=16,
        student_blocks=1,
        pos_enc_channels=8,
    )
    return ASTConfig(**(values | overrides))


def build(seed: int = 0, **overrides: object):
    torch.manual_seed(seed)
    return build_detector(tiny_ast(**overrides))


def fit(detector, n: int = 24, batch: int = 8, epochs: int = 1, progress=None) -> dict:
    feats = detector.features(normal_images(n, seed=1))

    def batches():
        for start in range(0, n, batch):
            yield [f[start : start + batch] for f in feats], None

    return fit_detector(
        detector, batches, TrainingConfig(epochs=epochs, batch_size=batch), progress
    )


def snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_phases_run_teacher_then_student_each_moving_only_its_own_parameters():
    detector = build(teacher_epochs=2, student_epochs=1)
    teacher0, student0 = snapshot(detector.teacher), snapshot(detector.student)
    at_switch: dict[str, list[torch.Tensor]] = {}

    def progress(info: dict[str, float]) -> None:
        if info["step"] == 6:  # 3 batches x 2 teacher epochs: the teacher phase's last step
            at_switch["teacher"], at_switch["student"] = (
                snapshot(detector.teacher),
                snapshot(detector.student),
            )

    summary = fit(detector, progress=progress)
    assert [p.name for p in detector.training_phases(1e-3)] == ["teacher", "student"]
    assert summary["epochs"] == 3 == planned_epochs(detector, TrainingConfig(epochs=7))
    assert summary["steps"] == 9
    assert {"teacher_final_loss", "student_final_loss"} <= set(summary)
    # phase 1 moved the teacher only, phase 2 the student only
    assert not same(at_switch["teacher"], teacher0) and same(at_switch["student"], student0)
    assert same(snapshot(detector.teacher), at_switch["teacher"])
    assert not same(snapshot(detector.student), student0)
    assert not detector.training  # the loop leaves it in eval mode


def test_phase_epochs_default_to_the_training_section():
    detector = build(teacher_epochs=None, student_epochs=None)
    assert planned_epochs(detector, TrainingConfig(epochs=3)) == 6


def test_the_training_log_line_counts_both_phases():
    """`flowedge train` logs the epochs before the detector exists: the config says them."""
    assert ASTConfig().epochs_summary(16) == "16 + 16 epoch(s) (teacher, then student)"
    assert ASTConfig(teacher_epochs=4).epochs_summary(16).startswith("4 + 16 ")


def test_shapes_and_stacked_stages():
    detector = build(backbone=BackboneConfig(weights="none", out_indices=[2, 3])).eval()
    x = normal_images(3, seed=0)
    feats = detector.features(x)
    assert [tuple(f.shape[1:]) for f in feats] == [(40, 8, 8), (112, 4, 4)]
    z_teacher, z_student = detector.latents(feats)
    assert z_teacher.shape == z_student.shape == (3, 152, 8, 8)  # on the stride-8 grid
    score, amap = detector(x)
    assert score.shape == (3,) and amap.shape == (3, SIZE, SIZE)
    assert (amap >= 0).all() and torch.isfinite(score).all()
    assert detector.score_spec().kind == "mean_student_teacher_sq"


def test_positional_encoding_matches_the_cflow_layout():
    pe = positional_encoding(8, 3, 5)
    assert pe.shape == (8, 3, 5)
    assert torch.allclose(pe[0, 0], torch.sin(torch.arange(5.0)))  # column, lowest frequency
    assert torch.allclose(pe[5, :, 0], torch.cos(torch.arange(3.0)))  # row, lowest frequency
    assert torch.equal(pe[0, 0], pe[0, 2]) and torch.equal(pe[4, :, 0], pe[4, :, 3])


@pytest.mark.parametrize("image_score", ["mean", "max"])
def test_spotted_images_score_higher_with_the_map_peak_at_the_spot(image_score):
    detector = build(image_score=image_score, teacher_epochs=4, student_epochs=8)
    fit(detector)
    assert_spot_found(detector)


def test_fp16_export_passes_parity_with_both_latents_cut(
    synthetic_dataset: Path, tmp_path: Path
) -> None:
    """fp32 export and the station: tests/test_image_detectors_station.py."""
    from flowedge.flows.train import train

    run = tmp_path / "model"
    train(
        tiny_ast(teacher_epochs=1, student_epochs=1),
        TrainingConfig(epochs=1, batch_size=8),
        synthetic_dataset,
        run,
        show_progress=False,
    )
    out = tmp_path / "half.onnx"
    assert main(["export", "onnx", str(run), "--out", str(out), "--fp16"]) == 0
    meta = get_metadata(onnx.load(str(out)))
    assert meta[metadata.PRECISION_KEY] == "fp16"
    assert json.loads(meta[metadata.PARITY_KEY])["passed"]
    assert len(json.loads(meta[metadata.LATENTS_KEY])) == 2  # teacher and student z


def test_config_errors_name_the_key():
    with pytest.raises(ValidationError, match=r"kernel_sizes needs 2 entries"):
        tiny_ast(kernel_sizes=[3])
    with pytest.raises(ValidationError, match="kernel_sizes must be odd"):
        tiny_ast(kernel_sizes=[3, 2])
    with pytest.raises(ValidationError, match="multiple of 4"):
        tiny_ast(pos_enc_channels=6)
    with pytest.raises(ValidationError, match="hidden_channels"):  # a CS-Flow key
        TrainingSections.model_validate({"detector": {"kind": "ast", "hidden_channels": 8}})
    with pytest.raises(ConfigError, match=r"image_size must be a multiple of 16.*\[64, 72\]"):
        build_detector(tiny_ast(image_size=[64, 72]))
