"""CNF (paper 001): synthetic defects, training, training-only normalisation, export, config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from flowedge.core.errors import ConfigError
from flowedge.export.checked import ExportRequest, run_export
from flowedge.flows.checkpoint import save_checkpoint
from flowedge.flows.config import CNFConfig, TrainingConfig
from flowedge.flows.detectors import build_detector
from flowedge.flows.fit import fit_detector
from flowedge.flows.synthetic_defects import (
    DefectRecipe,
    object_mask,
    perlin_mask,
    perlin_noise,
    synthesize,
)
from flowedge.flows.train import build_card
from tests.test_detectors import normal_images

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 64


def tiny_cnf(**overrides) -> CNFConfig:
    values: dict[str, object] = dict(
        backbone=dict(weights="none", out_indices=[2, 3]),
        image_size=SIZE,
        n_blocks=2,
        condition_dim=16,
        decoder_channels=8,
    )
    return CNFConfig(**(values | overrides))


def build(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return build_detector(tiny_cnf(**overrides))


def fit(detector, x: torch.Tensor, epochs: int) -> list[float]:
    losses: list[float] = []

    def batches():
        for start in range(0, len(x), 8):
            yield [x[start : start + 8]], None

    fit_detector(
        detector,
        batches,
        TrainingConfig(epochs=epochs, batch_size=8, lr=2e-3),
        lambda p: losses.append(p["loss"]),
    )
    return losses


# --- synthetic defects -------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(64, 64), (48, 80)])
def test_perlin_masks_are_binary_in_range_and_deterministic(shape):
    masks = [perlin_mask(shape, np.random.default_rng(seed)) for seed in (1, 1, 2)]
    assert masks[0].shape == shape and masks[0].dtype == np.float32
    assert set(np.unique(masks[0])) <= {0.0, 1.0}
    assert np.array_equal(masks[0], masks[1]) and not np.array_equal(masks[0], masks[2])
    noise = perlin_noise(shape, (4, 8), np.random.default_rng(0))
    assert noise.shape == shape and np.abs(noise).max() <= np.sqrt(2)


def test_some_perlin_masks_cover_part_of_the_image():
    cover = [perlin_mask((64, 64), np.random.default_rng(s)).mean() for s in range(20)]
    assert any(0 < c < 0.9 for c in cover)


def test_synthetic_defects_change_only_the_masked_pixels_with_soft_labels():
    x = normal_images(6, seed=0).numpy()
    out, labels = synthesize(x, np.random.default_rng(3), DefectRecipe())
    again, _ = synthesize(x, np.random.default_rng(3), DefectRecipe())
    assert np.array_equal(out, again)  # deterministic by seed
    assert labels.shape == (6, 1, SIZE, SIZE) and labels.min() >= 0 and labels.max() < 1
    changed = np.abs(out - x).max(axis=1) > 0
    inside = labels[:, 0] > 0
    assert not (changed & ~inside).any()  # nothing changes outside the defect mask
    assert changed.any() and (labels[:, 0][inside] >= 0.5).all()  # soft: 0.5..1 inside


def test_otsu_object_mask_picks_the_bright_or_dark_side():
    image = np.zeros((3, 32, 32), dtype=np.float32)
    image[:, 8:24, 8:24] = 1.0
    bright, dark = object_mask(image, "bright"), object_mask(image, "dark")
    assert bright[16, 16] == 1 and bright[2, 2] == 0 and dark[16, 16] == 0 and dark[2, 2] == 1
    assert (object_mask(image, "none") == 1).all()


# --- the detector ------------------------------------------------------------------------


def test_training_lowers_the_loss_and_finetunes_only_the_deepest_stage():
    detector = build()
    before = {k: v.clone() for k, v in detector.backbone.state_dict().items()}
    losses = fit(detector, normal_images(16, seed=1), epochs=4)
    assert sum(losses[-2:]) < sum(losses[:2])
    changed = {
        k for k, v in detector.backbone.state_dict().items() if not torch.equal(v, before[k])
    }
    assert changed and all(
        k.startswith("model.blocks.3") or k.startswith("model.blocks.4") for k in changed
    )  # stride-16 stage only; batch-norm stats untouched
    assert not any("running" in k for k in changed)


def test_normalisation_comes_from_the_training_images_only():
    detector = build()
    train = normal_images(16, seed=1)
    fit(detector, train, epochs=1)
    with torch.no_grad():
        logliks = detector.loglik(detector.backbone(train))
        assert torch.allclose(detector.loglik_max, torch.stack([ll.max() for ll in logliks]))
        n_max = detector.normality(logliks, detector.map_shape()).max()
        assert torch.isclose(detector.normality_max, n_max)
        # every training map is >= 0 (n_max is their largest normality) ...
        _, train_maps = detector(train)
        assert train_maps.min() >= -1e-5
        # ... and a test image's score does not depend on the images scored with it
        test = normal_images(4, seed=5)
        test[1:, :, 10:30, 10:30] = 4.0
        alone, _ = detector(test[:1])
        together, _ = detector(test)
    assert torch.allclose(alone, together[:1], atol=1e-5)


def test_export_is_one_graph_that_passes_parity(tmp_path: Path):
    detector = build()
    fit(detector, normal_images(8, seed=1), epochs=1)
    card = build_card(detector, detector.config, {"epochs": 1})
    save_checkpoint(detector, card, tmp_path / "model")
    reports = run_export(ExportRequest(tmp_path / "model", tmp_path / "model.onnx"))
    assert reports["onnxruntime"].passed and (tmp_path / "model.onnx").is_file()


def test_bad_configs_are_errors_naming_the_key():
    with pytest.raises(ValidationError, match="condition_dim"):
        tiny_cnf(condition_dim=18)
    with pytest.raises(ValidationError, match="object_mask"):
        tiny_cnf(object_mask="left")
    with pytest.raises(ConfigError, match="finetune_stages"):
        build_detector(tiny_cnf(finetune_stages=3))
    with pytest.raises(ConfigError, match="image_size"):
        build_detector(tiny_cnf(image_size=72))
