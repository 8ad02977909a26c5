"""Shared fixtures: a tiny synthetic dataset and a tiny trained checkpoint.

Both are session-scoped and small (64 px, a handful of images, random backbone,
one epoch) so every engineer's tests can use a real model in seconds.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from flowedge.flows.config import BackboneConfig, CSFlowConfig, TrainingConfig

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

TINY_SIZE = 64


def tiny_detector_config(**overrides: object) -> CSFlowConfig:
    """A CS-Flow small enough to train in seconds on a CPU (random backbone, no download)."""
    values: dict[str, object] = dict(
        backbone=BackboneConfig(weights="none"),
        image_size=TINY_SIZE,
        n_scales=2,
        n_blocks=2,
        kernel_sizes=[3, 3],
        hidden_channels=16,
    )
    return CSFlowConfig(**(values | overrides))


def tiny_audio_detector(**front_end: object) -> dict[str, object]:
    """The config file's detector section of an audio flow that trains in seconds (random
    backbone, one small block), on a 16 kHz, 32-mel front end with ``front_end`` on top."""
    base = dict(sample_rate=16000, n_fft=512, win_length=512, hop_length=160, n_mels=32)
    return {
        "kind": "audioflow",
        "image_size": [128, 128],
        "n_blocks": 1,
        "kernel_sizes": [3],
        "hidden_channels": 8,
        "backbone": {"weights": "none"},
        "front_end": base | front_end,
    }


def tiny_training_config() -> TrainingConfig:
    return TrainingConfig(epochs=2, batch_size=8, seed=0)


@pytest.fixture(scope="session")
def mtd_root() -> Path:
    """The real Magnetic Tile Defects data (MVTec layout), read in place; skips when absent."""
    root = REAL_DATA / "mtd"
    if not (root / "train" / "good").is_dir():
        pytest.skip(f"real MTD data not found at {root}")
    return root


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MVTec-layout root: train/good (16), test/good (4), test/<defect> (2 each), ground_truth."""
    from flowedge.modalities.image_synthetic import generate_dataset

    root = tmp_path_factory.mktemp("synthetic") / "part"
    return generate_dataset(
        root, n_train=16, n_test_good=4, n_test_defect=2, size=TINY_SIZE, seed=0
    )


@pytest.fixture(scope="session")
def detectors() -> ModuleType:
    """The detector package (training stack); a broken import fails the tests that use it."""
    import flowedge.flows.detectors as module

    return module


@pytest.fixture(scope="session")
def tiny_checkpoint(
    detectors: ModuleType, synthetic_dataset: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Directory with weights.safetensors + card.json of a CS-Flow trained 2 epochs on the
    synthetic dataset (input 64 px)."""
    from flowedge.flows.train import train

    out = tmp_path_factory.mktemp("checkpoint") / "model"
    train(
        tiny_detector_config(), tiny_training_config(), synthetic_dataset, out, show_progress=False
    )
    return out


@pytest.fixture
def one_torch_thread():
    """The test machine's cores are shared: torch's default thread pool thrashes on tiny ops."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def broker(tmp_path: Path):  # noqa: ANN201
    """A private mosquitto on a free port for one test (SIGKILLed at its end); skips with the
    reason when the binary is absent."""
    from mqtt_broker import Broker, require_mosquitto

    require_mosquitto()
    (tmp_path / "broker").mkdir()
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def postgres():  # noqa: ANN201
    """A private PostgreSQL server for the session (tests/pg_server.py); skips with the reason
    when the binaries or psycopg are absent."""
    pytest.importorskip(
        "psycopg", reason="psycopg not installed (pip install 'flowedge[historian]')"
    )
    from pg_server import PgServer

    server = PgServer().start()
    yield server
    server.stop()


@pytest.fixture
def pg_dsn(postgres, request: pytest.FixtureRequest) -> str:  # noqa: ANN001
    """A new empty database on the session's server for one test; its connection string."""
    import re

    name = re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:50]
    return postgres.create_database(f"t_{name}")
