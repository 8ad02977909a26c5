"""Sources yield ``(part_id, payload)`` pairs; the capture thread turns them into samples.

A source never stalls silently: a camera that cannot be opened or stops
delivering frames reports an event, waits with exponential backoff and tries
again, and reports again when it is back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from flowedge.core.errors import DataError
from flowedge.edge.config import SourceConfig

log = logging.getLogger(__name__)

# (source name, kind, message, details) -> None; kinds are listed in event.schema.json
EventSink = Callable[..., None]


class Source(Protocol):
    name: str
    modality: str

    def frames(self, stop: threading.Event) -> Iterator[tuple[str, Any]]:
        """Yield samples until exhausted or ``stop`` is set."""


class Pacer:
    """Holds a loop to ``rate_hz`` without drift; no rate means as fast as possible."""

    def __init__(self, rate_hz: float | None) -> None:
        self.period = 1.0 / rate_hz if rate_hz else 0.0
        self.next = time.monotonic()

    def wait(self, stop: threading.Event) -> None:
        if self.period:
            self.next = max(self.next + self.period, time.monotonic())
            stop.wait(max(0.0, self.next - time.monotonic()))


def _patterns(cfg: SourceConfig) -> list[str]:
    return [p.strip() for p in cfg.pattern.split(",") if p.strip()]


def _matching(folder: Path, patterns: list[str]) -> list[Path]:
    files = {p for pattern in patterns for p in folder.glob(pattern) if p.is_file()}
    return sorted(files)


class FolderSource:
    """Replays a folder of images in name order at ``rate_hz`` (optionally looping)."""

    modality = "image"

    def __init__(self, cfg: SourceConfig, events: EventSink) -> None:
        self.name, self.cfg, self.events = cfg.name, cfg, events

    def frames(self, stop: threading.Event) -> Iterator[tuple[str, Any]]:
        folder = Path(self.cfg.path)
        pacer = Pacer(self.cfg.rate_hz)
        while not stop.is_set():
            if not folder.is_dir():  # a failure (unmounted, typo), not an end: exit non-zero
                raise DataError(
                    f"folder {folder} (sources[].path of {self.name}) does not exist or is "
                    "not a directory; check the path and the mount"
                )
            files = _matching(folder, _patterns(self.cfg))
            if not files:
                self.events(
                    self.name,
                    "source_empty",
                    f"folder {folder} has no files matching {self.cfg.pattern}; "
                    "check sources[].path and pattern",
                )
                return
            for path in files:
                if stop.is_set():
                    return
                yield path.name, path  # decoded in the preprocess stage, off the capture thread
                pacer.wait(stop)
            if not self.cfg.loop:
                return


def looks_complete(path: Path, size: int) -> bool:
    """Whether an image file has its format's end: PNG IEND, JPEG EOI, BMP header size.

    A writer that pauses mid-file leaves size and mtime unchanged for a while; the
    format's own end marker tells a finished file from a paused one.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            handle.seek(max(0, size - 16))
            tail = handle.read()
    except OSError:
        return False
    if head.startswith(b"\x89PNG"):
        return tail.endswith(b"IEND\xaeB`\x82")
    if head.startswith(b"\xff\xd8"):
        return b"\xff\xd9" in tail
    if head.startswith(b"BM") and len(head) >= 6:
        return int.from_bytes(head[2:6], "little") <= size
    return True  # other formats: size and mtime stability only


class Watermark(Protocol):
    """Persistent memory of a source (the spool): survives restarts."""

    def watermark(self, source: str) -> int | None: ...

    def set_watermark(self, source: str, value: int) -> None: ...


class WatchSource:
    """New image files dropped into a folder, each yielded once it is complete.

    Complete: size and mtime unchanged across two polls and the format's end marker
    present (vision systems write in place, sometimes with pauses). A file that never
    completes is yielded after ``give_up_s`` so it is reported as bad input, not
    ignored. The newest handled mtime is persisted (``memory``): after a restart, files
    dropped while the service was down are picked up, older ones are not redone. On
    the very first start, files already there are left alone.
    """

    modality = "image"
    poll_s = 0.1
    give_up_s = 10.0

    def __init__(
        self, cfg: SourceConfig, events: EventSink, memory: Watermark | None = None
    ) -> None:
        self.name, self.cfg, self.events, self.memory = cfg.name, cfg, events, memory

    def _already_handled(self, folder: Path, patterns: list[str]) -> set[Path]:
        mtimes: dict[Path, int] = {}
        for path in _matching(folder, patterns) if folder.is_dir() else []:
            try:
                mtimes[path] = path.stat().st_mtime_ns
            except OSError:
                continue
        mark = self.memory.watermark(self.name) if self.memory is not None else None
        if mark is None:  # first start: what is there already is not ours
            if self.memory is not None:
                self.memory.set_watermark(self.name, max(mtimes.values(), default=0))
            return set(mtimes)
        return {path for path, mtime in mtimes.items() if mtime <= mark}

    def frames(self, stop: threading.Event) -> Iterator[tuple[str, Any]]:
        folder = Path(self.cfg.path)
        patterns = _patterns(self.cfg)
        seen = self._already_handled(folder, patterns)
        sizes: dict[Path, tuple[int, int]] = {}
        first_seen: dict[Path, float] = {}
        missing_reported = False
        while not stop.wait(self.poll_s):
            if not folder.is_dir():
                if not missing_reported:
                    self.events(self.name, "source_lost", f"watched folder {folder} does not exist")
                    missing_reported = True
                continue
            missing_reported = False
            for path in _matching(folder, patterns):
                if path in seen:
                    continue
                try:
                    stat = path.stat()
                except OSError:
                    continue  # renamed or deleted between listing and stat
                signature = (stat.st_size, stat.st_mtime_ns)
                waited = time.monotonic() - first_seen.setdefault(path, time.monotonic())
                stable = sizes.get(path) == signature and stat.st_size > 0
                sizes[path] = signature
                if not (stable and looks_complete(path, stat.st_size)) and waited < self.give_up_s:
                    continue  # still being written: look again next poll
                seen.add(path)
                sizes.pop(path, None)
                first_seen.pop(path, None)
                if self.memory is not None:
                    self.memory.set_watermark(self.name, stat.st_mtime_ns)
                yield path.name, path


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
        cfg: SourceConfig,
        events: EventSink,
        open_capture: Callable[[str], Any] = _open_capture,
        on_state: Callable[[str, bool], None] | None = None,
    ) -> None:
        self.name, self.cfg, self.events = cfg.name, cfg, events
        self.open_capture = open_capture
        self.on_state = on_state or (lambda name, ok: None)

    def frames(self, stop: threading.Event) -> Iterator[tuple[str, Any]]:
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
                yield str(frame_no), frame
                pacer.wait(stop)
                ok, frame = capture.read()
            capture.release()


def make_source(
    cfg: SourceConfig,
    events: EventSink,
    memory: Watermark | None = None,
    on_state: Callable[[str, bool], None] | None = None,
) -> Source:
    if cfg.kind == "folder":
        return FolderSource(cfg, events)
    if cfg.kind == "watch":
        return WatchSource(cfg, events, memory)
    return CameraSource(cfg, events, on_state=on_state)
