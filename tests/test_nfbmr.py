"""NF-BMR: shapes, the stop gradient, training, spot ranking, export parity, config errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from pydantic import ValidationError

from flowedge.cli import main
from flowedge.core.errors import ConfigError
from flowedge.flows.config import BackboneConfig, TrainingSections
from flowedge.flows.detectors import build_detector
from tests.test_detectors import (
    SIZE,
    assert_spot_found,
    build,
    fit_on_normals,
    normal_images,
    tiny,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_shapes_and_latents_are_the_two_mapping_residuals():
    detector = build("nfbmr").eval()
    x = normal_images(3, 0)
    feats = detector.features(x)
    assert [tuple(f.shape) for f in feats] == [(3, 112, 4, 4)]  # Lite0 stage 3: stride 16
    with torch.no_grad():
        source, target = detector.latents(feats)
        z, _ = detector.target(feats[0])
        score, amap = detector(x)
    assert source.shape == target.shape == z.shape == feats[0].shape
    assert torch.allclose(source, feats[0] - detector.to_source(z))
    assert torch.allclose(target, z - detector.to_target(feats[0]))
    assert score.shape == (3,) and amap.shape == (3, SIZE, SIZE)
    assert score.dtype == amap.dtype == torch.float32 and torch.isfinite(score).all()
    assert detector.score_spec().kind == "mean_mapping_residual"
    assert not detector.score_spec().uses_logdet


def test_the_flow_inverts_and_the_middle_block_is_shared():
    detector = build("nfbmr").double()
    for block in detector.graph.module_list:
        for subnet in (block.r1, block.r2):
            torch.nn.init.uniform_(subnet.gamma, 0.2, 0.5)
    y = torch.randn(2, 112, 4, 4, dtype=torch.float64)
    z, _ = detector.target(y)
    back, _ = detector.graph([z], rev=True)
    assert not torch.allclose(z, y) and torch.allclose(back[0], y, atol=1e-8)
    n = tiny("nfbmr").n_residual
    assert detector.to_source.body[1 + n] is detector.to_target.body[1 + n]


def test_mapping_losses_do_not_train_the_flow():
    """The stop gradient: the flow's gradient is that of its likelihood alone."""
    detector = build("nfbmr")
    y = detector.features(normal_images(4, 0))
    detector.loss(y, None).backward()
    with_mappings = [p.grad.clone() for p in detector.graph.parameters()]
    detector.zero_grad()
    from flowedge.flows.detectors.csflow import flow_nll

    z, log_jac = detector.target(y[0])
    flow_nll([z], log_jac).backward()
    for a, p in zip(with_mappings, detector.graph.parameters(), strict=True):
        assert torch.allclose(a, p.grad, atol=1e-7)


def test_training_lowers_the_loss_and_ranks_a_spot_higher_where_it_is():
    detector = build("nfbmr")
    losses = fit_on_normals(detector, epochs=8)
    assert sum(losses[-3:]) < sum(losses[:3])
    assert int(detector.scale_updates) == 24 and (detector.residual_scale != 1).all()
    assert_spot_found(detector)


def test_bad_configs_name_the_key():
    with pytest.raises(ConfigError, match="one backbone.out_indices"):
        build_detector(tiny("nfbmr", backbone=BackboneConfig(weights="none", out_indices=[2, 3])))
    with pytest.raises(ConfigError, match="kernel_sizes"):
        build_detector(tiny("nfbmr", kernel_sizes=[3]))
    with pytest.raises(ConfigError, match=r"image_size must be a multiple of 16.*\[64, 72\]"):
        build_detector(tiny("nfbmr", image_size=[64, 72]))
    for key, value in (("n_scales", 2), ("mapping_channels", 0), ("n_residual", -1)):
        with pytest.raises(ValidationError, match=f"detector.{key}"):
            TrainingSections.model_validate({"detector": {"kind": "nfbmr", key: value}})


def test_trained_model_exports_with_parity(synthetic_dataset: Path, tmp_path: Path):
    config = tmp_path / "config.yaml"
    detector = tiny("nfbmr").model_dump(mode="json")
    training = {"epochs": 2, "batch_size": 8}
    config.write_text(yaml.safe_dump({"detector": detector, "training": training}))
    model = tmp_path / "model"
    args = ["train", str(synthetic_dataset), "--config", str(config), "--out", str(model)]
    assert main([*args, "--no-progress"]) == 0
    assert main(["export", "onnx", str(model), "--out", str(tmp_path / "m.onnx")]) == 0
