"""Backends: the model file picks the backend, and nothing assumes image-shaped input."""

from __future__ import annotations

import argparse
import importlib
import json
import runpy
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import setuptools
import torch
from packaging.requirements import Requirement
from torch import nn

from flowedge.backends import BACKENDS, Backend, BackendSpec, backend_for, open_backend
from flowedge.backends.onnxrt import OnnxRuntimeBackend
from flowedge.cli import command_parser, main
from flowedge.core.card import ModelCard, ScoreSpec, SeriesInput
from flowedge.core.errors import EXIT_USAGE, ConfigError
from flowedge.core.extras import missing_extra_error
from flowedge.core.validation import Strict
from flowedge.edge.config import parse_config
from flowedge.export.onnx_export import export_onnx
from flowedge.flows.detectors.base import Detector

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "name, expected",
    [
        ("m.onnx", "onnxruntime"),
        ("m.engine", "tensorrt"),
        ("m.PLAN", "tensorrt"),
        ("ckpt", "torch"),
    ],
)
def test_auto_picks_the_backend_from_the_model_file(
    tmp_path: Path, name: str, expected: str
) -> None:
    path = tmp_path / name
    if name == "ckpt":
        path.mkdir()
    else:
        path.write_bytes(b"")
    assert backend_for(path) == expected
    assert backend_for(path, "onnxruntime") == "onnxruntime"  # an explicit choice wins


def test_a_missing_model_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"gone\.onnx not found; give a checkpoint directory"
    ) as info:
        open_backend(tmp_path / "gone.onnx")
    assert info.value.exit_code == EXIT_USAGE


def test_unknown_file_kind_or_backend_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"")
    with pytest.raises(ConfigError, match="cannot tell which backend runs"):
        backend_for(tmp_path / "model.bin")
    with pytest.raises(ConfigError, match="backend 'coreml' is not one of auto, torch"):
        backend_for(tmp_path / "model.bin", "coreml")


SERIES = SeriesInput(
    signals=("current", "speed", "torque"), units=("A", "rad/s", "Nm"), length=40,
    mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
)  # fmt: skip


class SeriesStandIn(Detector):
    """A [B, signals, steps] model: 1-D convolutions, score = 0.5 * sum(z**2), map per step."""

    name = "series-standin"

    def __init__(self) -> None:
        super().__init__(Strict(), None, {})
        torch.manual_seed(0)
        self.encoder = nn.Conv1d(len(SERIES.signals), 8, 5, padding=2)
        self.flow = nn.Conv1d(8, 8, 3, padding=1)

    def input_spec(self):
        return SERIES

    def features(self, x):
        return [torch.relu(self.encoder(x))]

    def latents(self, feats):
        return [self.flow(f) for f in feats]

    def reduce(self, latents, map_shape):
        sq = latents[0].float() ** 2
        per_step = sq.mean(dim=1, keepdim=True).expand(-1, map_shape[0], -1)
        return 0.5 * sq.sum(dim=(1, 2)), per_step

    def score_spec(self):
        return ScoreSpec(kind="sum_z2")


def test_a_series_model_exports_and_runs_on_onnxruntime(tmp_path: Path) -> None:
    detector = SeriesStandIn().eval()
    card = ModelCard(detector.name, {}, {"name": "conv1d"}, SERIES, detector.score_spec(), weights_sha256="0" * 64)  # fmt: skip
    export_onnx(detector, card, tmp_path / "series.onnx")
    backend = open_backend(tmp_path / "series.onnx")
    assert isinstance(backend, OnnxRuntimeBackend) and backend.input_shape == (3, 40)
    batch = np.random.default_rng(0).normal(size=(5, 3, 40)).astype(np.float32)
    scores, maps = backend.infer(batch)
    assert scores.shape == (5,) and maps.shape == (5, *SERIES.map_shape)
    with torch.no_grad():
        expected, _ = detector(torch.from_numpy(batch))
    np.testing.assert_allclose(scores, expected.numpy(), rtol=1e-4)
    with pytest.raises(ValueError, match=r"the model expects \[B, 3, 40\]"):
        backend.infer(batch[:, :, None])


def _choices(command: str, option: str = "--backend") -> tuple[str, ...]:
    parser, _ = command_parser(command)
    return next(tuple(a.choices) for a in parser._actions if option in a.option_strings)


def test_predict_calibrate_and_the_config_offer_the_tables_backends() -> None:
    assert _choices("predict") == ("auto", "torch", "onnxruntime", "tensorrt", "openvino")
    assert _choices("calibrate") == ("torch", "onnxruntime", "tensorrt", "openvino")
    assert parse_config({"model": {"backend": "tensorrt"}}).model.backend == "tensorrt"
    with pytest.raises(ConfigError) as info:
        parse_config({"model": {"backend": "coreml"}})
    assert (
        "model.backend: Input should be 'auto', 'torch', 'onnxruntime', 'tensorrt' or "
        "'openvino' (got 'coreml')"
    ) in str(info.value)


class FakeOpenVino(Backend):
    """Stands in for a backend module that is not written yet."""

    name = "openvino"

    @classmethod
    def open(cls, path: Path, device: str = "cpu", threads: int = 0) -> FakeOpenVino:
        return cls(ModelCard("fake", {}, {}, SERIES, ScoreSpec(kind="sum_z2")))

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


def test_a_new_backend_is_one_module_plus_one_table_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = types.ModuleType("fake_openvino_backend")
    module.FakeOpenVino = FakeOpenVino
    monkeypatch.setitem(sys.modules, module.__name__, module)
    row = BackendSpec(
        name="openvino", label="OpenVINO", module=module.__name__, class_name="FakeOpenVino",
        model_file="an OpenVINO model", suffixes=(".xml",), export_target="openvino",
        extra="openvino", packages=("openvino",), requirements=("openvino",),
    )  # fmt: skip
    monkeypatch.setitem(BACKENDS, row.name, row)
    model = tmp_path / "model.XML"
    model.write_bytes(b"")

    assert backend_for(model) == "openvino"
    assert isinstance(open_backend(model), FakeOpenVino)
    assert "openvino" in _choices("calibrate")
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    predict_help = " ".join(capsys.readouterr().out.split())
    assert "{auto,torch,onnxruntime,tensorrt,openvino}" in predict_help
    assert ".xml: openvino" in predict_help
    assert parse_config({"model": {"backend": "openvino"}}).model.backend == "openvino"
    with pytest.raises(
        ConfigError, match=r"an OpenVINO model \(\.xml, from 'flowedge export openvino'\)"
    ):
        backend_for(tmp_path / "gone.xml")
    missing = ModuleNotFoundError("No module named 'openvino'", name="openvino")
    assert "needs the OpenVINO extra: pip install 'flowedge[openvino]'" in str(
        missing_extra_error(missing, "flowedge run")
    )


@pytest.mark.parametrize("spec", BACKENDS.values(), ids=list(BACKENDS))
def test_each_row_names_its_backend_class_and_the_export_that_writes_its_model(
    spec: BackendSpec,
) -> None:
    backend_class = getattr(importlib.import_module(spec.module), spec.class_name)
    assert issubclass(backend_class, Backend) and backend_class.name == spec.name
    export, _ = command_parser("export")
    targets = next(a for a in export._actions if isinstance(a, argparse._SubParsersAction))
    assert spec.export_target is None or spec.export_target in targets.choices
    assert all(suffix == suffix.lower() for suffix in spec.suffixes)


def test_setup_py_extras_install_each_backends_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    """setup.py runs before flowedge is installed, so it cannot read the table: it is checked."""
    captured: dict = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    monkeypatch.chdir(REPO)
    runpy.run_path(str(REPO / "setup.py"))
    extras = captured["extras_require"]
    for spec in BACKENDS.values():
        listed = {Requirement(r).name for r in extras.get(spec.extra, [])}
        assert set(spec.requirements) <= listed, f"setup.py's [{spec.extra}] for {spec.name}"


def test_the_decision_schema_lists_the_backends() -> None:
    """The MQTT message schema is a published file: it cannot read the table, so it is checked."""
    schema = json.loads((REPO / "edge" / "schema" / "decision.schema.json").read_text())
    assert schema["properties"]["model"]["properties"]["backend"]["enum"] == list(BACKENDS)
