"""Event segmentation by an external trigger: the PLC says when a motion starts and stops.

Energy segmentation guesses the motion from the sound; a PLC knows it. Trigger marks
arrive on another thread (an MQTT message) and carry a stream position: the number of
samples captured when the mark came, so a mark is placed where the microphone was at
that moment even while the detector lags behind the capture. The same
:class:`AudioEvent` as the energy segmenter's comes out (pre-roll, ``max_duration_s``
cut, ``min_duration_s`` drop, labels from the mark or cycled from ``rules.labels``),
so the station treats both alike.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from flowedge.core.jsonfile import parse_json
from flowedge.modalities.audio_events import AudioEvent, EventRules

STATES = {"start": "start", "on": "start", "1": "start", "true": "start"}
STATES |= {"stop": "stop", "off": "stop", "0": "stop", "false": "stop"}


@dataclass(frozen=True)
class Mark:
    position: int  # samples captured when the trigger came
    state: str  # "start" or "stop"
    label: str | None = None  # the PLC's motion name; None: cycle the rules' labels


class TriggeredSegmenter:
    """Same interface as :class:`~flowedge.modalities.audio_events.Segmenter`, cut by marks."""

    def __init__(self, rules: EventRules, rate: int) -> None:
        self.rules, self.rate = rules, rate
        self.pre_roll = round(rules.pre_roll_s * rate)
        self.max_samples = round(rules.max_duration_s * rate)
        self.lock = threading.Lock()
        self.marks: list[Mark] = []
        self.buffer = np.zeros((0, 0), np.float32)  # audio from stream position ``buffer_at``
        self.buffer_at = 0
        self.fed = 0  # stream position after the last block fed
        self.start: Mark | None = None  # the running motion
        self.events_out = 0
        self.dropped_short = 0
        self.label_index = 0

    def mark(self, position: int, state: str, label: str | None = None) -> None:
        """Thread-safe: a start or stop at ``position`` (samples since the stream began)."""
        if state not in ("start", "stop"):
            raise ValueError(f"trigger state must be 'start' or 'stop', got {state!r}")
        with self.lock:
            self.marks.append(Mark(position, state, label))

    def feed(self, block: np.ndarray) -> list[AudioEvent]:
        """Add samples; returns the motions whose stop (or max duration) lies in them."""
        block = np.asarray(block, dtype=np.float32)
        block = block[:, None] if block.ndim == 1 else block
        self.buffer = block if self.buffer.size == 0 else np.concatenate([self.buffer, block])
        self.fed += len(block)
        events = []
        while (mark := self._next_mark()) is not None:
            events += self._apply(mark)
        if self.start is not None and self.fed - self.start.position >= self.max_samples:
            events += self._finish(self.start.position + self.max_samples, cut=True)
        self._trim()
        return events

    def flush(self) -> list[AudioEvent]:
        """End of stream: a running motion ends here."""
        return self._finish(self.fed, cut=False) if self.start is not None else []

    def _next_mark(self) -> Mark | None:
        """The earliest mark whose audio has arrived."""
        with self.lock:
            ready = [m for m in self.marks if m.position <= self.fed]
            if not ready:
                return None
            first = min(ready, key=lambda m: m.position)
            self.marks.remove(first)
            return first

    def _apply(self, mark: Mark) -> list[AudioEvent]:
        if mark.state == "start":
            # a start while running: the PLC missed its stop, the earlier motion ends here
            ended = self._finish(mark.position, cut=True) if self.start is not None else []
            self.start = mark
            return ended
        return self._finish(mark.position, cut=False) if self.start is not None else []

    def _finish(self, end: int, cut: bool) -> list[AudioEvent]:
        start, self.start = self.start, None
        assert start is not None
        end = min(end, start.position + self.max_samples)
        cut = cut or end - start.position >= self.max_samples
        if (end - start.position) / self.rate < self.rules.min_duration_s:
            self.dropped_short += 1
            return []
        first = max(self.buffer_at, start.position - self.pre_roll)
        samples = self.buffer[first - self.buffer_at : end - self.buffer_at]
        label = start.label or self.rules.labels[self.label_index % len(self.rules.labels)]
        event = AudioEvent(
            self.events_out,
            label,
            start.position / self.rate,
            end / self.rate,
            samples.copy(),
            self.rate,
            cut,
        )
        self.events_out += 1
        self.label_index += 1
        return [event]

    def _trim(self) -> None:
        """Keep the pre-roll (and the running motion): memory stays bounded by max duration."""
        keep_from = self.fed - self.pre_roll
        if self.start is not None:
            keep_from = min(keep_from, self.start.position - self.pre_roll)
        with self.lock:  # marks not yet reached (or just behind) need their audio too
            for mark in self.marks:
                keep_from = min(keep_from, mark.position - self.pre_roll)
        drop = max(0, keep_from - self.buffer_at)
        if drop:
            self.buffer = self.buffer[drop:]
            self.buffer_at += drop


def parse_trigger(payload: bytes) -> tuple[str, str | None]:
    """``start``/``stop`` (or a digital input's 1/0, on/off, true/false), or JSON
    ``{"state": "start", "motion": "fold"}``: (state, label or None); ValueError names the payload."""
    text = payload.decode("utf-8", errors="replace").strip()
    state, label = text, None
    if text.startswith("{"):
        try:
            doc = parse_json(text)
        except ValueError as exc:
            raise ValueError(f"trigger payload {text[:80]!r} is not valid JSON ({exc})") from None
        state, label = str(doc.get("state", "")), doc.get("motion")
        if label is not None and not isinstance(label, str):
            raise ValueError(f"trigger payload {text[:80]!r}: 'motion' must be a string")
    normal = STATES.get(state.strip().lower())
    if normal is None:
        raise ValueError(
            f"trigger payload {text[:80]!r}: expected start/stop, 1/0, on/off, true/false "
            'or JSON {"state": "start"|"stop", "motion": "<label>"}'
        )
    return normal, label
