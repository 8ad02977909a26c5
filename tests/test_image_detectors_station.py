"""Every registered image detector goes the whole way: train, export with its parity gate,
and decide images in the station without torch.

One tiny model per detector (64 px, random backbone, one epoch): ``flowedge export onnx``
must pass the parity check against PyTorch, and ``flowedge run`` on a folder, in a
process where torch cannot be imported, must decide every image with the graph.
A new detector is covered by registering it (and giving ``tiny()`` its small settings).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from test_detectors import IMAGE_KINDS, tiny  # noqa: E402
from test_station_no_torch import run_station_without_torch  # noqa: E402

from flowedge.flows.config import TrainingConfig  # noqa: E402


def _cli(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flowedge.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("kind", IMAGE_KINDS)
def test_detector_trains_exports_and_runs_in_the_station(
    kind: str, synthetic_dataset: Path, tmp_path: Path
) -> None:
    from flowedge.flows.train import train

    checkpoint = tmp_path / "model"
    training = TrainingConfig(epochs=1, batch_size=8, seed=0)
    train(tiny(kind), training, synthetic_dataset, checkpoint, show_progress=False)

    graph = tmp_path / "model.onnx"
    exported = _cli("export", "onnx", checkpoint, "--out", graph)
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert graph.is_file()

    images = synthetic_dataset / "test" / "good"
    ran = run_station_without_torch(
        tmp_path, graph, f"[{{name: cam1, kind: folder, path: {images}}}]"
    )
    n_images = len(list(images.iterdir()))
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert f"{n_images} decisions, 0 errors" in ran.stderr, ran.stderr[-3000:]
