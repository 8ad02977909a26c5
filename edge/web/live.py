"""What the page shows live: each source's latest decision, its recent scores, the shift's
counters and recent events; pushed to every open page as server-sent events.

Fed by the web sink from its cursor in the spool. A record delivered again after a crash
(same sensor, seq not newer) changes nothing. Decisions go out in batches, at most
``PUSH_EVERY_S`` apart (the sink's feed): however fast the station decides, a page draws
a few times a second. A browser that cannot keep up loses its
stream (it reconnects and starts from a fresh snapshot), never slows the station.
"""

from __future__ import annotations

import json
import queue
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

COUNTED = ("OK", "ANOMALY", "ERROR")
EVENTS_KEPT = 50
SUBSCRIBER_QUEUE = 256


def shift_start(now: datetime, starts: list[str]) -> datetime:
    """The start of the shift ``now`` (local time) lies in; ``starts``: ``HH:MM`` each day."""
    times = sorted(datetime.strptime(s, "%H:%M").time() for s in starts)
    candidates = [
        datetime.combine(now.date() - timedelta(days=back), t, now.tzinfo)
        for back in (0, 1)
        for t in times
    ]
    return max(c for c in candidates if c <= now)


class Live:
    """The live view's state and its subscribers (each an SSE stream's queue)."""

    def __init__(
        self,
        trend_points: int,
        shifts: list[str],
        evidence_url: Callable[[str | None], str | None],
        now: Callable[[], datetime] = lambda: datetime.now().astimezone(),
    ) -> None:
        self.trend_points, self.shifts = trend_points, shifts
        self.evidence_url, self.now = evidence_url, now
        self.latest: dict[str, dict[str, Any]] = {}
        self.trend: dict[str, deque[list[Any]]] = {}
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENTS_KEPT)
        self.shift = shift_start(self.now(), shifts)
        self.counts = dict.fromkeys(COUNTED, 0)
        self._lock = threading.Lock()
        self._subscribers: list[queue.Queue[bytes | None]] = []

    # --- fed by the sink ---------------------------------------------------------------
    def decision(self, doc: dict[str, Any]) -> dict[str, Any] | None:
        """Take a decision; what the pages are to get (None: delivered again, after a
        restart). The caller publishes a batch of them at once (:meth:`publish`)."""
        source, seq = str(doc["sensor"]), int(doc["seq"])
        with self._lock:
            known = self.latest.get(source)
            if known is not None and known["seq"] >= seq:
                return None
            item = self._summary(doc)
            self.latest[source] = item
            points = self.trend.setdefault(source, deque(maxlen=self.trend_points))
            points.append([item["decided_utc"], item["score"], item["threshold"], item["decision"]])
            self._roll_shift()
            if item["decision"] in self.counts and self._this_shift(item["decided_utc"]):
                self.counts[item["decision"]] += 1
        return item

    def _this_shift(self, utc: str | None) -> bool:
        try:
            return utc is not None and datetime.fromisoformat(utc) >= self.shift
        except ValueError:  # not a time: count it (it has just arrived)
            return True

    def event(self, doc: dict[str, Any]) -> None:
        item = {k: doc.get(k) for k in ("utc", "sensor", "kind", "severity", "message")}
        with self._lock:
            self.events.append(item)
        self.publish("event", item)

    def _summary(self, doc: dict[str, Any]) -> dict[str, Any]:
        return {
            "source": doc["sensor"],
            "seq": doc["seq"],
            "part_id": doc.get("part_id"),
            "captured_utc": doc.get("captured_utc"),
            "decided_utc": doc.get("decided_utc"),
            "decision": doc.get("decision"),
            "score": doc.get("score"),
            "threshold": doc.get("threshold"),
            "drift": doc.get("drift"),
            "error": doc.get("error"),
            "modality": doc.get("modality"),
            "recipe": doc.get("recipe"),
            "detail": detail(doc),
            "overlay": self.evidence_url(doc.get("heatmap")),
            "input": self.evidence_url((doc.get("evidence") or {}).get("input")),
        }

    def _roll_shift(self) -> None:
        start = shift_start(self.now(), self.shifts)
        if start != self.shift:
            self.shift, self.counts = start, dict.fromkeys(COUNTED, 0)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            self._roll_shift()
            return {
                "latest": dict(self.latest),
                "trend": {source: list(points) for source, points in self.trend.items()},
                "events": list(self.events),
                "shift": {"start": self.shift.isoformat(timespec="minutes"), **self.counts},
            }

    # --- the streams -------------------------------------------------------------------
    def subscribe(self) -> queue.Queue[bytes | None]:
        stream: queue.Queue[bytes | None] = queue.Queue(SUBSCRIBER_QUEUE)
        with self._lock:
            self._subscribers.append(stream)
        return stream

    def unsubscribe(self, stream: queue.Queue[bytes | None]) -> None:
        with self._lock:
            if stream in self._subscribers:
                self._subscribers.remove(stream)

    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, name: str, data: dict[str, Any] | list[dict[str, Any]]) -> None:
        """One SSE message to every stream; a full stream is closed (its page reconnects)."""
        message = f"event: {name}\ndata: {json.dumps(data, allow_nan=False)}\n\n".encode()
        with self._lock:
            streams = list(self._subscribers)
        for stream in streams:
            try:
                stream.put_nowait(message)
            except queue.Full:
                self.unsubscribe(stream)
                stream.queue.clear()
                stream.put_nowait(None)

    def close(self) -> None:
        """End every stream (the station stops)."""
        with self._lock:
            streams, self._subscribers = self._subscribers, []
        for stream in streams:
            stream.put(None)


def detail(doc: dict[str, Any]) -> str:
    """What the decision was about beyond its part id, in a few words: the recipe, a sound's
    motion label, a robot cycle and the signals that drove its score (the "why")."""
    words = [f"recipe {doc['recipe']}"] if doc.get("recipe") else []
    event = doc.get("event") or {}
    if event.get("label"):
        words.append(f"motion {event['label']}")
    cycle = doc.get("cycle") or {}
    if cycle.get("id"):
        words.append(f"cycle {cycle['id']}")
    signals = [s["signal"] for s in cycle.get("top_signals", [])[:3] if "signal" in s]
    if signals:
        words.append(f"driven by {', '.join(signals)}")
    return " · ".join(words)
