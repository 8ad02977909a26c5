"""Stand-ins for the runtime tests: a deterministic numpy backend, image folders, configs."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from flowedge.backends.base import Backend
from flowedge.core.card import ImageInput, ModelCard, ScoreSpec
from flowedge.edge.config import FlowedgeConfig, parse_config

SCHEMAS = Path(__file__).resolve().parents[1] / "edge" / "schema"
SIZE = 32


def fake_card() -> ModelCard:
    return ModelCard(
        detector="fake",
        detector_params={},
        backbone={},
        input=ImageInput(height=SIZE, width=SIZE),
        score=ScoreSpec(kind="mean"),
        weights_sha256="f" * 64,
    )


class FakeBackend(Backend):
    """Score = mean input value + 3, so brighter images score higher; optional delay per batch."""

    name = "torch"

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__(fake_card())
        self.delay_s = delay_s
        self.batches: list[int] = []
        self.lock = threading.Lock()

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self.lock:
            self.batches.append(len(batch))
        if self.delay_s:
            time.sleep(self.delay_s)
        return batch.mean(axis=(1, 2, 3)) + 3.0, batch.mean(axis=1)


def write_images(folder: Path, count: int, size: int = SIZE, start: int = 0) -> list[Path]:
    """Grey images of rising brightness, named in replay order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + count):
        image = np.full((size, size, 3), (i * 37) % 256, dtype=np.uint8)
        path = folder / f"img_{i:04d}.png"
        cv2.imwrite(str(path), image)
        paths.append(path)
    return paths


def station_config(tmp: Path, **sections: Any) -> FlowedgeConfig:
    data: dict[str, Any] = {
        "site": "plant",
        "station": "line1",
        "model": {"path": str(tmp / "model"), "threshold": 3.0},
        "sources": [{"name": "cam1", "kind": "folder", "path": str(tmp / "images")}],
        "mqtt": {"enabled": False},
        "metrics": {"enabled": False},
        "spool": {"path": str(tmp / "spool.sqlite")},
        "pipeline": {"heatmaps": "none", "heatmap_dir": str(tmp / "heatmaps")},
    }
    data.update(sections)
    return parse_config(data)


def validator(kind: str) -> Any:
    import jsonschema

    schema = json.loads((SCHEMAS / f"{kind}.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
