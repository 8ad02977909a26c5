"""Metrics on hand-checked cases, and train/eval end to end through the CLI on tiny data."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from conftest import tiny_detector_config, tiny_training_config

from flowedge.cli import main
from flowedge.core.card import ModelCard
from flowedge.core.errors import (
    EXIT_CHECK,
    EXIT_DATA,
    EXIT_MODEL,
    EXIT_USAGE,
    CheckFailedError,
    ConfigError,
)
from flowedge.flows.cmd_train import build_configs
from flowedge.flows.config import GaussianConfig, TrainingConfig, default_detector_config
from flowedge.flows.metrics import (
    aupro,
    auroc,
    detection_report,
    f1_max,
    image_auroc,
    pixel_auroc,
)

LABELS = [0, 0, 1, 1]
SCORES = [0.1, 0.4, 0.35, 0.8]

TINY_CONFIG = """\
detector:
  kind: csflow
  image_size: 64
  n_scales: 2
  n_blocks: 1
  kernel_sizes: [3]
  hidden_channels: 16
  backbone:
    weights: auto
training:
  epochs: 5
  batch_size: 8
"""


# --- metrics ---------------------------------------------------------------------


def test_image_auroc_by_hand() -> None:
    # pairs (defect, good) ranked right: (0.35>0.1), (0.8>0.1), (0.8>0.4); wrong: (0.35<0.4) -> 3/4
    assert image_auroc(LABELS, SCORES) == pytest.approx(0.75)
    assert image_auroc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert image_auroc([0, 0], [0.1, 0.2]) is None


def test_auroc_equals_scikit_learn_with_ties() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    truth = rng.random(5000) < 0.1
    values = np.round(rng.random(5000) + 0.3 * truth, 1).astype(np.float32)  # many ties
    assert auroc(truth, values) == pytest.approx(roc_auc_score(truth, values), abs=1e-12)


def test_f1_max_and_threshold_by_hand() -> None:
    # threshold 0.35 flags {0.35, 0.4, 0.8}: precision 2/3, recall 1 -> F1 0.8 (0.8 alone: 0.667)
    f1, threshold = f1_max(LABELS, SCORES)
    assert f1 == pytest.approx(0.8) and threshold == pytest.approx(0.35)
    assert f1_max([0, 0, 1], [0.1, 0.2, 0.9]) == (pytest.approx(1.0), pytest.approx(0.9))
    assert f1_max([1, 1], [0.1, 0.2]) is None


def test_pixel_auroc_by_hand() -> None:
    masks = [np.array([[0, 1], [0, 0]], bool), np.zeros((2, 2), bool)]
    maps = [np.array([[0.1, 0.9], [0.2, 0.3]]), np.array([[0.4, 0.95], [0.0, 0.0]])]
    # one anomalous pixel (0.9) against 7 normal ones, of which only 0.95 scores higher -> 6/7
    assert pixel_auroc(masks, maps) == pytest.approx(6 / 7)
    assert pixel_auroc([np.zeros((2, 2), bool)], [np.ones((2, 2))]) is None


def test_aupro_weighs_regions_not_pixels() -> None:
    # a 1-pixel defect found first, a 4-pixel one scored below every normal pixel:
    # pixel AUROC counts 1 of 5 defect pixels (0.2), PRO counts 1 of 2 regions (0.5)
    mask = np.array([[1, 0, 1, 1, 1, 1, 0, 0, 0, 0]], bool)
    amap = np.array([[10.0, 5, 1, 1, 1, 1, 5, 5, 5, 5]])
    assert pixel_auroc([mask], [amap]) == pytest.approx(0.2)
    assert aupro([mask], [amap]) == pytest.approx(0.5)
    assert aupro([mask], [mask.astype(float)]) == pytest.approx(1.0)
    assert aupro([np.zeros((2, 2), bool)], [np.ones((2, 2))]) is None


def _aupro_by_thresholds(masks, maps, limit: float = 0.3) -> float:
    """Reference: every distinct value as a threshold, PRO per region counted directly."""
    from scipy import ndimage

    labelled = [ndimage.label(m, structure=np.ones((3, 3)))[0] for m in masks]
    normal = np.concatenate([~m.ravel() for m in masks])
    values = np.concatenate([a.ravel() for a in maps])
    points = [(0.0, 0.0)]
    for t in np.unique(values)[::-1]:
        fpr = (values[normal] >= t).mean()
        overlaps = [
            (a[lab == k] >= t).mean()
            for lab, a in zip(labelled, maps, strict=True)
            for k in range(1, lab.max() + 1)
        ]
        points.append((fpr, float(np.mean(overlaps))))
    fpr, pro = np.array(points).T
    grid = np.append(fpr[fpr <= limit], limit)
    return float(np.trapezoid(np.interp(grid, fpr, pro), grid) / limit)


def test_aupro_matches_the_threshold_by_threshold_definition() -> None:
    rng = np.random.default_rng(1)
    masks = [rng.random((12, 12)) > 0.85 for _ in range(3)]
    maps = [np.round(rng.random((12, 12)) + 0.4 * m, 2) for m in masks]  # with ties
    assert aupro(masks, maps) == pytest.approx(_aupro_by_thresholds(masks, maps), abs=1e-9)


def test_report_groups_each_defect_with_all_good_images() -> None:
    defects = ["good", "good", "crack", "spot"]
    masks = [np.zeros((2, 2), bool)] * 2 + [np.array([[1, 0], [0, 0]], bool), None]
    maps = [np.zeros((2, 2))] * 2 + [np.array([[1.0, 0], [0, 0]]), np.ones((2, 2))]
    report = detection_report(LABELS, defects, SCORES, masks, maps)
    crack, spot = report["per_defect"]["crack"], report["per_defect"]["spot"]
    assert (crack["n_good"], crack["n_defect"]) == (2, 1)
    assert crack["image_auroc"] == pytest.approx(0.5)  # 0.35 beats 0.1, loses to 0.4
    assert spot["image_auroc"] == pytest.approx(1.0)
    assert crack["pixel_auroc"] == pytest.approx(1.0) and crack["aupro"] == pytest.approx(1.0)
    assert spot["pixel_auroc"] is None  # no mask for the only spot image: no defective pixel
    assert report["overall"]["image_auroc"] == pytest.approx(0.75)
    assert "pixel_auroc" not in detection_report(LABELS, defects, SCORES)["overall"]


# --- train -----------------------------------------------------------------------


def _args(**overrides: object) -> argparse.Namespace:
    base = dict(
        config=None,
        detector=None,
        image_size=None,
        intensity=None,
        epochs=None,
        batch_size=None,
        lr=None,
        seed=None,
        backbone_weights=None,
    )
    return argparse.Namespace(**(base | overrides))


def test_flags_override_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(TINY_CONFIG + "site: ignored-by-train\n")
    det, train = build_configs(
        _args(config=path, epochs=1, backbone_weights="none", seed=7, intensity="raw")
    )
    assert det.intensity == "raw"
    assert (det.kind, det.image_size, det.hidden_channels, det.backbone.weights) == (
        "csflow",
        64,
        16,
        "none",
    )
    assert (train.epochs, train.batch_size, train.seed) == (1, 8, 7)
    det, _ = build_configs(_args(detector="gaussian", image_size=64))
    assert det == GaussianConfig(image_size=64)
    det, train = build_configs(_args())
    assert (det, train) == (default_detector_config(), TrainingConfig())  # the documented defaults


def test_switching_the_detector_refuses_the_other_detectors_keys(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(TINY_CONFIG)
    with pytest.raises(ConfigError, match="detector.n_scales: unknown key") as info:
        build_configs(_args(config=path, detector="gaussian"))
    assert "4 problem(s)" in str(info.value)  # n_scales, n_blocks, kernel_sizes, hidden_channels


@pytest.fixture(scope="module")
def cli_checkpoint(
    detectors: ModuleType, synthetic_dataset: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[str]]:
    """`flowedge train` on a plain folder holding the synthetic normals plus one broken file."""
    work = tmp_path_factory.mktemp("cli")
    data = Path(shutil.copytree(synthetic_dataset / "train" / "good", work / "normal" / "line-1"))
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    config = work / "config.yaml"
    config.write_text(TINY_CONFIG)
    out = work / "model"
    argv = [
        "train",
        str(work / "normal"),
        "--out",
        str(out),
        "--config",
        str(config),
        "--epochs",
        "1",
        "--backbone-weights",
        "none",
        "--no-progress",
    ]
    assert main(argv) == 0
    return out, argv


def test_train_cli_writes_a_checkpoint(
    cli_checkpoint: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = cli_checkpoint
    card = ModelCard.load(out / "card.json")
    assert (out / "weights.safetensors").is_file()
    assert card.detector_params["hidden_channels"] == 16 and card.training["epochs"] == 1
    data = card.training["data"]
    assert (data["n_images"], data["n_skipped"]) == (16, 1)
    assert data["skipped"][0].endswith("broken.png")
    assert card.training["feature_seconds"] >= 0 and card.training["fit_seconds"] >= 0


def test_training_is_reproducible(cli_checkpoint: tuple[Path, list[str]], tmp_path: Path) -> None:
    out, argv = cli_checkpoint
    again = tmp_path / "again"
    assert main([*argv[:3], str(again), *argv[4:]]) == 0
    assert (
        ModelCard.load(again / "card.json").weights_sha256
        == ModelCard.load(out / "card.json").weights_sha256
    )


def test_diverged_training_writes_no_checkpoint(
    detectors: ModuleType, synthetic_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowedge.flows import train as training
    from flowedge.flows.train import train

    monkeypatch.setattr(training, "fit_detector", lambda *args: {"final_loss": float("nan")})
    with pytest.raises(CheckFailedError, match="diverged"):
        train(
            tiny_detector_config(),
            tiny_training_config(),
            synthetic_dataset,
            tmp_path / "m",
            show_progress=False,
        )
    assert not (tmp_path / "m").exists()


def test_features_streamed_each_epoch_train_like_cached_ones(
    tiny_checkpoint: Path, synthetic_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A detector that turns caching off (fine-tuned backbone) gets the same batches, recomputed."""
    from flowedge.flows.detectors.csflow import CSFlow
    from flowedge.flows.train import train

    monkeypatch.setattr(CSFlow, "caches_features", False)
    card = train(
        tiny_detector_config(),
        tiny_training_config(),
        synthetic_dataset,
        tmp_path / "m",
        show_progress=False,
    )
    cached = ModelCard.load(tiny_checkpoint / "card.json")
    assert card.training["data"] == cached.training["data"]
    assert card.training["final_loss"] == pytest.approx(cached.training["final_loss"], rel=1e-4)


def test_labels_and_augmentation_reach_detectors_that_declare_them(
    detectors: ModuleType, synthetic_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from flowedge.flows.detectors.csflow import CSFlow
    from flowedge.flows.train import train

    seen_labels: list[torch.Tensor | None] = []
    augmented: list[tuple[int, ...]] = []
    loss = CSFlow.loss

    def recording_loss(self, feats, labels):
        seen_labels.append(labels)
        return loss(self, feats, labels)

    def flip(x: torch.Tensor) -> torch.Tensor:
        augmented.append(tuple(x.shape))
        return x.flip(-1)

    monkeypatch.setattr(CSFlow, "loss", recording_loss)
    args = (tiny_detector_config(), tiny_training_config(), synthetic_dataset)
    with pytest.raises(ConfigError, match="does not use augmentation"):
        train(*args, tmp_path / "refused", show_progress=False, augment=flip)
    train(*args, tmp_path / "plain", show_progress=False)
    assert seen_labels and all(labels is None for labels in seen_labels)  # normal-only: no labels

    seen_labels.clear()
    monkeypatch.setattr(CSFlow, "needs_labels", True)
    monkeypatch.setattr(CSFlow, "uses_augmentation", True)
    train(*args, tmp_path / "augmented", show_progress=False, augment=flip)
    assert torch.cat(seen_labels).tolist() == [0] * 16 * 2  # 16 normal images, 2 epochs
    assert augmented == [(8, 3, 64, 64)] * 4  # every batch of every epoch, before features()


def test_non_square_csflow_end_to_end(
    detectors: ModuleType, synthetic_dataset: Path, tmp_path: Path
) -> None:
    from flowedge.flows.evaluate import evaluate
    from flowedge.flows.train import train

    config = tiny_detector_config(image_size=[64, 128])
    card = train(
        config, tiny_training_config(), synthetic_dataset, tmp_path / "m", show_progress=False
    )
    assert (card.input.height, card.input.width) == (64, 128)
    report = evaluate(
        tmp_path / "m", synthetic_dataset, tmp_path / "eval", n_worst=1, show_progress=False
    )
    assert (
        report["metrics"]["overall"]["pixel_auroc"] is not None
    )  # maps of 64 x 128 match the masks


def test_gaussian_on_one_image_is_a_data_error(
    synthetic_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(next((synthetic_dataset / "train" / "good").glob("*.png")), one)
    argv = ["train", str(one), "--out", str(tmp_path / "m"), "--detector", "gaussian"]
    assert main([*argv, "--image-size", "64", "--backbone-weights", "none"]) == EXIT_DATA
    err = capsys.readouterr().err
    assert "1 usable training image(s)" in err and "at least 2" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


def test_train_cli_missing_folder_exits_2_and_empty_folder_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", str(tmp_path / "absent"), "--out", str(tmp_path / "m")]) == EXIT_USAGE
    (tmp_path / "empty").mkdir()
    assert (
        main(
            [
                "train",
                str(tmp_path / "empty"),
                "--out",
                str(tmp_path / "m"),
                "--backbone-weights",
                "none",
            ]
        )
        == EXIT_DATA
    )
    err = capsys.readouterr().err
    assert "absent" in err and "empty" in err and "Traceback" not in err


# --- eval ------------------------------------------------------------------------


def test_eval_cli_writes_report_and_figures(
    tiny_checkpoint: Path,
    synthetic_dataset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "eval"
    assert (
        main(
            [
                "eval",
                str(tiny_checkpoint),
                str(synthetic_dataset),
                "--out",
                str(out),
                "--worst",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    stdout = capsys.readouterr().out
    assert "overall" in stdout and "img AUROC" in stdout and str(out / "report.json") in stdout
    report = json.loads((out / "report.json").read_text())
    overall = report["metrics"]["overall"]
    assert (overall["n_good"], overall["n_defect"]) == (4, 8)
    assert 0 <= overall["image_auroc"] <= 1 and 0 <= overall["pixel_auroc"] <= 1
    assert set(report["metrics"]["per_defect"]) == {"crack", "missing", "scratch", "spot"}
    assert len(report["images"]) == 12 and report["model_id"].startswith("csflow-")
    for name in ("roc.png", "score_histogram.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    heatmaps = sorted(p.name for p in (out / "heatmaps").glob("*.png"))
    assert len(heatmaps) == 4 and sum(n.startswith("good_highest") for n in heatmaps) == 2


def test_eval_cli_target_and_mismatch_exit_codes(
    tiny_checkpoint: Path,
    synthetic_dataset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = [str(synthetic_dataset), "--out", str(tmp_path / "e"), "--worst", "0", "--no-progress"]
    assert main(["eval", str(tiny_checkpoint), *args, "--min-auroc", "1.01"]) == EXIT_CHECK
    broken = Path(shutil.copytree(tiny_checkpoint, tmp_path / "model"))
    (broken / "weights.safetensors").write_bytes(b"not the trained weights")
    assert main(["eval", str(broken), *args]) == EXIT_MODEL
    err = capsys.readouterr().err
    assert "below the target" in err and "does not match the card" in err and "Traceback" not in err


# --- output paths are checked before the work (issue 10) ---------------------------


def test_out_that_is_an_existing_file_is_refused_before_the_work(
    tiny_checkpoint: Path,
    synthetic_dataset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    taken = tmp_path / "taken"
    taken.write_text("someone's notes")
    train = ["train", str(synthetic_dataset), "--out", str(taken), "--backbone-weights", "none"]
    assert main(train) == EXIT_USAGE
    evaluate = ["eval", str(tiny_checkpoint), str(synthetic_dataset), "--out", str(taken / "sub")]
    assert main(evaluate) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "--out" in err and "is an existing file, not a directory" in err
    assert f"{taken} is a file, so no directory can be created under it" in err
    assert "Traceback" not in err and taken.read_text() == "someone's notes"
