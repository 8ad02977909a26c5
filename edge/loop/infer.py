"""Infer: batches of tensors to scores and maps, and the one decision of each sample.

Each sample is scored by the backend its route names (a station with recipes may hold
several: a batch is split by model) and decided with that model's policy of the moment;
a sample in its sensor's baseline is not scored and is decided ``BASELINING``.
"""

from __future__ import annotations

import logging
import queue
import time

import numpy as np

from flowedge.backends.base import Backend
from flowedge.core.decision import Decision, decide
from flowedge.edge.health import POLL_S, StageProgress
from flowedge.edge.loop.capture import refuse
from flowedge.edge.loop.events import EventBus
from flowedge.edge.loop.fanin import END
from flowedge.edge.loop.policy import Verdict
from flowedge.edge.loop.sample import Sample
from flowedge.edge.metrics import Metrics
from flowedge.modalities import get_modality

log = logging.getLogger(__name__)


class Infer:
    """Score whatever has queued up, in batches of at most ``max_batch``; decide each sample
    once (the policy of that moment); let the modality explain each anomaly with further
    forward passes where its map cannot (on this thread: the backend's)."""

    def __init__(
        self,
        inbox: queue.Queue,
        out: queue.Queue,
        max_batch: int,
        metrics: Metrics,
        events: EventBus,
    ) -> None:
        self.inbox, self.out, self.max_batch = inbox, out, max_batch
        self.metrics, self.events = metrics, events
        self.progress = StageProgress("infer", inbox.empty)

    def run(self) -> None:
        while True:
            try:
                first = self.inbox.get(timeout=POLL_S)
            except queue.Empty:
                self.progress.tick()
                continue
            batch = [first]
            while first is not END and len(batch) < self.max_batch:
                try:
                    batch.append(self.inbox.get_nowait())
                except queue.Empty:
                    break
                if batch[-1] is END:
                    break
            ended = batch[-1] is END
            samples = [s for s in batch if s is not END]
            self._score(samples)
            self._decide(samples)
            for sample in samples:
                if sample.route is not None:  # its backend may close once no sample needs it
                    sample.route.release()
            self.progress.tick()
            for sample in samples:
                self.out.put(sample)
            if ended:
                self.out.put(END)
                return

    def _score(self, samples: list[Sample]) -> None:
        """Score the samples to be judged, each with its route's backend, in its batch size."""
        by_model: dict[int, tuple[Backend, list[Sample]]] = {}
        for s in samples:
            if s.error is None and s.baseline is None and s.route is not None:
                by_model.setdefault(id(s.route.backend), (s.route.backend, []))[1].append(s)
        for backend, group in by_model.values():
            for start in range(0, len(group), backend.max_batch):
                self._score_batch(backend, group[start : start + backend.max_batch])

    def _score_batch(self, backend: Backend, valid: list[Sample]) -> None:
        t0 = time.perf_counter()
        try:
            scores, maps = backend.infer(np.stack([s.tensor for s in valid]))
        except Exception as exc:  # a backend failure answers the batch with ERROR decisions
            log.exception("inference failed")
            for s in valid:
                s.error = f"inference failed: {exc}"
            self.events.emit(
                None,
                "inference_failed",
                f"inference failed on a batch of {len(valid)}: {exc}; check the model and device",
                batch=len(valid),
            )
            return
        self.metrics.batch_size.observe(len(valid))
        for s, score, amap in zip(valid, scores, maps, strict=True):
            s.mark("infer", t0)  # the batch's time: what this sample waited for its score
            self.metrics.stage_seconds.labels("infer").observe(s.timings_ms["infer"] / 1e3)
            s.score, s.amap = float(score), amap
            if not np.isfinite(score):
                refuse(
                    s,
                    f"{s.source}/{s.part_id}: the model returned a non-finite score; "
                    "check the input and the model export",
                    self.metrics,
                    self.events,
                )

    def _decide(self, samples: list[Sample]) -> None:
        """The one decision per sample (its model's policy now), then the modality's
        explanation of each anomaly."""
        for s in samples:
            policy = None if s.route is None else s.route.policy()
            score = s.score if s.error is None and s.baseline is None else None
            decision: Decision = "ERROR"
            if s.error is None and s.baseline is not None:
                decision = "BASELINING"
            elif policy is not None:
                decision = decide(score, policy.threshold)
            s.verdict = Verdict(decision, score, policy)
            if s.verdict.decision == "ANOMALY":
                self._explain(s)

    def _explain(self, s: Sample) -> None:
        """Extra forward passes (series: occlusion of each signal); a failure costs only the
        explanation, the decision still goes out."""
        assert s.route is not None  # only a scored sample is an ANOMALY
        t0 = time.perf_counter()
        backend, spec = s.route.backend, s.route.spec

        def scores(batch: np.ndarray) -> np.ndarray:
            return np.asarray(backend.infer(batch)[0], dtype=np.float64)

        try:
            s.explanation = get_modality(spec.kind).explain(
                s.tensor, s.amap, float(s.score), spec, scores, backend.max_batch
            )
        except Exception:  # a broken backend shows in the next scoring
            log.exception("explaining %s/%s failed", s.source, s.part_id)
            s.mark("drivers", t0)
            return
        if s.explanation is not None:  # the extra passes' time, in the message
            s.mark("drivers", t0)
