"""The station loop: capture (one thread per source) -> preprocess -> infer -> publish.

Stages are threads joined by bounded queues. Capture applies each source's
backpressure (``block`` never drops; ``drop_oldest`` keeps the newest frame and
counts the drop); infer batches whatever has queued up, up to ``max_batch``.
The publish stage numbers each decision per sensor and writes it to the spool
(one transaction) before the MQTT sender publishes it. A sample that cannot be
scored still gets a decision (``ERROR``) plus an event, and the loop goes on.
Stopping (end of finite sources, ``--max-samples`` or SIGTERM) stops capture and
then drains every queue, so nothing already captured is lost.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from flowedge.backends.base import Backend
from flowedge.core.errors import BadInputError
from flowedge.edge.config import FlowedgeConfig, SourceConfig
from flowedge.edge.decision import Policy, decision_doc, encode, event_doc, write_heatmap
from flowedge.edge.health import StageProgress
from flowedge.edge.metrics import Metrics
from flowedge.edge.publisher import Topics
from flowedge.edge.sample import Sample
from flowedge.edge.sources import Source, make_source
from flowedge.edge.spool import Spool
from flowedge.modalities import get_preprocessor

log = logging.getLogger(__name__)

_END = object()  # travels down the queues after the last sample
DROP_EVENT_EVERY_S = 5.0
SEVERITY = {
    "bad_input": "error",
    "source_lost": "error",
    "broker_refused": "error",
    "inference_failed": "error",
    "drift": "warning",
    "dropped": "warning",
    "source_empty": "warning",
    "spool_overflow": "error",
    "heatmap_failed": "warning",
}


class FanIn:
    """Per-source bounded queues feeding one consumer, each with its own backpressure."""

    def __init__(self, sources: list[SourceConfig], on_drop: Callable[[Sample], None]) -> None:
        self._queues = {s.name: deque() for s in sources}
        self._limits = {s.name: (s.queue_size, s.backpressure) for s in sources}
        self._order = list(self._queues)
        self._next = 0
        self._cond = threading.Condition()
        self._closed = False
        self.on_drop = on_drop

    def put(self, sample: Sample) -> None:
        dropped = None
        with self._cond:
            q = self._queues[sample.source]
            size, policy = self._limits[sample.source]
            if policy == "block":
                while len(q) >= size:
                    self._cond.wait()
            elif len(q) >= size:
                dropped = q.popleft()
            q.append(sample)
            self._cond.notify_all()
        if dropped is not None:
            self.on_drop(dropped)

    def close(self) -> None:
        """No more puts: ``get`` returns ``_END`` once everything queued was taken."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def get(self, timeout: float) -> Any:
        """Round robin over sources; None on timeout."""
        with self._cond:
            deadline = time.monotonic() + timeout
            while True:
                for i in range(len(self._order)):
                    q = self._queues[self._order[(self._next + i) % len(self._order)]]
                    if q:
                        self._next = (self._next + i + 1) % len(self._order)
                        self._cond.notify_all()
                        return q.popleft()
                if self._closed:
                    return _END
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def depth(self) -> int:
        return sum(len(q) for q in self._queues.values())


class Pipeline:
    def __init__(
        self,
        cfg: FlowedgeConfig,
        backend: Backend,
        policy: Policy,
        spool: Spool,
        metrics: Metrics,
        on_published: Callable[[], None] = lambda: None,
        on_status: Callable[[str], None] = lambda reason: None,
        max_samples: int | None = None,
        source_factory: Callable[..., Source] = make_source,
    ) -> None:
        self.cfg, self.backend, self.policy, self.spool, self.metrics = (
            cfg,
            backend,
            policy,
            spool,
            metrics,
        )
        self.card = backend.card
        self.topics = Topics(cfg)
        self.on_published = on_published
        self.on_status = on_status  # a source changed state: republish the retained status
        self.max_samples = max_samples
        self.max_batch = min(cfg.pipeline.max_batch, backend.max_batch)
        self.limits = cfg.pipeline.limits.decode_limits()
        self.stop_capture = threading.Event()
        self.finished = threading.Event()  # every stage has drained and ended
        self.source_state = {s.name: "starting" for s in cfg.sources}
        self.counts = {"samples": 0, "decisions": 0, "errors": 0, "dropped": 0}
        self._count_lock = threading.Lock()
        self._overflow_seen = 0
        self._unreported_drops: dict[str, int] = {}
        self._last_drop_event: dict[str, float] = {}
        self.fan_in = FanIn(cfg.sources, self._dropped)
        self.to_infer: queue.Queue = queue.Queue(cfg.pipeline.queue_size)
        self.to_publish: queue.Queue = queue.Queue(cfg.pipeline.queue_size)
        self.progress = [
            StageProgress("preprocess", lambda: self.fan_in.depth() == 0),
            StageProgress("infer", self.to_infer.empty),
            StageProgress("publish", self.to_publish.empty),
        ]
        self.sources = [
            source_factory(s, self.event, memory=spool, on_state=self._source_state)
            for s in cfg.sources
        ]
        self._capture_threads = [
            threading.Thread(
                target=self._capture, args=(src,), name=f"capture-{src.name}", daemon=True
            )
            for src in self.sources
        ]
        self.failure: BaseException | None = None  # a stage died: the run ends with an error
        self._stage_threads = [
            threading.Thread(
                target=self._guarded, args=(stage,), name=stage.__name__.strip("_"), daemon=True
            )
            for stage in (self._preprocess, self._infer, self._publish)
        ]

    # --- events ------------------------------------------------------------------------
    def event(self, sensor: str | None, kind: str, message: str, **details: Any) -> None:
        """Log, count and spool an event (errors, drops, reconnects, drift)."""
        severity = SEVERITY.get(kind, "info")
        log.log(
            logging.ERROR
            if severity == "error"
            else logging.WARNING
            if severity == "warning"
            else logging.INFO,
            "%s: %s",
            sensor or "station",
            message,
        )
        self.metrics.events.labels(kind).inc()
        doc = event_doc(self.cfg, sensor, kind, message, severity, **details)
        self.spool.put(self.topics.event(sensor), encode(doc))
        self.on_published()

    def _source_state(self, name: str, up: bool) -> None:
        self._set_state(name, "up" if up else "lost")

    def _set_state(self, name: str, state: str) -> None:
        self.metrics.source_up.labels(name).set(1 if state == "up" else 0)
        if self.source_state.get(name) != state:
            self.source_state[name] = state
            self.on_status(f"source {name} {state}")

    def _dropped(self, sample: Sample) -> None:
        """Every drop is counted; events summarise, at most one per source every few seconds
        (a 30 fps camera on a slow model would otherwise flood the spool and the PLC)."""
        self._add("dropped")
        self.metrics.drops.labels(sample.source).inc()
        with self._count_lock:
            self._unreported_drops[sample.source] = self._unreported_drops.get(sample.source, 0) + 1
        if time.monotonic() - self._last_drop_event.get(sample.source, -1e9) >= DROP_EVENT_EVERY_S:
            self._report_drops(sample.source, sample.part_id)

    def _report_drops(self, source: str, last_part: str = "") -> None:
        with self._count_lock:
            count = self._unreported_drops.pop(source, 0)
        if not count:
            return
        self._last_drop_event[source] = time.monotonic()
        self.event(
            source,
            "dropped",
            f"{count} frame(s) dropped (latest {last_part or '?'}): inference is slower "
            "than the source (backpressure drop_oldest); lower rate_hz or use a faster "
            "backend",
            count=count,
            part_id=last_part,
        )

    def _add(self, key: str, n: int = 1) -> None:
        with self._count_lock:
            self.counts[key] += n

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        for thread in self._stage_threads + self._capture_threads:
            thread.start()
        threading.Thread(target=self._close_when_captured, name="capture-join", daemon=True).start()

    def _close_when_captured(self) -> None:
        for thread in self._capture_threads:
            thread.join()
        for source in list(self._unreported_drops):
            self._report_drops(source)
        self.fan_in.close()

    def stop(self) -> None:
        """Stop capturing; queued samples still get their decisions."""
        self.stop_capture.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self.finished.wait(timeout)

    def status_line(self) -> str:
        c = self.counts
        return (
            f"{c['decisions']} decisions, {c['errors']} errors, {c['dropped']} dropped, "
            f"{self.spool.count()} spooled"
        )

    # --- stages ------------------------------------------------------------------------
    def _guarded(self, stage: Callable[[], None]) -> None:
        """A stage that raises is a bug or a broken disk: end the run (exit 1, systemd restarts)
        instead of leaving a half-dead loop."""
        try:
            stage()
        except Exception as exc:
            log.exception("stage %s failed; stopping the station", threading.current_thread().name)
            self.failure = exc
            self.stop_capture.set()
            self.finished.set()

    def _capture(self, source: Source) -> None:
        try:
            for part_id, payload in source.frames(self.stop_capture):
                t0 = time.perf_counter()
                sample = Sample(
                    source=source.name, part_id=part_id, payload=payload, modality=source.modality
                )
                if self.source_state.get(source.name) != "up":
                    self._source_state(source.name, True)
                self.metrics.samples.labels(source.name).inc()
                sample.mark("capture", t0)
                self.metrics.stage_seconds.labels("capture").observe(
                    sample.timings_ms["capture"] / 1e3
                )
                self.fan_in.put(sample)
                with self._count_lock:
                    self.counts["samples"] += 1
                    reached = (
                        self.max_samples is not None and self.counts["samples"] >= self.max_samples
                    )
                if reached:
                    self.stop_capture.set()
                if self.stop_capture.is_set():
                    break
        except Exception as exc:  # a source bug must not take the station down silently
            log.exception("source %s failed", source.name)
            self.event(source.name, "source_lost", f"source {source.name} stopped: {exc}")
            self._source_state(source.name, False)
            return
        self._set_state(source.name, "ended")

    def _preprocess(self) -> None:
        progress = self.progress[0]
        spec = self.card.preprocess
        while True:
            sample = self.fan_in.get(timeout=0.5)
            progress.tick()
            if sample is None:
                continue
            if sample is _END:
                self.to_infer.put(_END)
                return
            t0 = time.perf_counter()
            sample.timings_ms["queue"] = round((t0 - sample.t_captured) * 1000.0, 3)
            try:
                if sample.modality != spec.modality:
                    raise BadInputError(
                        f"{sample.source}: {sample.modality} sample for a "
                        f"{spec.modality} model; check the source configuration"
                    )
                sample.tensor = get_preprocessor(sample.modality)(
                    sample.payload, spec, f"{sample.source}/{sample.part_id}", limits=self.limits
                )
            except BadInputError as exc:
                self._bad_input(sample, str(exc))
            except Exception as exc:  # MemoryError too: one sample's failure is its own ERROR
                log.debug(
                    "preprocessing %s/%s failed", sample.source, sample.part_id, exc_info=True
                )
                self._bad_input(
                    sample,
                    f"{sample.source}/{sample.part_id}: cannot preprocess "
                    f"({type(exc).__name__}: {exc}); drop the file or report a bug with it",
                )
            sample.payload = None
            sample.mark("preprocess", t0)
            self.metrics.stage_seconds.labels("preprocess").observe(
                sample.timings_ms["preprocess"] / 1e3
            )
            self.to_infer.put(sample)

    def _bad_input(self, sample: Sample, message: str) -> None:
        sample.error = message
        self.metrics.bad_inputs.labels(sample.source).inc()
        self.event(sample.source, "bad_input", message, part_id=sample.part_id)

    def _infer(self) -> None:
        progress = self.progress[1]
        while True:
            try:
                first = self.to_infer.get(timeout=0.5)
            except queue.Empty:
                progress.tick()
                continue
            batch = [first]
            while first is not _END and len(batch) < self.max_batch:
                try:
                    batch.append(self.to_infer.get_nowait())
                except queue.Empty:
                    break
                if batch[-1] is _END:
                    break
            ended = batch[-1] is _END
            samples = [s for s in batch if s is not _END]
            self._score(samples)
            progress.tick()
            for sample in samples:
                self.to_publish.put(sample)
            if ended:
                self.to_publish.put(_END)
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
            self.event(
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
                self._bad_input(
                    s,
                    f"{s.source}/{s.part_id}: the model returned a non-finite score; "
                    "check the input and the model export",
                )

    def _publish(self) -> None:
        progress = self.progress[2]
        while True:
            try:
                sample = self.to_publish.get(timeout=0.5)
            except queue.Empty:
                progress.tick()
                continue
            progress.tick()
            if sample is _END:
                self.finished.set()
                return
            self._decide(sample)

    def _decide(self, sample: Sample) -> None:
        t0 = time.perf_counter()
        policy = self.policy  # one consistent policy per decision, even during a reload
        score = sample.score if sample.error is None else None
        heatmap = None
        mode = self.cfg.pipeline.heatmaps
        if score is not None and (
            mode == "all" or (mode == "anomalies" and score >= policy.threshold)
        ):
            try:
                heatmap = write_heatmap(
                    self.cfg.pipeline.heatmap_dir,
                    sample,
                    sample.tensor,
                    sample.amap,
                    self.card.preprocess,
                )
            except Exception as exc:  # the decision stands; the missing heatmap is reported
                log.debug("heatmap for %s/%s failed", sample.source, sample.part_id, exc_info=True)
                self.event(
                    sample.source,
                    "heatmap_failed",
                    f"heatmap for {sample.source}/{sample.part_id} not written "
                    f"({type(exc).__name__}: {exc}); check pipeline.heatmap_dir (space, rights)",
                    part_id=sample.part_id,
                )
        sample.tensor = sample.amap = None
        sample.mark("publish", t0)

        def build(seq: int) -> tuple[str, bytes]:
            sample.seq = seq
            doc = decision_doc(
                self.cfg, self.card, self.backend.name, sample, score, policy, heatmap
            )
            return self.topics.decision(sample.source), encode(doc)

        self.spool.put_numbered(sample.source, build)
        self.on_published()
        if self.spool.overflowed > self._overflow_seen:
            self.metrics.spool_overflow.inc(self.spool.overflowed - self._overflow_seen)
            self._overflow_seen = self.spool.overflowed
        decision = "ERROR" if score is None else ("ANOMALY" if score >= policy.threshold else "OK")
        log.debug(
            "%s #%d %s: %s (score %s)", sample.source, sample.seq, sample.part_id, decision, score
        )
        self._add("decisions")
        if decision == "ERROR":
            self._add("errors")
        self.metrics.decisions.labels(sample.source, decision).inc()
        # the metric includes the spool commit (fsync), which the message cannot carry
        self.metrics.stage_seconds.labels("publish").observe(time.perf_counter() - t0)
        self.metrics.stage_seconds.labels("end_to_end").observe(
            time.perf_counter() - sample.t_captured
        )
        self.metrics.spool_messages.set(self.spool.count())
        self.metrics.queue_depth.labels("preprocess").set(self.fan_in.depth())
        self.metrics.queue_depth.labels("infer").set(self.to_infer.qsize())
        self.metrics.queue_depth.labels("publish").set(self.to_publish.qsize())
        monitor = policy.drift.get(sample.source)
        if monitor is not None and score is not None:
            report = monitor.update(score)
            if report is not None:
                self.event(
                    sample.source,
                    "drift",
                    f"{sample.source}: {report.summary()}; inspect "
                    "the line and the camera, or recalibrate",
                    **report.to_dict(),
                )
