"""Microphone source: PortAudio replaced by a fake stream that plays generated gear-motor motions
from its own thread, block by block, the way PortAudio's callback does."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from flowedge.core.card import AudioInput
from flowedge.core.errors import ConfigError
from flowedge.edge.sources import Frame, parse_source
from flowedge.edge.sources.microphone import (
    MicrophoneSource,
    MicrophoneSourceConfig,
    require_sounddevice,
)
from flowedge.modalities.audio import AudioModality, Clip
from flowedge.modalities.audio_synthetic import gear_motor_clip

RATE = 44100
BLOCK = 1024
SEQUENCE = ["fold", "unfold", "fold", "unfold"]


@pytest.fixture(scope="module")
def recording() -> np.ndarray:
    """Four motions, 1.5 s each (motor on from 15 % to 90 % of each), mono."""
    rng = np.random.default_rng(0)
    return np.concatenate([gear_motor_clip(RATE, 1.5, rng, motion=m) for m in SEQUENCE])


@dataclass
class Status:
    input_overflow: bool = False


class FakeStream:
    """Plays ``audio`` into the callback from its own thread once entered; ``done`` when through.

    ``overflow_at``: block numbers flagged with PortAudio's input overflow. ``at_once``: the
    whole recording is captured on entering, before the consumer has taken a single block.
    """

    def __init__(
        self,
        audio: np.ndarray,
        callback: Callable[..., None],
        overflow_at: set[int] = frozenset(),
        at_once: bool = False,
    ) -> None:
        self.audio, self.callback, self.overflow_at = audio, callback, overflow_at
        self.at_once = at_once
        self.active = True
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._play, daemon=True)

    def _play(self) -> None:
        for n, start in enumerate(range(0, len(self.audio), BLOCK)):
            block = self.audio[start : start + BLOCK, None]
            self.callback(block, len(block), None, Status(n in self.overflow_at))
        self.active = False
        self.done.set()

    def __enter__(self) -> FakeStream:
        if self.at_once:
            self._play()
        else:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.thread.is_alive():
            self.thread.join()


class Player:
    """Stream opener: the first open plays the recording, the next (the source reconnecting
    after the recording ended) stops the source."""

    def __init__(self, audio: np.ndarray, stop: threading.Event, **stream: Any) -> None:
        self.audio, self.stop, self.stream_args = audio, stop, stream
        self.streams: list[FakeStream] = []

    def __call__(self, settings: Any, callback: Callable[..., None]) -> FakeStream:
        assert settings.sample_rate == RATE and settings.block_size == BLOCK
        if self.streams:
            self.stop.set()
            return FakeStream(self.audio[:0], callback)
        self.streams.append(FakeStream(self.audio, callback, **self.stream_args))
        return self.streams[0]


def microphone(ring_s: float = 10.0, **more: Any) -> MicrophoneSourceConfig:
    settings = {"sample_rate": RATE, "block_size": BLOCK, "ring_s": ring_s, **more}
    return parse_source(
        {
            "name": "mic1",
            "kind": "microphone",
            "modality": "audio",
            "microphone": settings,
            "reconnect_min_s": 0.01,
        }
    )


def source(
    recording: np.ndarray, ring_s: float = 10.0, labels: list[str] | None = None, **stream: Any
) -> tuple[MicrophoneSource, Player, threading.Event, list[tuple[str, dict]]]:
    events: list[tuple[str, dict]] = []
    stop = threading.Event()
    player = Player(recording, stop, **stream)
    mic = MicrophoneSource(
        microphone(ring_s, labels=labels),
        lambda name, kind, message, **details: events.append((kind, details)),
        open_stream=player,
    )
    mic.report.every_s = 0.0  # every loss reported at once: the test counts them
    return mic, player, stop, events


def slowly(frames: Iterator[Frame], player: Player) -> list[Frame]:
    """The detector is busy: nothing is taken until the whole recording has been captured."""
    first = next(frames)
    assert player.streams[0].done.wait(30)
    return [first, *frames]


def test_one_frame_per_motion_labelled_in_turn_and_nothing_lost_while_the_consumer_is_slow(
    recording: np.ndarray,
) -> None:
    mic, player, stop, events = source(recording, overflow_at={3})
    frames = slowly(mic.frames(stop), player)

    assert [f.context["event"]["label"] for f in frames] == SEQUENCE
    for k, frame in enumerate(frames):
        event = frame.context["event"]
        assert abs(event["start_s"] - (k * 1.5 + 0.15 * 1.5)) < 0.05 and not event["cut"]
        assert event["start_utc"].endswith("Z") and frame.error is None
        assert isinstance(frame.payload, Clip) and frame.payload.rate == RATE
        assert frame.payload.samples.dtype == np.float32
    spec = AudioInput(sample_rate=16000, n_mels=64, duration_s=1.5)
    tensor = AudioModality().preprocess(frames[0].payload, spec, frames[0].part_id)
    assert tensor.shape[:2] == (1, 64) and np.isfinite(tensor).all()
    # PortAudio's overflow flag is reported; the ring held everything: no block dropped
    overruns = [details for kind, details in events if kind == "audio_overrun"]
    assert sum(d["input_overflows"] for d in overruns) == 1
    assert sum(d["ring_drops"] for d in overruns) == 0


def test_a_full_ring_drops_blocks_counts_them_and_answers_the_damaged_motions_error(
    recording: np.ndarray,
) -> None:
    ring_s = 2.5  # the first motion and half of the second; the rest arrives with the ring full
    mic, _, stop, events = source(recording, ring_s=ring_s, at_once=True)
    frames = list(mic.frames(stop))

    dropped = -(-len(recording) // BLOCK) - round(ring_s * RATE / BLOCK)
    overruns = [details for kind, details in events if kind == "audio_overrun"]
    assert sum(d["ring_drops"] for d in overruns) == dropped > 0
    assert overruns[-1]["total_ring_drops"] == dropped
    assert [f.context["event"]["label"] for f in frames] == ["fold", "unfold"]
    assert frames[0].error is None
    assert "audio was lost during this unfold motion" in (frames[1].error or "")
    # silence stands in for the lost blocks: the cut motion ends where the audio stopped
    assert abs(frames[1].context["event"]["end_s"] - ring_s) < 0.05


@pytest.mark.parametrize("label", ["fold", "unfold"])
def test_a_labels_filter_keeps_its_motions_numbered_like_the_other_station(
    recording: np.ndarray, label: str
) -> None:
    """Two stations, one model per motion: each scores its own label, same part ids."""
    mic, _, stop, _ = source(recording, labels=[label], at_once=True)
    frames = list(mic.frames(stop))

    assert [f.context["event"]["label"] for f in frames] == [label, label]
    expected = [f"{n:06d}-{m}" for n, m in enumerate(SEQUENCE, 1) if m == label]
    assert [f.part_id for f in frames] == expected


def test_a_labels_filter_naming_a_motion_the_segmenter_never_names_is_refused() -> None:
    with pytest.raises(ValueError, match=r"microphone.labels \['fold2'\] are not in events"):
        microphone(labels=["fold2"])


def test_a_device_that_cannot_be_opened_is_reported_and_retried(recording: np.ndarray) -> None:
    events: list[tuple[str, dict]] = []
    stop = threading.Event()
    tries = []

    def unplugged(settings: Any, callback: Callable[..., None]) -> Any:
        tries.append(1)
        if len(tries) == 3:
            stop.set()
        raise ValueError("No input device matching 'USB mic'")

    mic = MicrophoneSource(
        microphone(),
        lambda name, kind, message, **details: events.append((kind, {"message": message})),
        open_stream=unplugged,
    )
    assert list(mic.frames(stop)) == []
    assert [kind for kind, _ in events] == ["source_lost"] * 3
    assert "No input device matching" in events[0][1]["message"]


def test_missing_portaudio_is_a_setup_error_naming_what_to_install() -> None:
    try:
        require_sounddevice()
    except ConfigError as exc:
        assert exc.exit_code == 2
        assert "portaudio" in str(exc).lower() or "sounddevice" in str(exc)
    else:
        pytest.skip("PortAudio is installed here")


def test_config_refuses_a_microphone_that_is_not_audio_and_other_rates() -> None:
    with pytest.raises(ValueError, match="'audio'"):
        parse_source({"name": "m", "kind": "microphone", "modality": "image"})
    with pytest.raises(ValueError, match="sample_rate"):
        parse_source(
            {
                "name": "m",
                "kind": "microphone",
                "modality": "audio",
                "microphone": {"sample_rate": 22050},
            }
        )
    default = parse_source({"name": "m", "kind": "microphone", "modality": "audio"})
    assert default.microphone is not None and default.microphone.trigger is None
