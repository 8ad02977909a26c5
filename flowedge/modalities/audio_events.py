"""Event segmentation: a continuous sound stream becomes one sample per motion.

An actuator inspection judges one motion (fold or unfold) at a time, so the station
cuts the microphone stream (or a long recording) where the machine runs. The level
of each short frame is compared with the background floor (a low percentile of
the recent quiet frames, so it follows a changing room): an event starts when the
level stays ``start_db`` above the floor for ``min_on_s`` and ends when it has
stayed below ``stop_db`` for ``hang_s`` (hysteresis: a dip in the middle of a motion
does not split it). Events shorter than ``min_duration_s`` are dropped (a knock on
the bench); one running longer than ``max_duration_s`` is cut there and marked
(a stalled motor is itself worth a decision). Motions alternate, so events are
labelled by cycling ``labels``; a pause longer than ``cycle_gap_s`` starts the cycle
again.

Where the PLC knows when a motion starts and which it is, an external trigger is
more reliable than energy: see docs/audio.md (a trigger topic carries start/stop and
the label; the same :class:`AudioEvent` is cut from the ring buffer).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
from pydantic import Field, model_validator
from scipy.signal import butter, sosfilt, sosfilt_zi

from flowedge.core.validation import DAY_S, Strict
from flowedge.modalities.audio import DEFAULT_LIMITS, Clip

FLOOR_PERCENTILE = 10.0
WARMUP_FRAMES = 10  # frames of background heard before the first event can start
LONGEST_S = DEFAULT_LIMITS.max_seconds  # the longest clip the audio modality scores
MAX_HOLD_S = 60.0  # the longest a level must hold before an event starts or ends


class EventRules(Strict):
    """How a stream is cut into motions (the ``events`` section of an audio source)."""

    frame_s: float = Field(0.01, gt=0, le=0.1, description="level measured per frame")
    # measure the level in this band only [low, high] Hz: a valve's click or a gear's whine
    # stands out of broadband factory noise there (MIMII valves: 3000-7900)
    band_hz: tuple[float, float] | None = None
    start_db: float = Field(10.0, gt=0, description="start: this far above the floor")
    stop_db: float = Field(6.0, gt=0, description="end: back below this (hysteresis)")
    min_on_s: float = Field(
        0.03, ge=0, le=MAX_HOLD_S, description="start only after this long above start_db"
    )
    hang_s: float = Field(
        0.15, ge=0, le=MAX_HOLD_S, description="end only after this long below stop_db"
    )
    min_duration_s: float = Field(0.3, ge=0)
    max_duration_s: float = Field(6.0, gt=0, le=LONGEST_S)
    pre_roll_s: float = Field(
        0.1, ge=0, le=MAX_HOLD_S, description="sound kept from before the start"
    )
    floor_window_s: float = Field(
        5.0, gt=0, le=3600, description="background floor over this much quiet"
    )
    labels: list[str] = Field(default_factory=lambda: ["fold", "unfold"], min_length=1)
    cycle_gap_s: float | None = Field(
        None, gt=0, le=DAY_S, description="a longer pause restarts labels"
    )

    @model_validator(mode="after")
    def _consistent(self) -> EventRules:
        if self.stop_db > self.start_db:
            raise ValueError(f"stop_db ({self.stop_db}) must not exceed start_db ({self.start_db})")
        if self.band_hz is not None and not 0 < self.band_hz[0] < self.band_hz[1]:
            raise ValueError(
                f"band_hz {list(self.band_hz)} must be [low, high] with 0 < low < high"
            )
        if self.min_duration_s >= self.max_duration_s:
            raise ValueError("min_duration_s must be below max_duration_s")
        return self


@dataclass(frozen=True)
class AudioEvent:
    """One motion: its sound (with pre-roll) and where it lies in the stream."""

    index: int  # events so far in this stream, from 0
    label: str
    start_s: float  # stream time of the first loud frame
    end_s: float  # stream time of the last loud frame
    samples: np.ndarray  # [frames, channels] float32, pre-roll to end of the hang
    rate: int
    cut: bool = False  # ran into max_duration_s

    @property
    def clip(self) -> Clip:
        return Clip(self.samples, self.rate)


def level_db(mono: np.ndarray) -> float:
    """RMS level in dBFS."""
    return 10.0 * math.log10(max(float(np.mean(np.square(mono, dtype=np.float64))), 1e-14))


class BandLevel:
    """Frame levels of the channel mix, optionally band-passed (filter state kept across frames)."""

    def __init__(self, band_hz: tuple[float, float] | None, rate: int) -> None:
        self.sos = None
        if band_hz is not None:
            high = min(band_hz[1], 0.49 * rate)
            self.sos = butter(4, [band_hz[0], high], btype="bandpass", fs=rate, output="sos")
            self.state = sosfilt_zi(self.sos) * 0.0

    def __call__(self, frame: np.ndarray) -> float:
        mono = frame.mean(axis=1)
        if self.sos is not None:
            mono, self.state = sosfilt(self.sos, mono, zi=self.state)
        return level_db(mono)


class Segmenter:
    """Feed blocks of any size; complete events come out as soon as they end."""

    def __init__(self, rules: EventRules, rate: int) -> None:
        self.rules, self.rate = rules, rate
        self.level = BandLevel(rules.band_hz, rate)
        self.frame = max(1, round(rules.frame_s * rate))
        seconds = self.frame / rate
        self.min_on = max(1, math.ceil(rules.min_on_s / seconds))
        self.hang = max(1, math.ceil(rules.hang_s / seconds))
        self.max_frames = math.ceil(rules.max_duration_s / seconds)
        self.quiet_levels: deque[float] = deque(
            maxlen=max(WARMUP_FRAMES, round(rules.floor_window_s / seconds))
        )
        self.pre_roll: deque[np.ndarray] = deque(maxlen=round(rules.pre_roll_s / seconds))
        self.pending = np.zeros((0, 0), np.float32)
        self.frames_seen = 0
        self.events_out = 0
        self.dropped_short = 0
        self.label_index = 0
        self.last_end_s: float | None = None
        self._reset()

    def _reset(self) -> None:
        self.active: list[np.ndarray] = []  # frames of the running event (or candidate)
        self.loud_run = 0  # consecutive frames above start (while idle)
        self.quiet_run = 0  # consecutive frames below stop (while active)
        self.start_frame = -1
        self.wait_for_quiet = False  # after a cut: no new start until the level drops

    def feed(self, block: np.ndarray) -> list[AudioEvent]:
        """Add samples ([n] or [n, channels]); returns the events that ended in them."""
        block = np.asarray(block, dtype=np.float32)
        block = block[:, None] if block.ndim == 1 else block
        data = block if self.pending.size == 0 else np.concatenate([self.pending, block])
        usable = len(data) - len(data) % self.frame
        self.pending = data[usable:]
        events = []
        for start in range(0, usable, self.frame):
            event = self._step(data[start : start + self.frame])
            if event is not None:
                events.append(event)
        return events

    def flush(self) -> list[AudioEvent]:
        """End of stream: a running event ends here (if long enough)."""
        event = self._finish(cut=False) if self.start_frame >= 0 else None
        self._reset()
        return [event] if event is not None else []

    @property
    def floor_db(self) -> float | None:
        if len(self.quiet_levels) < WARMUP_FRAMES:
            return None
        return float(np.percentile(self.quiet_levels, FLOOR_PERCENTILE))

    def _step(self, frame: np.ndarray) -> AudioEvent | None:
        level, floor = self.level(frame), self.floor_db
        self.frames_seen += 1
        if self.start_frame < 0:
            return self._idle(frame, level, floor)
        self.active.append(frame)
        self.quiet_run = self.quiet_run + 1 if level < floor + self.rules.stop_db else 0
        if self.quiet_run >= self.hang:
            return self._finish(cut=False)
        if len(self.active) >= self.max_frames:
            return self._finish(cut=True)
        return None

    def _idle(self, frame: np.ndarray, level: float, floor: float | None) -> None:
        loud = floor is not None and level >= floor + self.rules.start_db
        if self.wait_for_quiet:
            self.wait_for_quiet = floor is None or level >= floor + self.rules.stop_db
        if not loud or self.wait_for_quiet:
            self.quiet_levels.append(level)
            self.pre_roll.extend(self.active)
            self.pre_roll.append(frame)
            self.active, self.loud_run = [], 0
            return None
        self.active.append(frame)
        self.loud_run += 1
        if self.loud_run >= self.min_on:
            self.start_frame = self.frames_seen - self.loud_run
        return None

    def _finish(self, cut: bool) -> AudioEvent | None:
        seconds = self.frame / self.rate
        loud_frames = len(self.active) - (0 if cut else self.quiet_run)
        start_s = self.start_frame * seconds
        end_s = (self.start_frame + loud_frames) * seconds
        samples = np.concatenate([*self.pre_roll, *self.active])
        self.pre_roll.clear()
        self._reset()
        self.wait_for_quiet = cut
        if end_s - start_s < self.rules.min_duration_s:
            self.dropped_short += 1
            return None
        if (
            self.rules.cycle_gap_s is not None
            and self.last_end_s is not None
            and start_s - self.last_end_s > self.rules.cycle_gap_s
        ):
            self.label_index = 0
        labels = self.rules.labels
        event = AudioEvent(
            self.events_out,
            labels[self.label_index % len(labels)],
            start_s,
            end_s,
            samples,
            self.rate,
            cut,
        )
        self.events_out += 1
        self.label_index += 1
        self.last_end_s = end_s
        return event


def segment_clip(clip: Clip, rules: EventRules, block_s: float = 0.1) -> list[AudioEvent]:
    """Every event of a recording (a continuous recording cut into motions)."""
    segmenter = Segmenter(rules, clip.rate)
    step = max(1, round(block_s * clip.rate))
    events = []
    for start in range(0, len(clip.samples), step):
        events += segmenter.feed(clip.samples[start : start + step])
    return events + segmenter.flush()
