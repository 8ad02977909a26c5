"""Anomaly-map overlays on disk, with a retention limit per sensor.

The picture is the modality's (:meth:`flowedge.modalities.base.Modality.render`: the
map over the model's input view, with score, decision and a colour bar). Per sensor at
most ``pipeline.heatmap_keep`` files and ``pipeline.heatmap_keep_mb`` megabytes are
kept, oldest deleted first (:mod:`.kept_files`). A failed write is an event (the
decision still goes out, with ``heatmap: null``), never silent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import cv2

from flowedge.core.card import InputSpec
from flowedge.core.decision import JUDGED, Decision
from flowedge.edge.config import PipelineConfig
from flowedge.edge.loop.filenames import safe_file_stem
from flowedge.edge.loop.kept_files import KeptFiles, stamped_name
from flowedge.edge.loop.sample import Sample
from flowedge.modalities import get_modality

log = logging.getLogger(__name__)

EventSink = Callable[..., None]  # (sensor, kind, message, **details)


class HeatmapWriter:
    """Used by the publish stage only (one thread): no locking."""

    def __init__(self, cfg: PipelineConfig, events: EventSink) -> None:
        self.cfg, self.events = cfg, events  # cfg.heatmaps changes on SIGHUP
        self._kept: dict[str, KeptFiles] = {}

    def wants(self, decision: Decision) -> bool:
        """Judged samples only (not ERROR, not BASELINING), as ``pipeline.heatmaps`` says."""
        mode = self.cfg.heatmaps
        return decision in JUDGED and (
            mode == "all" or (mode == "anomalies" and decision == "ANOMALY")
        )

    def write(
        self, sample: Sample, score: float, decision: Decision, threshold: float, spec: InputSpec
    ) -> str | None:
        """Write the overlay (the picture of ``spec``'s modality: the model that scored it) and
        apply the retention limit; the PNG path, None on failure."""
        folder = Path(self.cfg.heatmap_dir) / sample.source
        # any part id (invalid UTF-8, '..', newlines, 300 characters) gives a safe, unique name
        out = folder / stamped_name(sample.captured_utc, safe_file_stem(sample.part_id), ".png")
        try:
            image = get_modality(spec.kind).render(
                sample.tensor, sample.amap, spec, score, decision, threshold
            )
            folder.mkdir(parents=True, exist_ok=True)
            if sample.source not in self._kept:  # first overlay since start: count what is there
                self._kept[sample.source] = KeptFiles(folder, "*.png")
            kept = self._kept[sample.source]
            ok, png = cv2.imencode(".png", image)
            if not ok:
                raise ValueError("OpenCV could not encode the PNG")
            out.write_bytes(png.tobytes())  # unlike cv2.imwrite, a full disk raises (OSError)
            kept.add(out)
        except Exception as exc:  # one sample's picture: never the station's failure
            log.debug("heatmap for %s/%s", sample.source, sample.part_id, exc_info=True)
            self.events(
                sample.source,
                "heatmap_failed",
                f"heatmap of {sample.source}/{sample.part_id} not written to {out} ({exc}); "
                "check that pipeline.heatmap_dir "
                "is writable and has free space",
                part_id=sample.part_id,
            )
            return None
        kept.prune(self.cfg.heatmap_keep, self.cfg.heatmap_keep_mb * 1e6)
        return str(out)
