"""The station runs with ONNX Runtime where torch is not installed.

A subprocess gets a ``sitecustomize`` on PYTHONPATH whose meta-path finder
makes ``import torch`` (and the training stack) fail, then loads an exported
graph through the ONNX Runtime backend, preprocesses images with the card's
spec and scores them; and runs ``flowedge run`` on a folder once the runtime
(``edge.cmd_run``) exists.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))

BLOCKER = '''
import importlib.abc, sys

class _NoTorch(importlib.abc.MetaPathFinder):
    """Behave as if the training stack were not installed."""
    BLOCKED = ("torch", "torchvision", "timm", "FrEIA", "safetensors")

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.BLOCKED:
            raise ModuleNotFoundError(
                f"No module named {name!r} (blocked by test_station_no_torch)", name=name
            )
        return None

sys.meta_path.insert(0, _NoTorch())
'''

STATION = """
import sys
try:
    import torch  # noqa: F401
    sys.exit("torch was importable: the blocker does not work")
except ModuleNotFoundError:
    pass
from pathlib import Path
import numpy as np
from flowedge.backends import open_backend
from flowedge.modalities import get_modality

backend = open_backend(Path(sys.argv[1]), threads=1)
modality = get_modality(backend.card.input.kind)
images = modality.list_files(Path(sys.argv[2]))
batch = np.stack([modality.load(p, backend.card.input) for p in images])
scores, maps = backend.infer(batch)
assert scores.shape == (len(images),) and np.isfinite(scores).all(), scores
assert maps.shape[0] == len(images)
assert not any(m.split(".")[0] in ("torch", "timm") for m in sys.modules)
print("STATION-OK", " ".join(f"{s:.6g}" for s in scores))
"""


def _env(tmp: Path) -> dict[str, str]:
    (tmp / "sitecustomize.py").write_text(textwrap.dedent(BLOCKER), encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp), str(REPO)])
    return env


def run_station_without_torch(
    tmp_path: Path, model: Path, sources: str, threshold: float = 1.0e9, *args: str
) -> subprocess.CompletedProcess:
    """``flowedge run`` on ``model`` (ONNX Runtime) in a process where torch cannot be
    imported; MQTT off, so every decision stays in ``tmp_path/spool.sqlite``'s records.
    ``sources`` is the YAML list of the config's ``sources`` (one line, flow style)."""
    config = tmp_path / "config.yaml"
    config.write_text(
        textwrap.dedent(f"""
        model: {{path: {model}, backend: onnxruntime, threshold: {threshold}}}
        sources: {sources}
        mqtt: {{enabled: false}}
        metrics: {{enabled: false}}
        spool: {{path: {tmp_path / "spool.sqlite"}}}
        pipeline: {{heatmaps: none}}
    """),
        encoding="utf-8",
    )
    return subprocess.run(
        [sys.executable, "-m", "flowedge.cli", "run", "--config", str(config), *args],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


@pytest.fixture(scope="module")
def station_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from test_export import StandInDetector

    from flowedge.export.onnx_export import export_onnx

    tmp = tmp_path_factory.mktemp("station")
    det = StandInDetector().eval()
    model = tmp / "model.onnx"
    export_onnx(det, det.card(), model)
    images = tmp / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(images / f"{i}.png"), rng.integers(0, 255, (48, 40, 3), dtype=np.uint8))
    return model, images


def score_without_torch(tmp_path: Path, model: Path, images: Path) -> str:
    """Run :data:`STATION` on ``model`` (any backend, by its file) where torch cannot be
    imported; its stdout, which has passed the script's checks."""
    script = tmp_path / "station.py"
    script.write_text(STATION, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script), str(model), str(images)],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "STATION-OK" in done.stdout
    return done.stdout


def test_onnxruntime_backend_runs_without_torch(station_files, tmp_path: Path) -> None:
    model, images = station_files
    stdout = score_without_torch(tmp_path, model, images)

    from flowedge.backends.onnxrt import OnnxRuntimeBackend
    from flowedge.modalities.image import MODALITY as IMAGE

    backend = OnnxRuntimeBackend.open(model, "cpu", 1)
    batch = np.stack([IMAGE.load(p, backend.card.input) for p in IMAGE.list_files(images)])
    expected = " ".join(f"{s:.6g}" for s in backend.infer(batch)[0])
    assert stdout.split("STATION-OK")[1].strip() == expected  # same numbers with and without torch


def test_flowedge_run_without_torch(station_files, tmp_path: Path) -> None:
    model, images = station_files
    done = run_station_without_torch(
        tmp_path, model, f"[{{name: cam1, kind: folder, path: {images}}}]"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "onnxruntime" in done.stderr and "3 decisions, 0 errors" in done.stderr, done.stderr[
        -3000:
    ]


def test_flowedge_predict_without_torch(station_files, tmp_path: Path) -> None:
    model, images = station_files
    out = tmp_path / "scores.csv"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "flowedge.cli",
            "predict",
            str(model),
            str(images),
            "--out",
            str(out),
        ],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(out.read_text(encoding="utf-8").splitlines()) == 1 + 3
