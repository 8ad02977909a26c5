"""The OpenVINO backend, ``flowedge export openvino`` and the INT8 gate, on the tiny checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

ov = pytest.importorskip(
    "openvino", reason="OpenVINO is not installed (pip install 'flowedge[openvino]')"
)

from flowedge.backends import open_backend  # noqa: E402
from flowedge.backends.onnxrt import OnnxRuntimeBackend  # noqa: E402
from flowedge.backends.openvino_backend import OpenVinoBackend, model_metadata  # noqa: E402
from flowedge.cli import main  # noqa: E402
from flowedge.core import metadata  # noqa: E402
from flowedge.core.card import ModelCard  # noqa: E402
from flowedge.core.errors import EXIT_MODEL, ConfigError, ModelMismatchError  # noqa: E402
from flowedge.edge.loop.recipes import open_model  # noqa: E402
from flowedge.edge.models_config import ModelConfig  # noqa: E402
from flowedge.export.int8_gate import Int8Bounds, int8_report, require_passed  # noqa: E402
from flowedge.export.parity import synthetic_samples  # noqa: E402


@pytest.fixture(scope="module")
def exported(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny checkpoint as ONNX graph and OpenVINO IR, both through their checked export."""
    out = tmp_path_factory.mktemp("openvino")
    paths = {"onnx": out / "model.onnx", "openvino": out / "model.xml"}
    for target, path in paths.items():
        assert main(["export", target, str(tiny_checkpoint), "--out", str(path)]) == 0
    return paths


@pytest.fixture(scope="module")
def batch(tiny_checkpoint: Path) -> np.ndarray:
    return synthetic_samples(ModelCard.load(tiny_checkpoint / "card.json").input, 3, 3)


def test_export_openvino_writes_a_parity_checked_ir(exported: dict[str, Path]) -> None:
    xml = exported["openvino"]
    assert xml.with_suffix(".bin").is_file()
    meta = model_metadata(ov.Core().read_model(str(xml)))
    parity = json.loads(meta[metadata.PARITY_KEY])
    assert parity["passed"] and parity["openvino"]["passed"] and parity["onnxruntime"]["passed"]
    assert metadata.card_from_metadata(meta, "ir").model_id


@pytest.mark.parametrize("model", ["openvino", "onnx"])
def test_openvino_scores_the_ir_and_the_onnx_graph_as_onnxruntime_does(
    exported: dict[str, Path], batch: np.ndarray, model: str
) -> None:
    backend = open_backend(exported[model], "openvino" if model == "onnx" else "auto")
    assert isinstance(backend, OpenVinoBackend) and backend.precision == "fp32"
    reference = OnnxRuntimeBackend.open(exported["onnx"])
    for size in (1, 4):
        scores, maps = backend.infer(batch[:size])
        ref_scores, ref_maps = reference.infer(batch[:size])
        np.testing.assert_allclose(scores, ref_scores, rtol=1e-4)
        np.testing.assert_allclose(maps, ref_maps, rtol=1e-3, atol=1e-4 * np.abs(ref_maps).max())
    assert backend.card.model_id == reference.card.model_id


def test_the_openvino_backend_runs_without_torch(
    exported: dict[str, Path], synthetic_dataset: Path, tmp_path: Path
) -> None:
    from test_station_no_torch import score_without_torch

    score_without_torch(tmp_path, exported["openvino"], synthetic_dataset / "test" / "good")


def test_threads_streams_and_hint_reach_the_compiled_model(exported: dict[str, Path]) -> None:
    cfg = ModelConfig(
        path=exported["openvino"], intra_op_threads=2, streams=2, performance_hint="throughput"
    )
    props = open_model(cfg).properties()
    assert props["INFERENCE_NUM_THREADS"] == "2" and props["NUM_STREAMS"] == "2"
    assert props["PERFORMANCE_HINT"] == "THROUGHPUT"
    assert "float32" in props["INFERENCE_PRECISION_HINT"]  # never bf16 on CPUs that have it
    with pytest.raises(ConfigError, match="apply to openvino only; .* runs on onnxruntime"):
        open_model(ModelConfig(path=exported["onnx"], streams=2))


def test_an_absent_or_unknown_device_is_refused(exported: dict[str, Path]) -> None:
    present = {d.split(".")[0] for d in ov.Core().available_devices}
    absent = next((d for d in ("NPU", "GPU") if d not in present), None)
    if absent is not None:
        with pytest.raises(ConfigError, match=f"OpenVINO finds no {absent} on this machine"):
            open_backend(exported["openvino"], device=absent.lower())
    with pytest.raises(ConfigError, match="'cuda' is not an OpenVINO device"):
        open_backend(exported["openvino"], device="cuda")
    backend = open_backend(exported["openvino"], device="auto")
    assert backend.infer(np.zeros((1, *backend.input_shape), np.float32))[0].shape == (1,)


def test_fp16_ir_and_the_same_refusal_as_the_fp16_graph(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    half = tmp_path / "half.xml"
    assert main(["export", "openvino", str(tiny_checkpoint), "--out", str(half), "--fp16"]) == 0
    assert open_backend(half).precision == "fp16"
    logdet = tmp_path / "logdet"  # a card saying the flow sums its log-dets inside
    shutil.copytree(tiny_checkpoint, logdet)
    card = json.loads((logdet / "card.json").read_text())
    card["score"]["uses_logdet"] = True
    (logdet / "card.json").write_text(json.dumps(card))
    capsys.readouterr()
    for target, suffix in (("openvino", ".xml"), ("onnx", ".onnx")):
        out = tmp_path / f"refused{suffix}"
        assert main(["export", target, str(logdet), "--out", str(out), "--fp16"]) == 2
        assert "log-determinant terms summed inside the flow" in capsys.readouterr().err
        assert not out.exists()


def test_int8_gate_numbers_and_refusal() -> None:
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    fp32 = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    same = int8_report(labels, fp32, fp32 + 0.01, threshold=4.5)
    assert same.passed and same.auroc_drop == 0 and same.flips == 0
    swapped = fp32.copy()
    swapped[[3, 4]] = swapped[[4, 3]]  # one normal above one defect, both across 4.5
    report = int8_report(labels, fp32, swapped, threshold=4.5, bounds=Int8Bounds(0.005, 0.2))
    assert report.auroc_fp32 == 1.0 and report.auroc_int8 == pytest.approx(15 / 16)
    assert report.flips == 2 and report.max_flips == 1 and not report.passed
    with pytest.raises(ModelMismatchError, match=r"AUROC 1.0000 fp32 -> 0.9375 INT8") as info:
        require_passed(report, "model.xml")
    assert info.value.exit_code == EXIT_MODEL and "export without --int8" in str(info.value)


def _export_int8(target: str, checkpoint: Path, data: Path, out: Path, *options: str) -> int:
    return main(
        ["export", target, str(checkpoint), "--out", str(out), "--int8", "--int8-count", "8"]
        + ["--validation", str(data / "test"), *options]
    )


@pytest.mark.parametrize("target,suffix", [("openvino", ".xml"), ("onnx", ".onnx")])
def test_int8_export_is_gated_and_keeps_the_reductions_fp32(
    tiny_checkpoint: Path, synthetic_dataset: Path, tmp_path: Path, target: str, suffix: str
) -> None:
    out = tmp_path / f"int8{suffix}"
    card = ModelCard.load(tiny_checkpoint / "card.json")
    calibration = tmp_path / "calibration.json"  # far above every score: no decision can flip
    calibration.write_text(json.dumps({"threshold": 1e9, "weights_sha256": card.weights_sha256}))
    options = ("--calibration", str(calibration), "--max-auroc-drop", "0.9")  # 2-epoch 64 px
    assert _export_int8(target, tiny_checkpoint, synthetic_dataset, out, *options) == 0
    backend = open_backend(out, "openvino" if target == "openvino" else "onnxruntime")
    assert backend.precision == "int8"
    meta = (
        model_metadata(ov.Core().read_model(str(out)))
        if target == "openvino"
        else dict(OnnxRuntimeBackend.open(out).session.get_modelmeta().custom_metadata_map)
    )
    gate = json.loads(meta[metadata.INT8_KEY])
    assert gate["passed"] and gate["n_samples"] == 12 and gate["quantiser_samples"] == 8
    assert gate["threshold_source"] == "calibration" and gate["flips"] == 0
    assert gate["kept_fp32"]  # the sums after z stay fp32


def test_int8_export_outside_the_bounds_is_refused_with_exit_4(
    tiny_checkpoint: Path,
    synthetic_dataset: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import flowedge.export.int8_export as int8_export

    scored = int8_export.validation_scores

    def reversed_for_int8(path: Path, *args):  # stands in for a quantiser that broke the model
        labels, scores = scored(path, *args)
        return labels, (-scores if path.stem == "int8" else scores)

    monkeypatch.setattr(int8_export, "validation_scores", reversed_for_int8)
    # the real quantiser is exercised above; here only the gate's refusal path matters
    monkeypatch.setattr(int8_export, "quantize_openvino", lambda model, *_: (model, []))
    out = tmp_path / "int8.xml"
    assert _export_int8("openvino", tiny_checkpoint, synthetic_dataset, out) == EXIT_MODEL
    err = capsys.readouterr().err
    assert "INT8 model refused" in err and "AUROC" in err and "decision flip(s)" in err
    assert not out.exists() and (tmp_path / "int8.failed.xml").exists()


def test_int8_needs_a_validation_split(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "m.xml"
    assert main(["export", "openvino", str(tiny_checkpoint), "--out", str(out), "--int8"]) == 2
    assert "--int8 needs --validation DIR" in capsys.readouterr().err
