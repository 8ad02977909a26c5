"""DifferNet: transforms, flow maths, the transform mean inside the exported graph, training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flowedge.core.errors import ConfigError
from flowedge.flows.config import BackboneConfig, DifferNetConfig, TrainingConfig
from flowedge.flows.detectors import build_detector
from flowedge.flows.detectors.differnet import DIHEDRAL, dihedral, quarter_turns, undo_dihedral
from flowedge.flows.fit import fit_detector
from tests.test_detectors import assert_spot_found, normal_images

SIZE = 64

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def config(**overrides: object) -> DifferNetConfig:
    values: dict[str, object] = dict(
        backbone=BackboneConfig(weights="none", out_indices=[3]),
        image_size=SIZE,
        n_scales=2,
        n_transforms=4,
        n_blocks=2,
        hidden_features=32,
    )
    return DifferNetConfig(**(values | overrides))


def build(seed: int = 0, **overrides: object):
    torch.manual_seed(seed)
    return build_detector(config(**overrides)).eval()


def perturbed(detector):
    """Random output layers (they start at zero), so the couplings are not the identity."""
    torch.manual_seed(1)
    with torch.no_grad():
        for module in detector.flow.modules():
            if isinstance(module, torch.nn.Sequential):
                module[-1].weight.normal_(0.0, 0.05)
                module[-1].bias.normal_(0.0, 0.05)
    return detector


def test_quarter_turns_are_rot90_and_every_transform_is_undone():
    x = torch.randn(2, 3, 4, 5)
    for turns in range(-3, 5):
        assert torch.equal(quarter_turns(x, turns), torch.rot90(x, turns, dims=(-2, -1)))
    for turns, mirrored in DIHEDRAL:
        assert torch.equal(undo_dihedral(dihedral(x, turns, mirrored), turns, mirrored), x)
    assert len(set(DIHEDRAL)) == 8


def test_shapes_and_the_score_is_the_mean_over_transforms():
    detector = perturbed(build())
    x = torch.randn(3, 3, SIZE, SIZE)
    (feats,) = detector.features(x)
    assert feats.shape == (3, 4, 112 * 2)  # [B, transforms, stage channels x scales]
    with torch.no_grad():
        score, amap = detector.graph_outputs(x)
        # each copy through the flow on its own, then the mean of their scores
        single = [
            (detector.flow(view_feats)[0] ** 2).mean(dim=1) / 2 for view_feats in feats.unbind(1)
        ]
    assert score.shape == (3,) and amap.shape == (3, SIZE, SIZE)
    assert torch.allclose(score, torch.stack(single).mean(dim=0), rtol=1e-5)
    assert not torch.allclose(single[0], single[1])  # the copies really differ
    assert torch.equal(amap, score[:, None, None].expand(-1, SIZE, SIZE))  # the graph's map
    scored, grad_map = detector(x)
    assert torch.allclose(scored, score) and grad_map.shape == (3, SIZE, SIZE)
    assert (grad_map >= 0).all() and grad_map.amax() > 0
    assert detector.score_spec().uses_logdet is False


def test_flow_inverts_and_its_log_det_matches_autograd():
    detector = perturbed(build()).double()
    f = torch.randn(2, detector.dim, dtype=torch.float64)
    z, log_jac = detector.flow(f)
    back, _ = detector.flow(z, rev=True)
    assert torch.allclose(back, f, atol=1e-10)
    jacobian = torch.autograd.functional.jacobian(lambda v: detector.flow(v[None])[0][0], f[0])
    assert torch.allclose(log_jac[0], torch.linalg.slogdet(jacobian)[1], atol=1e-8)


def test_score_is_invariant_to_a_quarter_turn_of_the_input():
    """With the four rotations and no brightness spread, a turned part has the same copies."""
    detector = perturbed(build(brightness=0.0))
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        a, _ = detector.graph_outputs(x)
        b, _ = detector.graph_outputs(torch.rot90(x, 1, dims=(-2, -1)))
    assert torch.allclose(a, b, rtol=1e-5)


def fit(detector, epochs: int) -> list[float]:
    (feats,) = detector.features(normal_images(24, seed=1))
    losses: list[float] = []

    def batches():
        for start in range(0, 24, 8):
            yield [feats[start : start + 8]], None

    fit_detector(detector, batches, TrainingConfig(epochs=epochs, batch_size=8), losses.append)
    return [info["loss"] for info in losses]


def test_training_lowers_loss_and_spots_score_higher_with_a_map_on_the_spot():
    detector = build()
    losses = fit(detector, epochs=8)
    assert sum(losses[-3:]) < sum(losses[:3])
    assert_spot_found(detector)


def test_export_holds_the_transform_mean_and_passes_parity(
    synthetic_dataset: Path, tmp_path: Path
) -> None:
    import onnx
    import onnxruntime as ort

    from flowedge.cli import main
    from flowedge.core import metadata
    from flowedge.export.onnx_graph import get_metadata
    from flowedge.flows.train import train

    model = tmp_path / "model"
    cfg = config(n_transforms=2, brightness=0.0)
    train(
        cfg, TrainingConfig(epochs=1, batch_size=8), synthetic_dataset, model, show_progress=False
    )
    out = tmp_path / "model.onnx"
    assert main(["export", "onnx", str(model), "--out", str(out)]) == 0
    graph = onnx.load(str(out))
    assert json.loads(get_metadata(graph)[metadata.PARITY_KEY])["passed"]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(2, 3, SIZE, SIZE)).astype(np.float32)
    turned = np.ascontiguousarray(np.rot90(x, 2, axes=(2, 3)))
    score, amap = session.run(["score", "map"], {"input": x})
    score_turned, _ = session.run(["score", "map"], {"input": turned})
    # identity + half turn in one call: a half-turned part gives the same two copies
    assert np.allclose(score, score_turned, rtol=1e-5)
    assert amap.shape == (2, SIZE, SIZE) and np.allclose(amap, score[:, None, None])


def test_bad_configs_are_config_errors(tmp_path: Path):
    from flowedge.flows.cmd_train import training_configs

    path = tmp_path / "config.yaml"
    path.write_text("detector:\n  kind: differnet\n  n_transforms: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="n_transforms"):
        training_configs(path, {})
    with pytest.raises(ConfigError, match="image_size .* smallest scale"):
        build_detector(config(image_size=32, n_scales=3))
