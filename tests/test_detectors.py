"""Detectors: flow maths (invertibility, log-det), training, anomaly ranking, persistence."""

from __future__ import annotations

import pytest
import torch

from flowedge.core.errors import ConfigError, DataError
from flowedge.flows.config import (
    DETECTOR_CONFIGS,
    DETECTOR_KINDS,
    BackboneConfig,
    ImageDetectorConfig,
    TrainingConfig,
    detector_config_model,
)
from flowedge.flows.detectors import build_detector, register_detector, registered_detectors
from flowedge.flows.detectors.csflow import CrossScaleCoupling, soft_clamp
from flowedge.flows.fit import fit_detector, planned_epochs

SIZE = 64
# the image detectors (series detectors: tests/test_series_detectors.py)
IMAGE_KINDS = tuple(
    kind
    for kind, model in zip(DETECTOR_KINDS, DETECTOR_CONFIGS, strict=True)
    if issubclass(model, ImageDetectorConfig)
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(kind: str = "csflow", **overrides) -> ImageDetectorConfig:
    values: dict[str, object] = dict(
        backbone=BackboneConfig(weights="none", out_indices=[3]), image_size=SIZE
    )
    if kind == "csflow":
        values |= dict(n_scales=2, n_blocks=2, kernel_sizes=[3, 5], hidden_channels=16)
    elif kind == "ast":  # one epoch per phase: the loop's epochs
        values |= dict(n_blocks=2, kernel_sizes=[3, 1], teacher_hidden=16, student_hidden=16)
        values |= dict(student_blocks=1, teacher_epochs=None, student_epochs=None)
    elif kind == "differnet":
        values |= dict(n_scales=2, n_transforms=2, n_blocks=2, hidden_features=32)
    elif kind == "nfbmr":
        values |= dict(
            n_blocks=2, kernel_sizes=[3, 5], hidden_channels=16, mapping_channels=16, n_residual=1
        )
    else:  # gaussian, cnf: two layers, to exercise the per-layer sums
        values |= dict(backbone=BackboneConfig(weights="none", out_indices=[2, 3]))
    if kind == "cnf":
        values |= dict(
            backbone=dict(weights="none", out_indices=[2, 3]),
            n_blocks=2,
            condition_dim=16,
            decoder_channels=8,
        )
    return detector_config_model(kind)(**(values | overrides))


def build(kind: str = "csflow", seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return build_detector(tiny(kind, **overrides))


def normal_images(n: int, seed: int) -> torch.Tensor:
    """Smooth textured 'parts': low-frequency noise, similar image to image."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, 1, 8, 8, generator=g) * 0.3
    return torch.nn.functional.interpolate(coarse, size=(SIZE, SIZE), mode="bilinear").repeat(
        1, 3, 1, 1
    )


def with_spot(images: torch.Tensor) -> torch.Tensor:
    spotted = images.clone()
    spotted[:, :, 20:32, 24:36] = 4.0
    return spotted


def assert_spot_found(detector) -> None:
    """A trained detector scores spotted images above normal ones, and its map is hottest
    around the spot (rows 20-32, cols 24-36), not in a far corner."""
    detector.eval()
    with torch.no_grad():
        normal_scores, _ = detector(normal_images(6, seed=2))
        spot_scores, spot_maps = detector(with_spot(normal_images(6, seed=2)))
    assert spot_scores.min() > normal_scores.max()
    assert (spot_maps[:, 16:36, 20:40].mean() > spot_maps[:, 48:, 48:].mean()).item()


def perturbed_block(dims, seed: int = 0) -> CrossScaleCoupling:
    """A coupling block whose gammas are non-zero, so it is not the identity."""
    torch.manual_seed(seed)
    block = CrossScaleCoupling(dims, hidden=8, kernel=3, clamp=3.0, seed=seed)
    with torch.no_grad():
        for subnet in (block.r1, block.r2):
            subnet.gamma.uniform_(0.5, 1.0)
    return block.double()


def test_registry_and_config_models_name_the_same_detectors():
    registry = registered_detectors()
    assert set(registry) == set(DETECTOR_KINDS)
    for kind, cls in registry.items():
        assert cls.name == kind and cls.config_model is detector_config_model(kind)
        assert cls.config_model.model_fields["kind"].default == kind


def test_a_detector_without_a_config_model_is_refused():
    with pytest.raises(ValueError, match="'nope' has no config model"):
        register_detector("nope")


def test_soft_clamp_is_bounded_odd_and_has_the_papers_slope():
    s = torch.linspace(-100, 100, 101)
    assert soft_clamp(s, 3.0).abs().max() < 3.0
    assert torch.allclose(soft_clamp(-s, 3.0), -soft_clamp(s, 3.0))
    small = torch.tensor([1e-4])
    assert torch.allclose(soft_clamp(small, 3.0), small * 2 / torch.pi)  # alpha*2/pi*atan(s/alpha)


def test_coupling_block_is_invertible():
    dims = [(6, 8, 8), (6, 4, 4), (6, 2, 2)]
    block = perturbed_block(dims)
    x = [torch.randn(3, *d, dtype=torch.float64) for d in dims]
    z, jac = block(x)
    back, rev_jac = block(z, rev=True)
    assert not torch.allclose(z[0], x[0])
    for a, b in zip(x, back, strict=True):
        assert torch.allclose(a, b, atol=1e-10)
    assert torch.allclose(jac, -rev_jac)


def test_coupling_log_det_matches_autograd_jacobian():
    dims = [(4, 2, 2), (4, 1, 1)]
    block = perturbed_block(dims, seed=1)
    sizes = [4 * 2 * 2, 4]

    def flat_forward(v: torch.Tensor) -> torch.Tensor:
        parts = torch.split(v, sizes)
        z, _ = block([p.reshape(1, *d) for p, d in zip(parts, dims, strict=True)])
        return torch.cat([zk.flatten() for zk in z])

    v = torch.randn(sum(sizes), dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(flat_forward, v)
    _, log_det = block([p.reshape(1, *d) for p, d in zip(torch.split(v, sizes), dims, strict=True)])
    assert torch.allclose(log_det[0], torch.linalg.slogdet(jacobian)[1], atol=1e-8)


def test_whole_flow_inverts():
    detector = build().double()
    for block in detector.graph.module_list:
        for subnet in (block.r1, block.r2):
            torch.nn.init.uniform_(subnet.gamma, 0.2, 0.5)
    feats = [f.double() for f in detector.features(normal_images(2, 0).double())]
    z, _ = detector.flow(feats)
    back, _ = detector.flow(z, rev=True)
    for a, b in zip(feats, back, strict=True):
        assert torch.allclose(a, b, atol=1e-8)


def test_csflow_output_shapes_and_specs():
    detector = build().eval()
    x = normal_images(3, 0)
    feats = detector.features(x)
    assert [tuple(f.shape[-2:]) for f in feats] == [(4, 4), (2, 2)]  # stride 16 at 64 and 32 px
    score, amap = detector(x)
    assert score.shape == (3,) and amap.shape == (3, SIZE, SIZE)
    assert score.dtype == torch.float32 and torch.isfinite(score).all()
    spec = detector.input_spec()
    assert (spec.height, spec.width, spec.channels) == (SIZE, SIZE, 3)
    assert detector.score_spec().uses_logdet is False


@pytest.mark.parametrize("kind", IMAGE_KINDS)
def test_non_square_input_gives_non_square_maps(kind):
    detector = build(kind, image_size=[SIZE, 2 * SIZE]).eval()
    x = torch.randn(2, 3, SIZE, 2 * SIZE)
    with torch.no_grad():
        score, amap = detector(x)
    assert score.shape == (2,) and amap.shape == (2, SIZE, 2 * SIZE)
    spec = detector.input_spec()
    assert (spec.height, spec.width) == detector.map_shape() == (SIZE, 2 * SIZE)


def fit_on_normals(detector, epochs: int) -> list[float]:
    x = normal_images(24, seed=1)
    feats = detector.features(x)
    losses: list[float] = []

    def batches():
        for start in range(0, 24, 8):
            yield [f[start : start + 8] for f in feats], None

    train_cfg = TrainingConfig(epochs=epochs, batch_size=8)
    summary = fit_detector(detector, batches, train_cfg, lambda p: losses.append(p["loss"]))
    planned = planned_epochs(detector, train_cfg)  # all phases (AST: teacher, then student)
    assert summary["steps"] == 3 * planned and summary["epochs"] == planned
    return losses


def test_csflow_training_lowers_loss_and_ranks_spots_higher():
    detector = build()
    losses = fit_on_normals(detector, epochs=8)
    assert sum(losses[-3:]) < sum(losses[:3])
    assert_spot_found(detector)


def test_backbone_stays_frozen_during_fit():
    detector = build()
    before = {k: v.clone() for k, v in detector.backbone.state_dict().items()}
    detector.train()
    assert not detector.backbone.training
    fit_on_normals(detector, epochs=1)
    assert all(torch.equal(before[k], v) for k, v in detector.backbone.state_dict().items())
    assert not any(p.requires_grad for p in detector.backbone.parameters())


@pytest.mark.parametrize("kind", IMAGE_KINDS)
def test_state_dict_round_trip_reproduces_scores(kind):
    detector = build(kind)
    fit_on_normals(detector, epochs=1)
    detector.eval()
    fresh = build(kind, seed=123)
    fresh.load_state_dict(detector.state_dict())
    fresh.eval()
    x = with_spot(normal_images(2, seed=3))
    with torch.no_grad():
        a, b = detector(x), fresh(x)
    assert torch.allclose(a[0], b[0]) and torch.allclose(a[1], b[1])


def test_gaussian_fit_and_score():
    detector = build("gaussian")
    fit_on_normals(detector, epochs=1)
    detector.eval()
    with torch.no_grad():
        normal_scores, maps = detector(normal_images(6, seed=2))
        spot_scores, _ = detector(with_spot(normal_images(6, seed=2)))
    assert maps.shape == (6, SIZE, SIZE) and torch.isfinite(normal_scores).all()
    assert spot_scores.min() > normal_scores.max()


@pytest.mark.parametrize("n_images", [1, 2])
def test_gaussian_refuses_too_few_or_identical_images(n_images):
    detector = build("gaussian")
    feats = detector.features(normal_images(1, seed=0).repeat(n_images, 1, 1, 1))
    expected = "1 usable training image.*at least 2" if n_images == 1 else "do not vary"
    with pytest.raises(DataError, match=expected):
        fit_detector(detector, lambda: [(feats, None)], TrainingConfig())


def test_gaussian_whitening_gives_mahalanobis():
    import numpy as np

    from flowedge.flows.detectors.gaussian import whitening

    rng = np.random.default_rng(0)
    data = rng.normal(size=(4000, 3)) @ np.array([[2.0, 0, 0], [0.5, 1.0, 0], [0, 0, 0.2]])
    mean, w = whitening(data, variance=1.0)
    x = rng.normal(size=(5, 3))
    cov = np.cov(data, rowvar=False)
    expected = np.einsum("bi,ij,bj->b", x - mean, np.linalg.inv(cov), x - mean)
    assert np.allclose(((x - mean) @ w) ** 2 @ np.ones(3), expected, rtol=0.05)


def test_bad_detector_configs_are_config_errors():
    with pytest.raises(ConfigError, match="image_size"):
        build_detector(tiny(image_size=48))
    with pytest.raises(ConfigError, match=r"image_size must be a multiple of 32.*\[64, 80\]"):
        build_detector(tiny(image_size=[64, 80]))
    with pytest.raises(ConfigError, match="kernel_sizes"):
        build_detector(tiny(kernel_sizes=[3]))
    with pytest.raises(ConfigError, match="one out_index"):
        build_detector(tiny(backbone=BackboneConfig(weights="none", out_indices=[2, 3])))
