"""The stage loops: capture (one per source) -> preprocess -> infer -> publish.

Each loop runs on its own thread and hands samples on through bounded queues; ``END``
follows the last sample so each stage drains its input before it ends. A sample that
cannot be scored is marked (``sample.error``) and still travels on: it gets an
``ERROR`` decision plus an event, and the loop goes on.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from flowedge.backends.base import Backend
from flowedge.core.card import InputSpec
from flowedge.core.errors import BadInputError, FlowedgeError
from flowedge.edge.counts import Counts
from flowedge.edge.cycle_report import cycle_report
from flowedge.edge.decider import Decider
from flowedge.edge.events import EventBus
from flowedge.edge.fanin import END, FanIn
from flowedge.edge.health import StageProgress
from flowedge.edge.intake import journaled
from flowedge.edge.metrics import Metrics
from flowedge.edge.sample import Sample
from flowedge.edge.signal_drivers import explain_anomalies
from flowedge.edge.source_states import SourceStates
from flowedge.edge.sources import Source
from flowedge.edge.spool import Spool
from flowedge.modalities import get_modality

log = logging.getLogger(__name__)

POLL_S = 0.5  # how often an idle stage ticks its progress (the watchdog's "alive")


def refuse(sample: Sample, message: str, metrics: Metrics, events: EventBus) -> None:
    """The sample cannot be scored: it will be answered with ``ERROR`` and ``message``."""
    sample.error = message
    metrics.bad_inputs.labels(sample.source).inc()
    events.emit(sample.source, "bad_input", message, part_id=sample.part_id)


class Capture:
    """One source's frames into the fan-in, until the source ends, fails or ``stop`` is set."""

    def __init__(
        self,
        source: Source,
        spool: Spool,
        fan_in: FanIn,
        states: SourceStates,
        counts: Counts,
        metrics: Metrics,
        events: EventBus,
        stop: threading.Event,
        max_samples: int | None,
    ) -> None:
        self.source, self.spool, self.fan_in = source, spool, fan_in
        self.states, self.counts = states, counts
        self.metrics, self.events, self.stop, self.max_samples = metrics, events, stop, max_samples

    def run(self) -> None:
        name = self.source.name
        try:
            self._capture()
        except Exception as exc:  # a dead source must not take the station down silently
            if not isinstance(exc, FlowedgeError):  # a bug: keep the traceback
                log.exception("source %s failed", name)
            self.events.emit(name, "source_lost", f"source {name} stopped: {exc}")
            self.states.failed(name, str(exc))
            return
        self.states.set(name, "ended")

    def _capture(self) -> None:
        source = self.source
        # the unanswered samples of a crashed run first; each new one journaled before it queues
        for frame, intake_id in journaled(self.spool, source, self.stop):
            t0 = time.perf_counter()
            sample = Sample(
                source=source.name,
                part_id=frame.part_id,
                payload=frame.payload,
                modality=source.modality,
                captured_utc=frame.captured_utc,
                intake_id=intake_id,
                context=frame.context,
            )
            if frame.error is not None:  # the source already judged it (e.g. never settled)
                refuse(sample, frame.error, self.metrics, self.events)
            if self.states.get(source.name) != "up":
                self.states.connected(source.name, True)
            self.metrics.samples.labels(source.name).inc()
            sample.mark("capture", t0)
            self.metrics.stage_seconds.labels("capture").observe(sample.timings_ms["capture"] / 1e3)
            self.fan_in.put(sample)
            total = self.counts.add("samples")
            if self.max_samples is not None and total >= self.max_samples:
                self.stop.set()
            if self.stop.is_set():
                return


class Preprocess:
    """Decode and preprocess with the model card's spec (off the capture threads)."""

    def __init__(
        self,
        fan_in: FanIn,
        out: queue.Queue,
        spec: InputSpec,
        limits: Any,
        metrics: Metrics,
        events: EventBus,
    ) -> None:
        self.fan_in, self.out, self.spec, self.limits = fan_in, out, spec, limits
        self.metrics, self.events = metrics, events
        self.modality = get_modality(spec.kind)
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
        spec, name = self.spec, f"{sample.source}/{sample.part_id}"
        try:
            if sample.error is not None:  # refused at capture: nothing to decode
                pass
            elif sample.modality != spec.kind:
                raise BadInputError(
                    f"{sample.source}: {sample.modality} sample for a "
                    f"{spec.kind} model; check the source configuration"
                )
            else:
                sample.tensor = self.modality.preprocess(sample.payload, spec, name, self.limits)
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


class Infer:
    """Score whatever has queued up, in batches of at most ``max_batch``; then find the
    signals that drove each anomalous cycle whose map cannot say (on this thread: the
    backend's)."""

    def __init__(
        self,
        inbox: queue.Queue,
        out: queue.Queue,
        backend: Backend,
        max_batch: int,
        metrics: Metrics,
        events: EventBus,
        threshold: Callable[[], float],
    ) -> None:
        self.inbox, self.out, self.backend, self.max_batch = inbox, out, backend, max_batch
        self.metrics, self.events, self.threshold = metrics, events, threshold
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
            self.progress.tick()
            for sample in samples:
                self.out.put(sample)
            if ended:
                self.out.put(END)
                return

    def _score(self, samples: list[Sample]) -> None:
        valid = [s for s in samples if s.error is None]
        if not valid:
            return
        t0 = time.perf_counter()
        try:
            scores, maps = self.backend.infer(np.stack([s.tensor for s in valid]))
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
        explain_anomalies(self.backend, valid, self.threshold())


class Publish:
    """Decide, then number and store each decision in the spool (one transaction)."""

    def __init__(
        self,
        inbox: queue.Queue,
        decider: Decider,
        spool: Spool,
        counts: Counts,
        metrics: Metrics,
        on_published: Callable[[], None],
        queue_depths: Callable[[], dict[str, int]],
    ) -> None:
        self.inbox, self.decider, self.spool, self.counts = inbox, decider, spool, counts
        self.metrics, self.on_published, self.queue_depths = metrics, on_published, queue_depths
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
        verdict = self.decider.verdict(sample)
        cycle = (sample.context or {}).get("cycle")
        if cycle is not None:  # the map is dropped now: keep what drove the score
            sample.context["cycle"] = cycle_report(
                cycle, sample.amap, sample.signal_drops, self.decider.card.input
            )
        sample.tensor = sample.amap = sample.signal_drops = None
        sample.mark("publish", t0)

        def build(seq: int) -> tuple[str, bytes]:
            sample.seq = seq
            return self.decider.message(sample, verdict)

        self.spool.put_numbered(sample.source, build, sample.intake_id)
        self.on_published()
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
        self.decider.check_drift(sample, verdict)

    def _observe(self, sample: Sample, decision: str, t0: float) -> None:
        m = self.metrics
        if self.spool.overflowed > self._overflow_seen:
            m.spool_overflow.inc(self.spool.overflowed - self._overflow_seen)
            self._overflow_seen = self.spool.overflowed
        m.decisions.labels(sample.source, decision).inc()
        # the metric includes the spool commit (fsync), which the message cannot carry
        m.stage_seconds.labels("publish").observe(time.perf_counter() - t0)
        m.stage_seconds.labels("end_to_end").observe(time.perf_counter() - sample.t_captured)
        m.spool_messages.set(self.spool.count())
        for name, depth in self.queue_depths().items():
            m.queue_depth.labels(name).set(depth)
