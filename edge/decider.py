"""From a scored sample to its verdict and message: the one rule, heatmap choice, drift."""

from __future__ import annotations

from flowedge.core.card import ModelCard
from flowedge.core.decision import decide
from flowedge.edge.config import FlowedgeConfig
from flowedge.edge.events import EventBus
from flowedge.edge.heatmaps import HeatmapWriter
from flowedge.edge.messages import Verdict, decision_doc, encode
from flowedge.edge.policy import Policy
from flowedge.edge.sample import Sample
from flowedge.edge.topics import Topics


class Decider:
    """``policy`` is replaced as a whole on SIGHUP; each verdict keeps the one it used."""

    def __init__(
        self,
        cfg: FlowedgeConfig,
        card: ModelCard,
        backend_name: str,
        policy: Policy,
        heatmaps: HeatmapWriter,
        events: EventBus,
    ) -> None:
        self.cfg, self.card, self.backend_name = cfg, card, backend_name
        self.policy, self.heatmaps, self.events = policy, heatmaps, events
        self.topics = Topics(cfg)

    def verdict(self, sample: Sample) -> Verdict:
        policy = self.policy
        score = sample.score if sample.error is None else None
        decision = decide(score, policy.threshold)
        heatmap = (
            self.heatmaps.write(sample, score, decision, policy.threshold)
            if self.heatmaps.wants(decision)
            else None
        )
        return Verdict(decision, score, policy, heatmap)

    def message(self, sample: Sample, verdict: Verdict) -> tuple[str, bytes]:
        """The decision message to spool: (topic, JSON payload)."""
        doc = decision_doc(self.cfg, self.card, self.backend_name, sample, verdict)
        return self.topics.decision(sample.source), encode(doc)

    def check_drift(self, sample: Sample, verdict: Verdict) -> None:
        """Feed the sensor's drift monitor (calibration file only); an event when it drifts."""
        monitor = verdict.policy.drift.get(sample.source)
        if monitor is None or verdict.score is None:
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
