"""Preprocess: decode each payload, route it to its model and turn it into that model's
tensor (or take it into its sensor's baseline), off the capture threads."""

from __future__ import annotations

import logging
import queue
import time
from typing import Any

from flowedge.core.errors import BadInputError
from flowedge.edge.config import LimitsConfig
from flowedge.edge.health import POLL_S, StageProgress
from flowedge.edge.loop.capture import refuse
from flowedge.edge.loop.events import EventBus
from flowedge.edge.loop.fanin import END, FanIn
from flowedge.edge.loop.models import Router
from flowedge.edge.loop.sample import Sample
from flowedge.edge.metrics import Metrics
from flowedge.modalities import get_modality

log = logging.getLogger(__name__)


class Preprocess:
    """Decode, route and preprocess with the routed model's spec (off the capture threads)."""

    def __init__(
        self,
        fan_in: FanIn,
        out: queue.Queue,
        router: Router,
        limits: LimitsConfig,
        metrics: Metrics,
        events: EventBus,
    ) -> None:
        self.fan_in, self.out, self.router, self.limits = fan_in, out, router, limits
        self.metrics, self.events = metrics, events
        self._decode_limits: dict[str, Any] = {}
        self.progress = StageProgress("preprocess", lambda: fan_in.depth() == 0)

    def run(self) -> None:
        while True:
            sample = self.fan_in.get(timeout=POLL_S)
            self.progress.tick()
            if sample is None:
                continue
            if sample is END:
                self.out.put(END)
                return
            self._preprocess(sample)
            self.out.put(sample)

    def _preprocess(self, sample: Sample) -> None:
        t0 = time.perf_counter()
        sample.timings_ms["queue"] = round((t0 - sample.t_captured) * 1000.0, 3)
        name = f"{sample.source}/{sample.part_id}"
        try:
            if sample.error is not None:  # refused at capture: nothing to decode
                sample.route = self.router.peek(sample)
            else:
                self._prepare(sample, name)
        except BadInputError as exc:
            refuse(sample, str(exc), self.metrics, self.events)
        except Exception as exc:  # MemoryError, a decoder bug: this sample's ERROR, not the loop's
            log.debug("preprocessing %s failed", name, exc_info=True)
            refuse(
                sample,
                f"{name}: cannot preprocess ({type(exc).__name__}: {exc}); check the file "
                "and the source (the station goes on)",
                self.metrics,
                self.events,
            )
        sample.payload = None
        sample.mark("preprocess", t0)
        self.metrics.stage_seconds.labels("preprocess").observe(
            sample.timings_ms["preprocess"] / 1e3
        )

    def _prepare(self, sample: Sample, name: str) -> None:
        """Decode with the source's modality, route, then the routed model's tensor."""
        modality = get_modality(sample.modality)
        if sample.modality not in self._decode_limits:
            self._decode_limits[sample.modality] = self.limits.decode_limits(sample.modality)
        limits = self._decode_limits[sample.modality]
        raw = modality.as_raw(sample.payload, name, limits)
        route = sample.route = self.router.route(sample, raw)
        if sample.modality != route.spec.kind:
            raise BadInputError(
                f"{sample.source}: {sample.modality} sample for a "
                f"{route.spec.kind} model; check the source configuration"
            )
        sample.tensor = modality.preprocess(raw, route.spec, name, limits)
        sample.baseline = route.take(raw)
