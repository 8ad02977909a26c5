"""Publish: each decided sample becomes a record in the spool, numbered per sensor."""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from dataclasses import replace

from flowedge.core.decision import JUDGED
from flowedge.edge.config import FlowedgeConfig
from flowedge.edge.handshake import Handshakes
from flowedge.edge.health import POLL_S, StageProgress
from flowedge.edge.loop.counts import Counts
from flowedge.edge.loop.events import EventBus
from flowedge.edge.loop.evidence import InputKeeper
from flowedge.edge.loop.fanin import END
from flowedge.edge.loop.heatmaps import HeatmapWriter
from flowedge.edge.loop.messages import decision_doc, encode
from flowedge.edge.loop.policy import Verdict
from flowedge.edge.loop.sample import Sample
from flowedge.edge.metrics import Metrics
from flowedge.edge.spool import Spool
from flowedge.modalities import get_modality

log = logging.getLogger(__name__)


class Publish:
    """Each decided sample's record: heatmap, the input's copy, the modality's fields,
    numbered and stored in the spool in one transaction (the sinks deliver it from there)."""

    def __init__(
        self,
        inbox: queue.Queue,
        cfg: FlowedgeConfig,
        heatmaps: HeatmapWriter,
        inputs: InputKeeper,
        spool: Spool,
        counts: Counts,
        metrics: Metrics,
        events: EventBus,
        queue_depths: Callable[[], dict[str, int]],
        handshakes: Handshakes | None = None,
    ) -> None:
        self.inbox, self.cfg = inbox, cfg
        self.heatmaps, self.inputs, self.spool, self.counts = heatmaps, inputs, spool, counts
        self.metrics, self.events, self.queue_depths = metrics, events, queue_depths
        self.handshakes = handshakes or Handshakes()
        self.progress = StageProgress("publish", inbox.empty)
        self._overflow_seen = 0

    def run(self) -> None:
        while True:
            try:
                sample = self.inbox.get(timeout=POLL_S)
            except queue.Empty:
                self.progress.tick()
                continue
            self.progress.tick()
            if sample is END:
                return
            self._publish(sample)

    def _publish(self, sample: Sample) -> None:
        t0 = time.perf_counter()
        verdict, route = sample.verdict, sample.route
        assert verdict is not None  # Infer decides every sample it passes on
        if (
            route is not None
            and verdict.policy is not None
            and self.heatmaps.wants(verdict.decision)
        ):
            heatmap = self.heatmaps.write(
                sample, verdict.score, verdict.decision, verdict.policy.threshold, route.spec
            )
            verdict = replace(verdict, heatmap=heatmap)
        if self.inputs.wants(sample, verdict.decision):  # before any sink sees the decision
            verdict = replace(verdict, evidence=self.inputs.keep(sample))
        # the map is dropped now: the modality of the sample's source keeps what drove the
        # score (also for a sample refused before scoring, so its fields stay complete)
        extra = get_modality(sample.modality).decision_fields(
            sample.context, sample.amap, sample.explanation, None if route is None else route.spec
        )
        sample.tensor = sample.amap = sample.explanation = None
        sample.mark("publish", t0)
        card, backend = (None, None) if route is None else (route.card, route.backend.name)

        doc: dict = {}

        def build(seq: int) -> bytes:
            sample.seq = seq
            doc.update(decision_doc(self.cfg, card, backend, sample, verdict, extra))
            return encode(doc)

        self.spool.put_numbered(sample.source, build, sample.intake_id)
        self.handshakes.decided(sample.source, doc)  # a PLC waiting for this part: its result
        log.debug(
            "%s #%d %s: %s (score %s)",
            sample.source,
            sample.seq,
            sample.part_id,
            verdict.decision,
            verdict.score,
        )
        self.counts.add("decisions")
        if verdict.decision == "ERROR":
            self.counts.add("errors")
        self._observe(sample, verdict.decision, t0)
        self._check_drift(sample, verdict)

    def _check_drift(self, sample: Sample, verdict: Verdict) -> None:
        """Feed the sensor's drift monitor of the sample's model (calibration file only) with
        judged scores; an event when it drifts."""
        if verdict.policy is None or verdict.score is None or verdict.decision not in JUDGED:
            return
        monitor = verdict.policy.drift.get(sample.source)
        if monitor is None:
            return
        report = monitor.update(verdict.score)
        if report is not None:
            self.events.emit(
                sample.source,
                "drift",
                f"{sample.source}: {report.summary()}; inspect the line and the camera, "
                "or recalibrate",
                **report.to_dict(),
            )

    def _observe(self, sample: Sample, decision: str, t0: float) -> None:
        m = self.metrics
        if self.spool.overflowed > self._overflow_seen:
            m.spool_overflow.inc(self.spool.overflowed - self._overflow_seen)
            self._overflow_seen = self.spool.overflowed
        m.decisions.labels(sample.source, decision).inc()
        if sample.recipe is not None:
            m.recipe_decisions.labels(sample.recipe, decision).inc()
        if sample.route is not None:
            sample.route.state.count(decision)
        # the metric includes the spool commit (fsync), which the message cannot carry
        m.stage_seconds.labels("publish").observe(time.perf_counter() - t0)
        m.stage_seconds.labels("end_to_end").observe(time.perf_counter() - sample.t_captured)
        m.spool_messages.set(self.spool.count())
        for name, depth in self.queue_depths().items():
            m.queue_depth.labels(name).set(depth)
