"""A new sensor is one module plus one registration line (issue 19, plug-in points).

The toy modality below lives in this file only: a sensor whose files are small ``.npy``
vectors. Registered with one line, it is trained (``tensor_pca``: the closed-form PCA
baseline on the modality's own tensor, its spec derived from the training files),
exported to ONNX through the parity gate, calibrated and evaluated, all through the
in-process CLI, and run through the station (``flowedge run`` over a folder source).
"""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import flowedge
from flowedge.cli import main
from flowedge.core.card import ImageInput, InputSpec, ModelCard
from flowedge.core.errors import BadInputError, ConfigError
from flowedge.modalities import Modality, register_modality
from flowedge.modalities.overlay import render_overlay

DEFECT = "spike"


@dataclass(frozen=True)
class ToyInput(InputSpec):
    """A vector resampled to ``length`` readings and divided by ``scale``."""

    kind: str = field(default="toy", init=False)
    length: int = 32
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.length < 2 or self.scale <= 0:
            raise ValueError(f"input: length {self.length} must be >= 2, scale {self.scale} > 0")

    @property
    def tensor_shape(self) -> tuple[int, int]:
        return (1, self.length)

    @property
    def map_shape(self) -> tuple[int, int]:
        return (1, self.length)


def toy_vector(rng: np.random.Generator, anomalous: bool, n: int = 32) -> np.ndarray:
    """One sine period of random amplitude and phase; a defect adds a spike."""
    t = np.linspace(0.0, 1.0, n, endpoint=False)
    values = rng.uniform(1.5, 2.5) * np.sin(2 * np.pi * t + rng.uniform(0, 2 * np.pi))
    if anomalous:
        values[rng.integers(4, n - 4)] += 6.0
    return values + rng.normal(0.0, 0.05, n)


def toy_picture(tensor: np.ndarray) -> np.ndarray:
    """The readings as a grey strip, 8 rows high (grey: RGB and BGR alike)."""
    grey = np.clip(tensor[0] * 64 + 128, 0, 255).astype(np.uint8)
    return np.repeat(np.repeat(grey[None, :, None], 8, axis=0), 3, axis=2)


class ToyModality(Modality[np.ndarray, ToyInput, None]):
    """A sensor whose samples are ``.npy`` vectors."""

    name = "toy"
    extensions = frozenset({".npy"})

    def read(self, path: str | Path, limits: None = None) -> np.ndarray:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise BadInputError(f"toy {path}: cannot be read ({exc.strerror})") from None
        return self.decode(data, str(path))

    def decode(self, data: bytes, name: str, limits: None = None) -> np.ndarray:
        try:
            return np.load(io.BytesIO(data), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise BadInputError(f"toy {name}: not a .npy vector ({exc})") from None

    def validate(self, raw: Any, name: str) -> None:
        if not isinstance(raw, np.ndarray) or raw.ndim != 1 or len(raw) < 2:
            raise BadInputError(f"toy {name}: expected a vector of at least 2 readings")
        if not np.isfinite(raw).all():
            raise BadInputError(f"toy {name}: contains NaN or Inf")

    def preprocess(self, raw: Any, spec: ToyInput, name: str, limits: None = None) -> np.ndarray:
        vector = self.as_raw(raw, name, limits)
        self.validate(vector, name)
        at = np.linspace(0, len(vector) - 1, spec.length)
        resampled = np.interp(at, np.arange(len(vector)), vector) / spec.scale
        return resampled.astype(np.float32)[None]

    def training_spec(self, files: Sequence[Path], settings: Mapping[str, Any]) -> ToyInput:
        """The first file's length and the training readings' spread, unless given."""
        readings = [self.read(path) for path in files]
        derived = {"length": len(readings[0]), "scale": float(np.std(np.concatenate(readings)))}
        return ToyInput(**(derived | dict(settings)))

    def display(self, path: str | Path, spec: ToyInput, limits: None = None) -> np.ndarray:
        return toy_picture(self.load(path, spec))

    def synthesize(
        self, root: str | Path, n_train: int, n_test_good: int, n_test_defect: int, seed: int = 0
    ) -> Path:
        rng, root = np.random.default_rng(seed), Path(root)
        for folder, count, anomalous in (
            ("train/good", n_train, False),
            ("test/good", n_test_good, False),
            (f"test/{DEFECT}", n_test_defect, True),
        ):
            (root / folder).mkdir(parents=True)
            for i in range(count):
                np.save(root / folder / f"{i:03d}.npy", toy_vector(rng, anomalous))
        return root

    def synthetic_batch(
        self, spec: ToyInput, n_normal: int, n_anomalous: int, seed: int = 0
    ) -> np.ndarray:
        rng = np.random.default_rng(seed)
        flags = [False] * n_normal + [True] * n_anomalous
        return np.stack([self.preprocess(toy_vector(rng, a), spec, "synthetic") for a in flags])

    def render(
        self,
        input_tensor: np.ndarray,
        amap: np.ndarray,
        spec: ToyInput,
        score: float | None,
        decision: str,
        threshold: float,
    ) -> np.ndarray:
        return render_overlay(toy_picture(input_tensor), amap, score, decision, threshold)


register_modality("toy", ToyModality(), ToyInput)  # the one line that adds the sensor


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ToyModality().synthesize(tmp_path_factory.mktemp("toy") / "sensor", 40, 24, 8, seed=1)


@pytest.fixture(scope="module")
def toy_model(toy_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained and exported toy model (train, then export with the parity gate)."""
    tmp = tmp_path_factory.mktemp("toy-model")
    detector = {"kind": "tensor_pca", "input": {"kind": "toy"}, "n_components": 3}
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump({"detector": detector}))
    checkpoint = tmp / "checkpoint"
    assert main(["train", str(toy_data), "--config", str(config), "--out", str(checkpoint)]) == 0
    assert main(["export", "onnx", str(checkpoint), "--out", str(tmp / "model.onnx")]) == 0
    return checkpoint


def test_a_registered_modality_trains_exports_calibrates_and_evaluates(
    toy_data: Path, toy_model: Path, tmp_path: Path
) -> None:
    card = ModelCard.load(toy_model / "card.json")
    spec = card.input  # derived from the training files: their length and spread
    assert isinstance(spec, ToyInput) and spec.length == 32 and 1.0 < spec.scale < 2.0
    assert card.detector_params["input"] == {"kind": "toy", "length": 32, "scale": spec.scale}
    graph = toy_model.parent / "model.onnx"

    calibration = tmp_path / "calibration.json"
    assert (
        main(
            ["calibrate", str(graph), "--backend", "onnxruntime", "--out", str(calibration)]
            + [
                "--normal",
                str(toy_data / "test/good"),
                "--anomalous",
                str(toy_data / "test" / DEFECT),
            ]
            + ["--strategy", "f1", "--no-progress"]
        )
        == 0
    )
    threshold = json.loads(calibration.read_text())["threshold"]

    report = tmp_path / "eval"
    assert main(["eval", str(toy_model), str(toy_data), "--out", str(report), "--worst", "1"]) == 0
    overall = json.loads((report / "report.json").read_text())["metrics"]["overall"]
    assert (overall["n_good"], overall["n_defect"]) == (24, 8)
    assert overall["image_auroc"] > 0.95

    with flowedge.load(graph, threshold=threshold) as model:  # the station's runtime
        good, spike = (sorted((toy_data / "test" / d).glob("*.npy"))[0] for d in ("good", DEFECT))
        assert [r.decision for r in model.score_batch([good, spike])] == ["OK", "ANOMALY"]
        assert model.score(good).anomaly_map.shape == (1, 32)


def test_tensor_pca_maps_the_error_onto_the_map_shape() -> None:
    """An image-shaped spec: the error of the C x H x W tensor summed over channels."""
    import torch

    from flowedge.flows.config import TensorPCAConfig
    from flowedge.flows.detectors import build_detector

    spec = ImageInput(height=4, width=6)
    # statistics set, so none are measured on (absent) training images
    settings = {"kind": "image", "height": 4, "width": 6, "mean": [0, 0, 0], "std": [1, 1, 1]}
    config = TensorPCAConfig(input=settings, n_components=2)
    detector = build_detector(config.for_training_files([]))
    score, amap = detector(torch.ones(2, *spec.tensor_shape))
    assert amap.shape == (2, 4, 6) and np.allclose(score.numpy(), 3 * 4 * 6)


def test_tensor_pca_names_an_unknown_modality_or_an_incomplete_spec() -> None:
    from pydantic import ValidationError

    from flowedge.flows.config import TensorPCAConfig

    with pytest.raises(ValidationError, match="'video' is not a modality of this flowedge"):
        TensorPCAConfig(input={"kind": "video"})
    incomplete = TensorPCAConfig(input={"kind": "series", "rate_hz": 10.0})
    with pytest.raises(ConfigError, match="detector.input: input.signals: name at least one"):
        incomplete.for_training_files([])


def test_the_station_scores_a_folder_of_toy_samples(
    toy_data: Path, toy_model: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "replay"
    folder.mkdir()
    for name in ("good", DEFECT):
        shutil.copy(sorted((toy_data / "test" / name).glob("*.npy"))[0], folder / f"{name}.npy")
    with flowedge.load(toy_model) as model:
        scores = [result.score for result in model.score_batch(sorted(folder.iterdir()))]
    config = tmp_path / "config.yaml"
    config.write_text(
        textwrap.dedent(f"""
        model: {{path: {toy_model.parent / "model.onnx"}, backend: onnxruntime,
                 threshold: {float(np.mean(scores))}}}
        sources: [{{name: toy1, kind: folder, path: {folder}, modality: toy}}]
        mqtt: {{enabled: false}}
        metrics: {{enabled: false}}
        spool: {{path: {tmp_path / "spool.sqlite"}}}
        pipeline: {{heatmaps: none}}
        """),
        encoding="utf-8",
    )
    assert main(["run", "--config", str(config), "--exit-when-done"]) == 0
    with sqlite3.connect(tmp_path / "spool.sqlite") as db:
        rows = db.execute("select body from records where kind = 'decision'").fetchall()
    decisions = {doc["part_id"]: doc["decision"] for doc in (json.loads(b) for (b,) in rows)}
    assert decisions == {"good.npy": "OK", f"{DEFECT}.npy": "ANOMALY"}
