"""Events: what an operator should know (bad input, drops, sources, drift, failures).

Each event is logged at its severity, counted in the metrics and stored in the spool
as a record, like a decision, for every sink. ``EventBus.emit`` is where every part of
the station reports to.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from flowedge.edge.config import FlowedgeConfig
from flowedge.edge.loop.counts import Counts
from flowedge.edge.loop.messages import encode, event_doc
from flowedge.edge.loop.sample import Sample
from flowedge.edge.metrics import Metrics
from flowedge.edge.spool import Spool

log = logging.getLogger(__name__)

SEVERITY = {
    "bad_input": "error",
    "source_lost": "error",
    "broker_refused": "error",
    "inference_failed": "error",
    "spool_overflow": "error",
    "drift": "warning",
    "dropped": "warning",
    "audio_overrun": "warning",
    "source_empty": "warning",
    "file_unmatched": "warning",
    "heatmap_failed": "warning",
    "evidence_failed": "warning",
    "history_failed": "error",
    "history_conflict": "warning",
    "command": "warning",
    "command_refused": "error",
    "baseline_refused": "error",
    "handshake_refused": "warning",
    "handshake_timeout": "error",
    "sample_discarded": "warning",
    "login_locked": "error",
    "sink_failed": "error",
}
LOG_LEVEL = {"error": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO}
DROP_EVENT_EVERY_S = 5.0


class EventBus:
    def __init__(self, cfg: FlowedgeConfig, spool: Spool, metrics: Metrics) -> None:
        self.cfg, self.spool, self.metrics = cfg, spool, metrics

    def emit(self, sensor: str | None, kind: str, message: str, **details: Any) -> None:
        """Log, count and spool one event (``sensor`` None: a station-wide event)."""
        severity = SEVERITY.get(kind, "info")
        log.log(LOG_LEVEL[severity], "%s: %s", sensor or "station", message)
        self.metrics.events.labels(kind).inc()
        doc = event_doc(self.cfg, sensor, kind, message, severity, **details)
        self.spool.put("event", sensor, encode(doc))


class DropReporter:
    """Every drop is counted; events summarise, at most one per source every few seconds
    (a 30 fps camera on a slow model would otherwise flood the spool and the PLC)."""

    def __init__(self, events: EventBus, counts: Counts, metrics: Metrics) -> None:
        self.events, self.counts, self.metrics = events, counts, metrics
        self._lock = threading.Lock()
        self._unreported: dict[str, int] = {}
        self._last_event: dict[str, float] = {}

    def dropped(self, sample: Sample) -> None:
        self.counts.add("dropped")
        self.metrics.drops.labels(sample.source).inc()
        with self._lock:
            self._unreported[sample.source] = self._unreported.get(sample.source, 0) + 1
        if time.monotonic() - self._last_event.get(sample.source, -1e9) >= DROP_EVENT_EVERY_S:
            self.report(sample.source, sample.part_id)

    def report_all(self) -> None:
        """Capture ended: report what the rate limit held back."""
        for source in list(self._unreported):
            self.report(source)

    def report(self, source: str, last_part: str = "") -> None:
        with self._lock:
            count = self._unreported.pop(source, 0)
        if not count:
            return
        self._last_event[source] = time.monotonic()
        self.events.emit(
            source,
            "dropped",
            f"{count} frame(s) dropped (latest {last_part or '?'}): inference is slower "
            "than the source (backpressure drop_oldest); lower rate_hz or use a faster "
            "backend",
            count=count,
            part_id=last_part,
        )
