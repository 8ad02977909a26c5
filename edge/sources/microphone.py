"""A microphone (``kind: microphone``): PortAudio capture cut into one sample per motion.

PortAudio calls back on its own real-time thread; anything slow there loses audio, so
the callback only copies the block into a bounded ring buffer and counts what went
wrong (PortAudio's input overflow, a full ring). The capture thread reads the ring,
cuts motions (energy segmenter, or the PLC's trigger) and yields one :class:`Frame` per
motion, whose payload is the motion's :class:`Clip`. While the detector is busy the
ring holds ``ring_s`` seconds; audio beyond that is dropped, counted and reported as an
``audio_overrun`` event (also counted in ``flowedge_events_total{kind="audio_overrun"}``).
A dropped block is replaced by silence so stream times stay right, and a motion that
overlaps lost audio is answered ERROR instead of being judged on a gap.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from flowedge.core.broker import MQTTConfig
from flowedge.core.errors import EXIT_USAGE, ConfigError
from flowedge.core.validation import Strict
from flowedge.edge.checks import CheckResult, failed, passed
from flowedge.edge.sources.base import EventSink, Frame, SourceBaseConfig, SourceKind
from flowedge.edge.sources.trigger import TriggerConfig
from flowedge.modalities.audio_events import LONGEST_S, AudioEvent, EventRules, Segmenter
from flowedge.modalities.audio_trigger import TriggeredSegmenter

log = logging.getLogger(__name__)


class MicrophoneConfig(Strict):
    """A PortAudio input (``kind: microphone``): what to open and how to cut it into motions."""

    device: str | int | None = (
        None  # name (substring, as PortAudio lists it) or index; None: default
    )
    sample_rate: Literal[44100, 48000] = 44100
    channels: int = Field(1, ge=1, le=32)
    block_size: int = Field(1024, ge=64, le=65536, description="samples per callback block")
    ring_s: float = Field(
        10.0,
        gt=0,
        le=LONGEST_S,
        description="audio buffered while the detector is busy; beyond it blocks drop",
    )
    events: EventRules = Field(default_factory=EventRules)
    trigger: TriggerConfig | None = None  # None: energy segmentation with ``events``
    labels: list[str] | None = Field(
        None,
        min_length=1,
        description="score only these motions; another station scores the others with its "
        "own model (docs/audio.md); None: every motion",
    )

    @model_validator(mode="after")
    def _known_labels(self) -> MicrophoneConfig:
        """Energy segmentation only names motions from ``events.labels``: any other never comes."""
        unknown = set(self.labels or ()) - set(self.events.labels)
        if self.trigger is None and unknown:
            raise ValueError(
                f"microphone.labels {sorted(unknown)} are not in events.labels "
                f"{self.events.labels}; no such motion would ever be scored"
            )
        return self


class MicrophoneSourceConfig(SourceBaseConfig):
    kind: Literal["microphone"] = "microphone"
    modality: Literal["audio"] = "audio"  # one sample per motion
    microphone: MicrophoneConfig = Field(default_factory=MicrophoneConfig)


# (settings, callback(indata, frames, time, status)) -> a context manager that runs the stream
StreamOpener = Callable[[MicrophoneConfig, Callable[..., None]], Any]


def require_sounddevice() -> Any:
    """The ``sounddevice`` module, or a ConfigError saying what to install (never a traceback)."""
    try:
        import sounddevice
    except ImportError:
        raise ConfigError(
            "microphone sources need the Python package 'sounddevice': "
            "pip install 'flowedge[audio]' (or pip install sounddevice)"
        ) from None
    except OSError as exc:  # the package is there, the PortAudio library is not
        raise ConfigError(
            f"microphone sources need the PortAudio library ({exc}): install it with "
            "'apt-get install libportaudio2' (Debian/Ubuntu) or your system's portaudio package"
        ) from None
    return sounddevice


def open_sounddevice(settings: MicrophoneConfig, callback: Callable[..., None]) -> Any:
    """A float32 ``sounddevice.InputStream`` on the configured device."""
    return require_sounddevice().InputStream(
        device=settings.device,
        samplerate=settings.sample_rate,
        channels=settings.channels,
        blocksize=settings.block_size,
        dtype="float32",
        callback=callback,
    )


class AudioRing:
    """Bounded blocks between PortAudio's callback and the capture thread, with loss counts."""

    def __init__(self, settings: MicrophoneConfig) -> None:
        blocks = max(1, round(settings.ring_s * settings.sample_rate / settings.block_size))
        self.blocks: queue.Queue[tuple[np.ndarray, int]] = queue.Queue(maxsize=blocks)
        self.captured = 0  # samples delivered by PortAudio (kept or dropped): the stream clock
        self.input_overflows = 0  # PortAudio lost input before we saw it
        self.ring_drops = 0  # blocks dropped because the ring was full
        self.gap = 0  # samples dropped since the last block kept

    def callback(self, indata: np.ndarray, frames: int, _time: Any, status: Any) -> None:
        """PortAudio's thread: copy and count only (no logging, no locks held for long)."""
        if getattr(status, "input_overflow", False):
            self.input_overflows += 1
        self.captured += frames
        try:
            self.blocks.put_nowait((indata.copy(), self.gap))
            self.gap = 0
        except queue.Full:
            self.ring_drops += 1
            self.gap += frames


@dataclass
class OverrunReport:
    """Reports audio loss as events, at most every ``every_s`` (a burst is one event);
    totals run over the source's life, across reconnects (each stream has its own ring)."""

    events: EventSink
    source: str
    every_s: float = 1.0
    ring: AudioRing | None = None
    seen: tuple[int, int] = (0, 0)  # (overflows, drops) of ``ring`` already reported
    totals: tuple[int, int] = (0, 0)
    last_s: float = float("-inf")

    def __call__(self, ring: AudioRing, force: bool = False) -> None:
        if ring is not self.ring:
            self.ring, self.seen = ring, (0, 0)
        now = (ring.input_overflows, ring.ring_drops)
        if now == self.seen or (not force and time.monotonic() - self.last_s < self.every_s):
            return
        overflows, drops = now[0] - self.seen[0], now[1] - self.seen[1]
        self.totals = (self.totals[0] + overflows, self.totals[1] + drops)
        self.events(
            self.source,
            "audio_overrun",
            f"microphone {self.source}: audio lost ({overflows} input overflows from PortAudio, "
            f"{drops} blocks dropped with the ring buffer full); if it repeats, raise "
            "microphone.ring_s or block_size, or lighten the detector",
            input_overflows=overflows,
            ring_drops=drops,
            total_input_overflows=self.totals[0],
            total_ring_drops=self.totals[1],
        )
        self.seen, self.last_s = now, time.monotonic()


class MicrophoneSource:
    """PortAudio input, one Frame per motion; ``open_stream`` is injectable for tests."""

    modality = "audio"
    poll_s = 0.1  # how often the capture thread looks at ``stop`` while no audio comes

    def __init__(
        self,
        cfg: MicrophoneSourceConfig,
        events: EventSink,
        mqtt: MQTTConfig | None = None,
        open_stream: StreamOpener | None = None,
        on_state: Callable[[str, bool], None] | None = None,
    ) -> None:
        self.name, self.cfg, self.settings, self.events = cfg.name, cfg, cfg.microphone, events
        if open_stream is None:
            require_sounddevice()  # at start: a missing PortAudio is a setup error, exit 2
        self.open_stream = open_stream or open_sounddevice
        if self.settings.trigger is not None and mqtt is None:
            raise ConfigError(
                f"source {self.name}: microphone.trigger subscribes to the station's broker; "
                "configure the mqtt section"
            )
        self.mqtt = mqtt
        self.on_state = on_state or (lambda name, ok: None)
        self.report = OverrunReport(events, cfg.name)
        self.motions = 0
        rules = self.settings.events  # how far back a motion's audio reaches, in samples
        self.window = round((rules.max_duration_s + rules.pre_roll_s) * self.settings.sample_rate)

    def _segmenter(self, ring: AudioRing) -> tuple[Segmenter | TriggeredSegmenter, Any]:
        """Energy segmenter, or the trigger's with its MQTT subscription (closed by the caller)."""
        rate = self.settings.sample_rate
        if self.settings.trigger is None:
            return Segmenter(self.settings.events, rate), None
        from flowedge.edge.sources.trigger import MqttTrigger

        assert self.mqtt is not None  # checked at start
        segmenter = TriggeredSegmenter(self.settings.events, rate)
        subscription = MqttTrigger(
            self.mqtt,
            self.settings.trigger,
            lambda state, label: segmenter.mark(ring.captured, state, label),
            on_error=lambda message: log.warning("%s: %s", self.name, message),
        )
        return segmenter, subscription

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        delay = self.cfg.reconnect_min_s
        while not stop.is_set():
            ring = AudioRing(self.settings)
            try:
                stream = self.open_stream(self.settings, ring.callback)
            except Exception as exc:  # PortAudioError, ValueError (no such device): retry
                self._lost(f"cannot be opened ({exc})", delay)
                stop.wait(delay)
                delay = min(delay * 2, self.cfg.reconnect_max_s)
                continue
            delay = self.cfg.reconnect_min_s
            self.on_state(self.name, True)
            yield from self._capture(stream, ring, stop)
            if not stop.is_set():
                self._lost("stopped delivering audio", delay)
                stop.wait(delay)

    def _lost(self, why: str, delay: float) -> None:
        self.on_state(self.name, False)
        device = self.settings.device
        named = "the default input" if device is None else repr(device)
        self.events(
            self.name,
            "source_lost",
            f"microphone {named} {why}; retrying in {delay:.1f} s "
            "(check the cable and the device: 'python -m sounddevice' lists them)",
            retry_in_s=delay,
        )

    def _capture(self, stream: Any, ring: AudioRing, stop: threading.Event) -> Iterator[Frame]:
        segmenter, subscription = self._segmenter(ring)
        started = time.time()
        gaps: list[tuple[int, int]] = []  # stream sample ranges replaced by silence
        fed = 0
        try:
            with stream:
                ended = False
                while not stop.is_set() and not ended:
                    try:
                        block, gap = ring.blocks.get(timeout=self.poll_s)
                    except queue.Empty:
                        self.report(ring)
                        ended = not getattr(stream, "active", True)  # device gone, or end
                        if not ended:
                            continue
                        silent = np.zeros((0, self.settings.channels), np.float32)
                        block, gap, ring.gap = silent, ring.gap, 0  # the stream's lost tail
                    if gap:
                        gaps = [g for g in gaps if g[1] > fed - self.window] + [(fed, fed + gap)]
                        block = np.concatenate(
                            [np.zeros((gap, block.shape[1]), block.dtype), block]
                        )
                    fed += len(block)
                    self.report(ring)
                    yield from self._frames(segmenter.feed(block), started, gaps)
                yield from self._frames(segmenter.flush(), started, gaps)
        finally:
            self.report(ring, force=True)
            if subscription is not None:
                subscription.close()

    def _frames(
        self, events: list[AudioEvent], started: float, gaps: list[tuple[int, int]]
    ) -> Iterator[Frame]:
        """The wanted motions; every motion counts, so a station that scores the other
        labels numbers the same motions the same way."""
        for event in events:
            self.motions += 1
            if self.settings.labels is None or event.label in self.settings.labels:
                yield self._frame(event, started, gaps)

    def _frame(self, event: AudioEvent, started: float, gaps: list[tuple[int, int]]) -> Frame:
        rules = self.settings.events
        first = round((event.start_s - rules.pre_roll_s) * event.rate)
        last = round((event.end_s + rules.hang_s) * event.rate)
        lost = any(a < last and b > first for a, b in gaps)
        start_utc = datetime.fromtimestamp(started + event.start_s, UTC)
        context = {
            "label": event.label,
            "start_utc": start_utc.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "start_s": round(event.start_s, 4),
            "end_s": round(event.end_s, 4),
            "cut": event.cut,
        }
        return Frame(
            f"{self.motions:06d}-{event.label}",
            event.clip,  # in memory only: answered ERROR if the station stops before scoring it
            error=(
                f"microphone {self.name}: audio was lost during this {event.label} motion "
                "(ring buffer full); see the audio_overrun event"
            )
            if lost
            else None,
            context={"event": context},
        )


def check(cfg: MicrophoneSourceConfig, timeout_s: float) -> CheckResult:
    """PortAudio is there and the configured device opens at the configured rate
    (a motion only comes when the part moves)."""
    name = f"source {cfg.name}"
    try:
        stream = open_sounddevice(cfg.microphone, lambda *_: None)
        stream.close()
    except ConfigError as exc:
        return failed(name, str(exc), EXIT_USAGE)
    except Exception as exc:  # PortAudio's own error: no such device, rate not supported
        return failed(name, f"microphone {cfg.microphone.device!r} does not open ({exc})")
    return passed(name, f"microphone {cfg.microphone.device!r} opens")


KIND = SourceKind(
    MicrophoneSourceConfig,
    lambda cfg, ctx: MicrophoneSource(cfg, ctx.events, ctx.broker, on_state=ctx.on_state),
    check,
)
