"""CS-Flow and Gaussian detectors: invertibility, log-det, learning, anomaly ranking, state."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flows.config import BackboneConfig, DetectorConfig, TrainingConfig
from flows.detectors import build_detector
from flows.detectors.csflow import CrossScaleCoupling
from flows.errors import ConfigError


def tiny(kind: str = "csflow", **over) -> DetectorConfig:
    base = dict(kind=kind, backbone=BackboneConfig(weights="none"), image_size=64, n_scales=2,
                n_blocks=2, kernel_sizes=[3, 3], hidden_channels=16)
    return DetectorConfig(**(base | over))


def textures(n: int, seed: int, spot: bool = False) -> torch.Tensor:
    """Smooth random stripes; with ``spot`` a bright square (the anomaly)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.linspace(0, 6.28, 64)
    phase = torch.rand(n, 1, 1, 1, generator=gen) * 6.28
    img = torch.sin(x[None, None, None, :] * 3 + phase).expand(n, 3, 64, 64).clone() * 0.5
    img += 0.05 * torch.randn(n, 3, 64, 64, generator=gen)
    if spot:
        img[:, :, 20:36, 24:40] = 3.0
    return img


def excite(block: CrossScaleCoupling) -> None:
    """Non-zero gammas: a freshly built block is the identity, which would hide errors."""
    for subnet in (block.r1, block.r2):
        subnet.gamma.data.fill_(0.7)


def test_coupling_block_is_invertible_and_logdet_matches_autograd() -> None:
    torch.manual_seed(0)
    dims = [(4, 4, 4), (4, 2, 2)]
    block = CrossScaleCoupling(dims, hidden=8, kernel=3, clamp=3.0, seed=0).double()
    excite(block)
    xs = [torch.randn(1, *d, dtype=torch.float64) for d in dims]
    zs, log_jac = block(xs)
    back, log_jac_rev = block(zs, rev=True)
    for x, b in zip(xs, back, strict=True):
        torch.testing.assert_close(b, x)
    torch.testing.assert_close(log_jac, -log_jac_rev)

    sizes = [x.numel() for x in xs]

    def flat_forward(flat: torch.Tensor) -> torch.Tensor:
        parts = torch.split(flat, sizes)
        out, _ = block([p.reshape(1, *d) for p, d in zip(parts, dims, strict=True)])
        return torch.cat([o.flatten() for o in out])

    jacobian = torch.autograd.functional.jacobian(flat_forward, torch.cat([x.flatten() for x in xs]))
    _, logabsdet = torch.linalg.slogdet(jacobian)
    torch.testing.assert_close(log_jac[0], logabsdet)


def test_whole_flow_inverts_features() -> None:
    torch.manual_seed(0)
    detector = build_detector(tiny(), TrainingConfig())
    for block in detector.blocks:
        excite(block)
    feats = detector.features(textures(2, 0))
    z, log_jac = detector.flow(feats)
    back, log_jac_rev = detector.flow(z, rev=True)
    for f, b in zip(feats, back, strict=True):
        torch.testing.assert_close(b, f, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(log_jac, -log_jac_rev, atol=1e-3, rtol=1e-4)


def test_new_flow_is_identity_so_training_starts_stable() -> None:
    detector = build_detector(tiny(), TrainingConfig())
    feats = detector.features(textures(2, 0))
    z = detector.latents(feats)
    for f, zk in zip(feats, z, strict=True):
        torch.testing.assert_close(zk.sort(dim=1).values, f.sort(dim=1).values)


def fit(kind: str, **over) -> tuple:
    torch.manual_seed(0)
    detector = build_detector(tiny(kind, **over), TrainingConfig(lr=2e-3))
    batches = [detector.features(textures(8, seed)) for seed in range(4)]
    losses: list[float] = []
    detector.fit(lambda: batches, epochs=6, progress=lambda info: losses.append(info["loss"]))
    detector.eval()
    return detector, losses


def test_csflow_training_lowers_the_loss_and_ranks_anomalies_higher() -> None:
    detector, losses = fit("csflow")
    assert np.mean(losses[-4:]) < np.mean(losses[:4])
    with torch.no_grad():
        normal, normal_map = detector(textures(6, 100))
        anomal, anomal_map = detector(textures(6, 100, spot=True))
    assert normal_map.shape == (6, 64, 64)
    assert anomal.min() > normal.max()
    assert anomal_map.mean() > normal_map.mean()


def test_gaussian_ranks_anomalies_higher() -> None:
    detector, _ = fit("gaussian", backbone=BackboneConfig(weights="none", out_indices=[2, 3]))
    with torch.no_grad():
        normal, _ = detector(textures(6, 100))
        anomal, amap = detector(textures(6, 100, spot=True))
    assert amap.shape == (6, 64, 64)
    assert anomal.min() > normal.max()


@pytest.mark.parametrize("kind", ["csflow", "gaussian"])
def test_state_dict_round_trip_reproduces_scores(kind: str) -> None:
    detector, _ = fit(kind)
    fresh = build_detector(tiny(kind), TrainingConfig())
    fresh.load_state_dict(detector.state_dict())
    fresh.eval()
    x = textures(3, 7, spot=True)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x)[0], detector(x)[0])


def test_bad_geometry_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="multiple of"):
        build_detector(tiny(image_size=72), TrainingConfig())
    with pytest.raises(ConfigError, match="kernel_sizes"):
        build_detector(tiny(kernel_sizes=[3]), TrainingConfig())
