"""Sources yield ``Frame``s; the capture thread journals each one and turns it into a sample.

A source never stalls silently: a camera that cannot be opened or stops
delivering frames reports an event, waits with exponential backoff and tries
again, and reports again when it is back. File sources remember what they took
(``SourceMemory``, kept in the spool and written in the same transaction as the
intake journal row), so a restart neither skips nor repeats a file.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from flowedge.core.errors import DataError
from flowedge.edge.config import MQTTConfig, SourceConfig
from flowedge.edge.sample import utc_now

log = logging.getLogger(__name__)

# (source name, kind, message, details) -> None; kinds are listed in event.schema.json
EventSink = Callable[..., None]


@dataclass(frozen=True)
class Frame:
    """One captured sample as a source hands it over."""

    part_id: str  # file name or frame counter: what the PLC matches the decision to
    payload: Any  # a file path (decoded off the capture thread) or an in-memory frame
    locator: str | None = None  # where the payload can be read again after a crash
    remember: tuple[str, str] | None = None  # (key, value) the source keeps once journaled
    error: str | None = None  # the source already knows the sample is bad: answered ERROR
    captured_utc: str = field(default_factory=utc_now)
    # fields the source adds to the decision message, by name: {"event": {...}} for an audio
    # motion (label, start/end), {"cycle": {...}} for a robot cycle (id, rows, time range)
    context: dict[str, Any] | None = None
    # the payload's version when the source knows it better than the locator file's
    # (a cycle of a growing log: a digest of its bytes; the file itself changes on every line)
    version: str | None = None


class Source(Protocol):
    name: str
    modality: str

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """Yield samples until exhausted or ``stop`` is set.

        A source whose locators are not plain file paths also has ``replay(row) -> Frame``:
        the frame of an intake journal row left open by a crash (see edge/intake.py).
        """


class SourceMemory(Protocol):
    """Persistent memory of the sources (the spool): survives restarts and crashes."""

    def recall(self, source: str) -> dict[str, str]: ...

    def remember(self, source: str, entries: dict[str, str]) -> None: ...

    def prune_memory(self, source: str, keep: set[str], cap: int) -> int: ...

    def pending_intake(self, source: str) -> list[Any]: ...


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


def file_version(stat: Any) -> str:
    """Size, mtime (ns) and inode: a file rewritten, replaced or moved in reads as a new version."""
    return f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}"


class FolderSource:
    """Replays a folder of samples (images, or WAV/FLAC with ``modality: audio``) in name order at ``rate_hz`` (optionally looping).

    The last file taken is remembered: after a crash or a stop the replay goes on
    after it instead of starting again under new sequence numbers. A replay that
    reached its end and left nothing unanswered starts again from the first file.
    """

    LAST = "last"  # memory key: path of the last file taken

    def __init__(
        self, cfg: SourceConfig, events: EventSink, memory: SourceMemory | None = None
    ) -> None:
        self.name, self.cfg, self.events, self.memory = cfg.name, cfg, events, memory
        self.modality = cfg.modality
        # read before this run answers anything: samples left unanswered mean "cut short"
        self.cut_short = memory is not None and bool(memory.pending_intake(self.name))

    def _resume_after(self, files: list[Path]) -> Path | None:
        last = self.memory.recall(self.name).get(self.LAST) if self.memory else None
        if last is None:
            return None
        finished = not any(path > Path(last) for path in files)
        return None if finished and not self.cut_short and not self.cfg.loop else Path(last)

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        folder = Path(self.cfg.path)
        pacer = Pacer(self.cfg.rate_hz)
        files = self._listing(folder)
        after = self._resume_after(files)
        while not stop.is_set():
            if not files:
                self.events(
                    self.name,
                    "source_empty",
                    f"folder {folder} has no files matching {self.cfg.pattern}; "
                    "check sources[].path and pattern",
                )
                return
            for path in files:
                if after is not None and path <= after:
                    continue
                if stop.is_set():
                    return
                # decoded in the preprocess stage, off the capture thread
                yield Frame(path.name, path, str(path), remember=(self.LAST, str(path)))
                pacer.wait(stop)
            if not self.cfg.loop:
                return
            after = None
            files = self._listing(folder)

    def _listing(self, folder: Path) -> list[Path]:
        if not folder.is_dir():  # a failure (unmounted, typo), not an end: exit non-zero
            raise DataError(
                f"folder {folder} (sources[].path of {self.name}) does not exist or is "
                "not a directory; check the path and the mount"
            )
        return _matching(folder, _patterns(self.cfg))


def looks_complete(path: Path, size: int) -> bool:
    """Whether a file has its format's end: PNG IEND, JPEG EOI, BMP and WAV header sizes.

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
    if head.startswith(b"RIFF") and len(head) >= 8:  # WAV: the RIFF size counts what follows
        return int.from_bytes(head[4:8], "little") + 8 <= size
    return True  # other formats: size and mtime stability only


class WatchSource:
    """Sample files (images, or WAV/FLAC) dropped into a folder (written in place, moved or copied in), each taken once.

    A file version is (path, size, mtime, inode): a file moved in with an old mtime
    (``mv``, ``cp -p``, ``rsync``) or overwritten under the same name is a new
    version and is answered. Taken versions are remembered in the spool (pruned to
    the files still present, then capped at ``history_cap``), so a restart picks up
    what arrived while the station was down and redoes nothing. On the very first
    start the files already there are not ours and are left alone.

    Complete: size and mtime unchanged across two polls and the format's end marker
    present (vision systems write in place, sometimes with pauses). A version that
    does not settle within ``settle_timeout_s`` is answered ERROR once; a later,
    complete version of the file is answered again.
    """

    poll_s = 0.1
    history_cap = 100_000
    STARTED = ""  # memory key present once the source has run (paths are never empty)

    def __init__(
        self, cfg: SourceConfig, events: EventSink, memory: SourceMemory | None = None
    ) -> None:
        self.name, self.cfg, self.events, self.memory = cfg.name, cfg, events, memory
        self.modality = cfg.modality
        self.taken_since_prune = 0

    def _scan(self, folder: Path, patterns: list[str]) -> dict[str, str]:
        """Path -> version of every matching file now."""
        versions: dict[str, str] = {}
        for path in _matching(folder, patterns) if folder.is_dir() else []:
            try:
                versions[str(path)] = file_version(path.stat())
            except OSError:
                continue  # renamed or deleted between listing and stat
        return versions

    def _known(self, present: dict[str, str]) -> dict[str, str]:
        """Versions already taken (or there at the very first start), pruned to ``present``."""
        if self.memory is None:
            return dict(present)
        known = self.memory.recall(self.name)
        if self.STARTED not in known:  # first start: what is there already is not ours
            self.memory.remember(self.name, {self.STARTED: "1", **present})
            return dict(present)
        self._prune(set(present))
        return {key: value for key, value in known.items() if key in present}

    def _prune(self, present: set[str]) -> None:
        if self.memory is not None:
            self.memory.prune_memory(self.name, present | {self.STARTED}, self.history_cap)
        self.taken_since_prune = 0

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        folder = Path(self.cfg.path)
        patterns = _patterns(self.cfg)
        known = self._known(self._scan(folder, patterns))
        settling = Settling(self.cfg.settle_timeout_s)
        missing_reported = False
        while not stop.wait(self.poll_s):
            if not folder.is_dir():
                if not missing_reported:
                    self.events(self.name, "source_lost", f"watched folder {folder} does not exist")
                    missing_reported = True
                continue
            missing_reported = False
            present = self._scan(folder, patterns)
            for key in known.keys() - present.keys():
                del known[key]  # gone: the same name coming back is a new arrival
            settling.forget_all_but(present)
            if self.taken_since_prune >= self.history_cap:
                self._prune(set(present))
            for key, version in present.items():
                if known.get(key) == version:
                    continue
                verdict = settling.check(key, version)
                if verdict is None:
                    continue  # still being written: look again next poll
                known[key] = version
                self.taken_since_prune += 1
                path = Path(key)
                yield Frame(
                    path.name,
                    None if verdict else path,
                    key,
                    remember=(key, version),
                    error=verdict or None,
                )


class Settling:
    """Tells a finished file from one still being written, per path, with a time limit."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.last: dict[str, tuple[str, float]] = {}  # path -> (version, first seen)

    def forget_all_but(self, present: dict[str, str]) -> None:
        for key in self.last.keys() - present.keys():
            del self.last[key]

    def check(self, key: str, version: str) -> str | None:
        """None: wait; "": complete, take it; otherwise why it is answered ERROR now."""
        previous, first_seen = self.last.get(key, ("", time.monotonic()))
        self.last[key] = (version, first_seen)
        size = int(version.split(":")[0])
        if previous == version and size > 0 and looks_complete(Path(key), size):
            del self.last[key]
            return ""
        if time.monotonic() - first_seen < self.timeout_s:
            return None
        del self.last[key]
        return (
            f"{Path(key).name}: not a complete image after settle_timeout_s={self.timeout_s:g} s "
            "(empty, still growing, or missing its PNG/JPEG end marker); answered ERROR for "
            "this version of the file, a later complete version is answered again"
        )


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


def make_source(
    cfg: SourceConfig,
    events: EventSink,
    memory: SourceMemory | None = None,
    on_state: Callable[[str, bool], None] | None = None,
    mqtt: MQTTConfig | None = None,
) -> Source:
    if cfg.kind == "folder":
        return FolderSource(cfg, events, memory)
    if cfg.kind == "watch":
        return WatchSource(cfg, events, memory)
    if cfg.kind == "tail":
        from flowedge.edge.log_tail import tail_source  # series only: loads the log readers

        return tail_source(cfg, events, memory)
    if cfg.kind == "ethercat":
        from flowedge.edge.ethercat import EtherCATSource  # robot only: loads pysoem

        return EtherCATSource(cfg, events)
    if cfg.kind == "microphone":
        from flowedge.edge.microphone import MicrophoneSource  # audio only: loads the segmenter

        return MicrophoneSource(cfg, events, mqtt, on_state=on_state)
    return CameraSource(cfg, events, on_state=on_state)
