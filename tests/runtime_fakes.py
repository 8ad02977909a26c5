"""Stand-ins for the runtime tests: a deterministic numpy backend, image folders, configs."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from flowedge.backends.base import Backend
from flowedge.core import metadata
from flowedge.core.card import ImageInput, InputSpec, ModelCard, ScoreSpec
from flowedge.edge.cmd_run import Station
from flowedge.edge.config import FlowedgeConfig, parse_config

SCHEMAS = Path(__file__).resolve().parents[1] / "edge" / "schema"
SIZE = 32


def fake_card(spec: InputSpec | None = None, **params: Any) -> ModelCard:
    """The card of the stand-in models: a 32 px image input unless ``spec`` says otherwise;
    ``params``: its detector parameters (a series model's ``log`` and ``segment``)."""
    return ModelCard(
        detector="fake",
        detector_params=params,
        backbone={},
        input=spec or ImageInput(height=SIZE, width=SIZE),
        score=ScoreSpec(kind="mean"),
        weights_sha256="f" * 64,
    )


class FakeBackend(Backend):
    """Score = mean input value + 3, so brighter images score higher; optional delay per batch.
    ``card``: another input (audio, series) than the 32 px image."""

    name = "torch"

    def __init__(self, delay_s: float = 0.0, card: ModelCard | None = None) -> None:
        super().__init__(card or fake_card())
        self.delay_s = delay_s
        self.batches: list[int] = []
        self.lock = threading.Lock()

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self.lock:
            self.batches.append(len(batch))
        if self.delay_s:
            time.sleep(self.delay_s)
        return batch.reshape(len(batch), -1).mean(axis=1) + 3.0, stand_in_map(batch, self.card)


def stand_in_map(batch: np.ndarray, card: ModelCard) -> np.ndarray:
    """The input itself when it has the map's shape (audio, series), else its channel mean."""
    shape = card.input.map_shape
    same = int(np.prod(shape)) == int(np.prod(batch.shape[1:]))
    return batch.reshape(len(batch), *shape) if same else batch.mean(axis=1)


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
    data.update(sections)  # a section given as None is left out (recipes instead of model)
    return parse_config({key: value for key, value in data.items() if value is not None})


def drop_oldest_config(tmp: Path) -> FlowedgeConfig:
    """30 images through one-deep queues with drop_oldest: a slow model must drop frames."""
    write_images(tmp / "images", 30)
    return station_config(
        tmp,
        sources=[
            {
                "name": "cam1",
                "kind": "folder",
                "path": str(tmp / "images"),
                "backpressure": "drop_oldest",
                "queue_size": 1,
            }
        ],
        pipeline={"heatmaps": "none", "max_batch": 1, "queue_size": 1},
    )


def validator(kind: str) -> Any:
    import jsonschema

    schema = json.loads((SCHEMAS / f"{kind}.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def open_station(cfg: FlowedgeConfig, backend: Backend | None = None, **kwargs: Any) -> Station:
    """The real ``flowedge run`` wiring (spool, pipeline, publisher) around a given backend."""
    return Station(
        Path("unused.yaml"), cfg, kwargs.pop("max_samples", None), backend or FakeBackend()
    )


def stop_station(station: Station) -> None:
    """What SIGTERM does: stop capture, drain, deliver what the broker takes, close."""
    station.shutdown("test over", wait_for_delivery=False, interrupted=threading.Event())


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """For state with no event to wait on (a spool row count, another process's file)."""
    deadline = time.monotonic() + timeout
    ticker = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        ticker.wait(0.02)


def write_onnx_model(
    path: Path, calibration: dict[str, Any] | None = None, card: ModelCard | None = None
) -> Path:
    """A real ONNX graph shaped like an export (score = mean input, map as :func:`stand_in_map`)
    with the fake card (or ``card``) and, optionally, an embedded calibration; without torch."""
    import onnx
    from onnx import TensorProto, helper

    card = card or fake_card()
    tensor, map_shape = card.input.tensor_shape, card.input.map_shape
    batch = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *tensor])
    score = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"])
    amap = helper.make_tensor_value_info("map", TensorProto.FLOAT, ["N", *map_shape])
    axes = list(range(1, len(tensor) + 1))
    if int(np.prod(tensor)) == int(np.prod(map_shape)):
        shape = helper.make_tensor(
            "shape", TensorProto.INT64, [len(map_shape) + 1], [-1, *map_shape]
        )
        to_map = [helper.make_node("Reshape", ["input", "shape"], ["map"])]
    else:
        shape, to_map = (
            None,
            [helper.make_node("ReduceMean", ["input"], ["map"], axes=[1], keepdims=0)],
        )
    nodes = [helper.make_node("ReduceMean", ["input"], ["score"], axes=axes, keepdims=0), *to_map]
    graph = helper.make_graph(nodes, "fake", [batch], [score, amap], [shape] if shape else [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    entries = {metadata.CARD_KEY: json.dumps(card.to_dict())}
    if calibration is not None:
        entries[metadata.CALIBRATION_KEY] = json.dumps(calibration)
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def wait_for_first_listing(station: Station, source: str, timeout: float = 60) -> None:
    """A watch source leaves files already there at its very first start alone (they are not
    ours, docs/pipeline.md): a test writes its files only after that first listing."""
    wait_until(lambda: station.spool.recall(source), timeout, f"{source}'s first listing")
