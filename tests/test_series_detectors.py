"""MTS-Flow and the closed-form baselines on simulated robot cycles: train, score, reload, export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from flowedge.flows.checkpoint import load_checkpoint
from flowedge.flows.config import (
    MTSFLOW_TRAINING,
    MTSFlowConfig,
    NearestNeighborConfig,
    PCAConfig,
    TrainingConfig,
)
from flowedge.flows.data.series import score_series, standardise_set, train_series
from flowedge.modalities import series_synthetic as sim

SIGNALS = [f"torque_sensor_a_{a}" for a in range(1, 7)] + ["motor_iq_2", "motor_iq_3"]
RATE = 10.0
TINY_TRAINING = TrainingConfig(**{**MTSFLOW_TRAINING, "epochs": 6, "batch_size": 8})


@pytest.fixture(scope="module")
def cycles() -> tuple[list[sim.SimulatedCycle], list[sim.SimulatedCycle]]:
    train = sim.simulate_set(24, 0, seed=0, rate_hz=RATE)
    test = sim.simulate_set(
        6, 1, seed=1, rate_hz=RATE, kinds=("collision_cardboard", "axis_weight")
    )
    return train, test


@pytest.fixture(scope="module")
def mtsflow_checkpoint(tmp_path_factory: pytest.TempPathFactory, cycles) -> Path:
    out = tmp_path_factory.mktemp("mtsflow")
    config = MTSFlowConfig(signals=SIGNALS, rate_hz=RATE, n_blocks=2, signal_scaling=1.0)
    train_series([c.table for c in cycles[0]], config, TINY_TRAINING, out)
    return out


@pytest.mark.parametrize(
    "config",
    [
        MTSFlowConfig(signals=SIGNALS, rate_hz=RATE, n_blocks=2, signal_scaling=1.0),
        PCAConfig(signals=SIGNALS, rate_hz=RATE, n_components=8),
        NearestNeighborConfig(signals=SIGNALS, rate_hz=RATE),
    ],
    ids=lambda c: c.kind,
)
def test_trained_detector_reloads_from_its_card_and_scores_the_same(
    tmp_path: Path, cycles, config
) -> None:
    card = train_series([c.table for c in cycles[0]], config, TINY_TRAINING, tmp_path)
    assert card.input.kind == "series" and card.input.length >= 80  # the longest training cycle
    detector, loaded = load_checkpoint(tmp_path)
    assert loaded.input == card.input
    test = standardise_set([c.table for c in cycles[1]], detector.config)
    scores = score_series(detector, test.tensors)
    assert np.isfinite(scores).all() and scores.shape == (len(cycles[1]),)
    with torch.no_grad():
        _, amap = detector(torch.from_numpy(test.tensors[:2]))
    assert tuple(amap.shape[1:]) == card.input.map_shape


def test_mtsflow_map_decomposes_the_nll_over_time(mtsflow_checkpoint: Path, cycles) -> None:
    detector, card = load_checkpoint(mtsflow_checkpoint)
    assert card.score.uses_logdet and card.detector_params["kernel_sizes"] == [13, 1, 1]
    x = torch.from_numpy(standardise_set([cycles[1][-1].table], detector.config).tensors)
    with torch.no_grad():
        score, amap = detector(x)
    assert float(amap.sum()) == pytest.approx(float(score[0]), rel=1e-4)
    from flowedge.flows.detectors.mtsflow import input_gradient_map

    gradient = input_gradient_map(detector, x)
    assert gradient.shape == x.shape and float(gradient.sum()) > 0


def test_mtsflow_exports_to_onnx_with_parity(tmp_path: Path, mtsflow_checkpoint: Path) -> None:
    from flowedge.export.checked import ExportRequest, run_export

    reports = run_export(ExportRequest(mtsflow_checkpoint, tmp_path / "model.onnx"))
    assert all(r.passed for r in reports.values())
    assert (tmp_path / "model.onnx").is_file()


def test_mtsflow_exports_to_fp16_with_its_log_det_sums_in_fp32(
    tmp_path: Path, mtsflow_checkpoint: Path
) -> None:
    """The log-scales are latents, so their sums are reductions: fp32 in the fp16 graph."""
    import onnx

    from flowedge.export.checked import ExportRequest, run_export

    reports = run_export(ExportRequest(mtsflow_checkpoint, tmp_path / "half.onnx", fp16=True))
    assert set(reports) == {"onnxruntime", "fp16_reference_evaluator"}
    assert all(r.passed and r.precision == "fp16" for r in reports.values())
    half = onnx.load(str(tmp_path / "half.onnx"))
    sums = [n for n in half.graph.node if n.op_type == "ReduceSum"]
    inferred = onnx.shape_inference.infer_shapes(half)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    assert sums and all(types[n.output[0]] == onnx.TensorProto.FLOAT for n in sums)
    convs = [n for n in half.graph.node if n.op_type == "Conv"]
    assert convs and all(types[n.output[0]] == onnx.TensorProto.FLOAT16 for n in convs)
