"""``kind: watch``: sample files dropped into a folder by a vision system, each taken once."""

from __future__ import annotations

import logging
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import Field

from flowedge.core.validation import DAY_S
from flowedge.edge.checks import CheckResult, passed
from flowedge.edge.sources.base import (
    EventSink,
    Frame,
    SourceKind,
    SourceMemory,
    file_version,
)
from flowedge.edge.sources.changes import FolderChanges, folder_changes
from flowedge.edge.sources.files import FilePatterns, FileSourceConfig, UnmatchedFiles
from flowedge.edge.sources.folder import readable_folder

log = logging.getLogger(__name__)


class WatchConfig(FileSourceConfig):
    kind: Literal["watch"] = "watch"
    settle_timeout_s: float = Field(
        10.0,
        gt=0,
        le=DAY_S,
        description="a file still changing (or without its end marker) this long after it "
        "appeared is answered ERROR; a later complete version is answered again",
    )
    notify: Literal["auto", "poll"] = Field(
        "auto",
        description="auto: inotify tells what changed where the folder's file system reports "
        "it (else polling); poll: list the folder every 0.1 s (a share whose writer the "
        "file system type does not reveal)",
    )


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
        self, cfg: WatchConfig, events: EventSink, memory: SourceMemory | None = None
    ) -> None:
        self.name, self.cfg, self.events, self.memory = cfg.name, cfg, events, memory
        self.modality = cfg.modality
        self.taken_since_prune = 0
        self.unmatched = UnmatchedFiles(cfg.name, Path(cfg.path), cfg.describe_patterns(), events)

    def _scan(self, folder: Path, patterns: FilePatterns) -> dict[str, str]:
        """Path -> version of every matching file now (files matching none are reported)."""
        versions: dict[str, str] = {}
        try:
            files, others = patterns.listing(folder)
        except OSError:  # gone or unreadable: looked at again next poll
            return versions
        self.unmatched.present(others)
        for path in files:
            try:
                versions[str(path)] = file_version(path.stat())
            except OSError:
                continue  # renamed or deleted between listing and stat
        return versions

    def _look_again(
        self, folder: Path, patterns: FilePatterns, present: dict[str, str], names: set[str]
    ) -> None:
        """Update ``present`` for the files called ``names`` (what changed, what is settling)."""
        for name in names:
            path = folder / name
            try:
                status = path.stat()
            except OSError:
                status = None
            if status is None or not stat.S_ISREG(status.st_mode):
                present.pop(str(path), None)
                self.unmatched.gone(name)
            elif patterns.matches(name):
                present[str(path)] = file_version(status)
            elif not name.startswith("."):
                self.unmatched.seen([name])

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
        patterns = self.cfg.file_patterns()
        changes = folder_changes(folder, patterns.flat, self.cfg.notify)  # before the first look
        log.info("%s: watching %s (%s)", self.name, folder, changes.how)
        try:
            yield from self._watch(folder, patterns, changes, stop)
        finally:
            changes.close()

    def _watch(
        self, folder: Path, patterns: FilePatterns, changes: FolderChanges, stop: threading.Event
    ) -> Iterator[Frame]:
        present = self._scan(folder, patterns)
        known = self._known(present)
        settling = Settling(self.cfg.settle_timeout_s, stable_s=self.poll_s / 2)
        missing_reported, first = False, True
        while not stop.is_set():
            changed = changes.wait(stop, self.poll_s)
            if stop.is_set():
                return
            if not folder.is_dir():
                if not missing_reported:
                    self.events(self.name, "source_lost", f"watched folder {folder} does not exist")
                    missing_reported = True
                continue
            missing_reported = False
            if changed is None:
                present = self._scan(folder, patterns)
            elif changed or settling.last:
                self._look_again(folder, patterns, present, changed | settling.names())
            elif not first:
                continue  # nothing changed and nothing is settling: nothing to look at
            first = False
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
    """Tells a finished file from one still being written, per path, with a time limit.

    A version counts as stable once it has stayed the same for ``stable_s``: looks at a
    file can come close together (another file's change wakes the source), a pause of
    the writer must still show.
    """

    def __init__(self, timeout_s: float, stable_s: float) -> None:
        self.timeout_s, self.stable_s = timeout_s, stable_s
        # path -> (version, when the path was first seen, since when it has had that version)
        self.last: dict[str, tuple[str, float, float]] = {}

    def names(self) -> set[str]:
        """The file names being waited for."""
        return {Path(key).name for key in self.last}

    def forget_all_but(self, present: dict[str, str]) -> None:
        for key in self.last.keys() - present.keys():
            del self.last[key]

    def check(self, key: str, version: str) -> str | None:
        """None: wait; "": complete, take it; otherwise why it is answered ERROR now."""
        now = time.monotonic()
        previous, first_seen, since = self.last.get(key, ("", now, now))
        since = since if previous == version else now
        self.last[key] = (version, first_seen, since)
        size = int(version.split(":")[0])
        stable = previous == version and now - since >= self.stable_s
        if stable and size > 0 and looks_complete(Path(key), size):
            del self.last[key]
            return ""
        if now - first_seen < self.timeout_s:
            return None
        del self.last[key]
        return (
            f"{Path(key).name}: not a complete image after settle_timeout_s={self.timeout_s:g} s "
            "(empty, still growing, or missing its PNG/JPEG end marker); answered ERROR for "
            "this version of the file, a later complete version is answered again"
        )


def check(cfg: WatchConfig, timeout_s: float) -> CheckResult:
    """The folder is readable (a file only comes when the vision system writes one)."""
    name = f"source {cfg.name}"
    problem = readable_folder(name, "watch", Path(cfg.path))
    if problem is not None:
        return problem
    changes = folder_changes(Path(cfg.path), cfg.file_patterns().flat, cfg.notify)
    changes.close()
    return passed(name, f"watching {cfg.path} for {cfg.describe_patterns()} ({changes.how})")


KIND = SourceKind(WatchConfig, lambda cfg, ctx: WatchSource(cfg, ctx.events, ctx.memory), check)
