"""``kind: camera``: OpenCV capture (index, device, RTSP/HTTP URL, GStreamer pipeline, video file)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, Literal

from pydantic import Field

from flowedge.core.validation import RateHz
from flowedge.edge.checks import CheckResult, failed, first_sample, passed
from flowedge.edge.sources.base import (
    EventSink,
    Frame,
    Pacer,
    SourceBaseConfig,
    SourceKind,
)


class CameraConfig(SourceBaseConfig):
    kind: Literal["camera"] = "camera"
    # index ("0"), device path, RTSP/HTTP URL, GStreamer pipeline or video file
    uri: str = Field(min_length=1)
    modality: Literal["image"] = "image"  # a camera delivers images
    rate_hz: RateHz | None = Field(None, description="capture rate; None: as fast as possible")


CAPTURE_TIMEOUT_MS = 5000  # a network stream that hangs reads as lost (then reconnect)


def _open_capture(uri: str) -> Any:
    import cv2

    if uri.isdigit():
        return cv2.VideoCapture(int(uri))
    timeouts = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        CAPTURE_TIMEOUT_MS,
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        CAPTURE_TIMEOUT_MS,
    ]
    return cv2.VideoCapture(uri, cv2.CAP_ANY, timeouts)


class CameraSource:
    """OpenCV ``VideoCapture``: index, device path, RTSP/HTTP URL, GStreamer pipeline, video file.

    ``open_capture`` is injectable so tests can use a capture that fails and recovers.
    """

    modality = "image"

    def __init__(
        self,
        cfg: CameraConfig,
        events: EventSink,
        open_capture: Callable[[str], Any] = _open_capture,
        on_state: Callable[[str, bool], None] | None = None,
    ) -> None:
        self.name, self.cfg, self.events = cfg.name, cfg, events
        self.open_capture = open_capture
        self.on_state = on_state or (lambda name, ok: None)

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        delay = self.cfg.reconnect_min_s
        frame_no = 0
        pacer = Pacer(self.cfg.rate_hz)
        lost = False
        while not stop.is_set():
            capture = self.open_capture(self.cfg.uri)
            ok, frame = capture.read() if capture.isOpened() else (False, None)
            if not ok:
                capture.release()
                if not lost:
                    self.on_state(self.name, False)
                self.events(
                    self.name,
                    "source_lost",
                    f"camera {self.cfg.uri!r} cannot be opened or delivers no frames; "
                    f"retrying in {delay:.1f} s (check cable, power, URL)",
                    retry_in_s=delay,
                )
                lost = True
                stop.wait(delay)
                delay = min(delay * 2, self.cfg.reconnect_max_s)
                continue
            if lost:
                self.events(self.name, "source_reconnected", f"camera {self.cfg.uri!r} is back")
                self.on_state(self.name, True)
                lost = False
            delay = self.cfg.reconnect_min_s
            while ok and not stop.is_set():
                frame_no += 1
                yield Frame(str(frame_no), frame)  # in memory only: gone after a crash
                pacer.wait(stop)
                ok, frame = capture.read()
            capture.release()


def check(cfg: CameraConfig, timeout_s: float) -> CheckResult:
    """The camera opens and delivers a first frame."""

    def frames(events: EventSink, stop: threading.Event) -> Iterator[Frame]:
        return CameraSource(cfg, events).frames(stop)

    name = f"source {cfg.name}"
    first, why = first_sample(frames, cfg.name, timeout_s)
    return passed(name, f"camera delivered {first}") if first else failed(name, why)


KIND = SourceKind(
    CameraConfig, lambda cfg, ctx: CameraSource(cfg, ctx.events, on_state=ctx.on_state), check
)
