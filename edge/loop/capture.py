"""Capture: one thread per source, each frame journaled before it is queued.

The journal row is closed in the transaction that stores the sample's decision
(``Spool.put_numbered``), so after SIGKILL or power loss the rows still open are
exactly the samples that were captured and never answered. A source's capture
thread answers those first: re-read from their locator when the file is still
there unchanged, otherwise answered ERROR (an in-memory camera frame is gone).
A source with its own kind of locator (a byte range of a growing log) replays
its rows itself (``source.replay``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from flowedge.core.errors import FlowedgeError
from flowedge.edge.loop.counts import Counts
from flowedge.edge.loop.events import EventBus
from flowedge.edge.loop.fanin import FanIn
from flowedge.edge.loop.sample import Sample
from flowedge.edge.loop.source_states import SourceStates
from flowedge.edge.metrics import Metrics
from flowedge.edge.sources import Frame, Source
from flowedge.edge.sources.base import current_version, replayed
from flowedge.edge.spool import Spool

log = logging.getLogger(__name__)


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
        stamp: Callable[[Sample], None] = lambda sample: None,
    ) -> None:
        """``stamp``: what is read the moment a sample is taken (the recipe in force)."""
        self.source, self.spool, self.fan_in = source, spool, fan_in
        self.states, self.counts = states, counts
        self.metrics, self.events, self.stop, self.max_samples = metrics, events, stop, max_samples
        self.stamp = stamp

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
                input_file=str(frame.payload) if isinstance(frame.payload, Path) else None,
                captured_utc=frame.captured_utc,
                intake_id=intake_id,
                context=frame.context,
            )
            self.stamp(sample)
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


def journaled(spool: Spool, source: Source, stop: threading.Event) -> Iterator[tuple[Frame, int]]:
    """(frame, journal id): first what an earlier run left unanswered, then new captures."""
    replay = getattr(source, "replay", replayed)
    for row in spool.pending_intake(source.name):
        yield replay(row), row.id
    for frame in source.frames(stop):
        intake_id = spool.record_intake(
            source.name,
            frame.part_id,
            frame.captured_utc,
            locator=frame.locator,
            version=frame.version or current_version(frame.locator),
            error=frame.error,
            remember=frame.remember,
        )
        yield frame, intake_id
