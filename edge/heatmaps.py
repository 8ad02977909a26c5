"""Anomaly-map overlays on disk, with a retention limit per sensor.

A station runs for months: without a limit the overlays fill the disk and then the
spool cannot commit. Per sensor at most ``pipeline.heatmap_keep`` files and
``pipeline.heatmap_keep_mb`` megabytes are kept, oldest deleted first. A failed write
is an event (the decision still goes out, with ``heatmap: null``), never silent.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from flowedge.core.card import ImageInput
from flowedge.core.decision import Decision
from flowedge.edge.config import PipelineConfig
from flowedge.edge.sample import Sample

log = logging.getLogger(__name__)

EventSink = Callable[..., None]  # (sensor, kind, message, **details)


def render_overlay(tensor: np.ndarray, amap: np.ndarray, spec: ImageInput) -> np.ndarray:
    """The anomaly map over the model's input view, as a BGR uint8 image (the one drawing)."""
    mean = np.asarray(spec.mean, dtype=np.float32)[: spec.channels, None, None]
    std = np.asarray(spec.std, dtype=np.float32)[: spec.channels, None, None]
    image = np.clip((tensor * std + mean).transpose(1, 2, 0) * 255.0, 0, 255).astype(np.uint8)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    span = float(amap.max() - amap.min()) or 1.0
    heat = ((amap - amap.min()) / span * 255.0).astype(np.uint8)
    heat = cv2.resize(heat, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    return cv2.addWeighted(image, 0.55, cv2.applyColorMap(heat, cv2.COLORMAP_JET), 0.45, 0)


class _Kept:
    """One sensor's overlays on disk, oldest first (names start with the capture time)."""

    def __init__(self, folder: Path) -> None:
        files = sorted(folder.glob("*.png")) if folder.is_dir() else []
        self.files: deque[tuple[Path, int]] = deque((p, p.stat().st_size) for p in files)
        self.bytes = sum(size for _, size in self.files)

    def add(self, path: Path) -> None:
        size = path.stat().st_size
        self.files.append((path, size))
        self.bytes += size

    def prune(self, keep: int, keep_bytes: float) -> None:
        """Delete the oldest files over either limit; the newest one always stays."""
        while len(self.files) > 1 and (len(self.files) > keep or self.bytes > keep_bytes):
            path, size = self.files.popleft()
            self.bytes -= size
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("old heatmap %s not deleted: %s", path, exc)


class HeatmapWriter:
    """Used by the publish stage only (one thread): no locking."""

    def __init__(self, cfg: PipelineConfig, spec: ImageInput, events: EventSink) -> None:
        self.cfg, self.spec, self.events = cfg, spec, events  # cfg.heatmaps changes on SIGHUP
        self._kept: dict[str, _Kept] = {}

    def wants(self, decision: Decision) -> bool:
        mode = self.cfg.heatmaps
        return decision != "ERROR" and (
            mode == "all" or (mode == "anomalies" and decision == "ANOMALY")
        )

    def write(self, sample: Sample) -> str | None:
        """Write the overlay and apply the retention limit; the PNG path, None on failure."""
        stamp = sample.captured_utc.replace("-", "").replace(":", "").replace(".", "")
        folder = Path(self.cfg.heatmap_dir) / sample.source
        out = folder / f"{stamp}_{Path(sample.part_id).stem}.png"
        try:
            image = render_overlay(sample.tensor, sample.amap, self.spec)
            folder.mkdir(parents=True, exist_ok=True)
            if sample.source not in self._kept:  # first overlay since start: count what is there
                self._kept[sample.source] = _Kept(folder)
            kept = self._kept[sample.source]
            if not cv2.imwrite(str(out), image):
                raise OSError("OpenCV could not write the PNG")
            kept.add(out)
        except (OSError, ValueError, cv2.error) as exc:
            self.events(
                sample.source,
                "heatmap_failed",
                f"heatmap {out} not written ({exc}); check that pipeline.heatmap_dir "
                "is writable and has free space",
                part_id=sample.part_id,
            )
            return None
        kept.prune(self.cfg.heatmap_keep, self.cfg.heatmap_keep_mb * 1e6)
        return str(out)
