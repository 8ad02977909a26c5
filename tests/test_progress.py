"""Progress off a terminal: a few readable log lines, never one giant redrawn bar."""

from __future__ import annotations

import io
import logging

import pytest

from flowedge.core.progress import Progress


def test_without_terminal_logs_every_tenth(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()  # not a terminal: a log file, CI output, systemd
    with (
        caplog.at_level(logging.INFO, logger="flowedge.progress"),
        Progress(50, "fit", "batch", stream=stream, every_s=1e9) as progress,
    ):
        for epoch in range(5):
            for _ in range(10):
                progress.update(1, epoch=epoch + 1, loss=0.5)
    lines = [r.getMessage() for r in caplog.records]
    assert stream.getvalue() == ""
    assert len(lines) == 10, lines
    assert lines[0].startswith("fit: 5/50 batch (10 %)") and "epoch 1, loss 0.5" in lines[0]
    assert lines[-1].startswith("fit: 50/50 batch (100 %)") and "epoch 5" in lines[-1]


def test_a_loop_that_ends_early_still_logs_where_it_stopped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with (
        caplog.at_level(logging.INFO, logger="flowedge.progress"),
        Progress(1000, "fit", "batch", bar=False, every_s=1e9) as progress,
    ):
        progress.advance_to(3)
    assert [r.getMessage().split(",")[0] for r in caplog.records] == ["fit: 3/1000 batch (0 %)"]


def test_training_logs_its_progress(
    detectors, synthetic_dataset, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    from conftest import TINY_SIZE

    from flowedge.flows.config import BackboneConfig, GaussianConfig, TrainingConfig
    from flowedge.flows.train import train

    with caplog.at_level(logging.INFO, logger="flowedge.progress"):
        train(
            GaussianConfig(backbone=BackboneConfig(weights="none"), image_size=TINY_SIZE),
            TrainingConfig(epochs=1, batch_size=4),
            synthetic_dataset,
            tmp_path / "model",
            show_progress=False,
        )
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("features: 16/16 file (100 %)") for line in lines), lines
    assert any(line.startswith("fit: ") for line in lines), lines
