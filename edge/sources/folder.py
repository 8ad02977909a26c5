"""``kind: folder``: replay a folder of sample files (images, WAV/FLAC, ...) in name order."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import Field

from flowedge.core.errors import EXIT_DATA, EXIT_USAGE, DataError
from flowedge.core.validation import RateHz
from flowedge.edge.checks import CheckResult, failed, first_sample, passed
from flowedge.edge.sources.base import (
    EventSink,
    Frame,
    Pacer,
    SourceKind,
    SourceMemory,
)
from flowedge.edge.sources.files import FileSourceConfig, UnmatchedFiles


class FolderConfig(FileSourceConfig):
    kind: Literal["folder"] = "folder"
    rate_hz: RateHz | None = Field(None, description="replay rate; None: as fast as possible")
    loop: bool = False  # start again at the end


class FolderSource:
    """Replays a folder of samples (images, or WAV/FLAC with ``modality: audio``) in name order at ``rate_hz`` (optionally looping).

    The last file taken is remembered: after a crash or a stop the replay goes on
    after it instead of starting again under new sequence numbers. A replay that
    reached its end and left nothing unanswered starts again from the first file.
    """

    LAST = "last"  # memory key: path of the last file taken

    def __init__(
        self, cfg: FolderConfig, events: EventSink, memory: SourceMemory | None = None
    ) -> None:
        self.name, self.cfg, self.events, self.memory = cfg.name, cfg, events, memory
        self.modality = cfg.modality
        self.patterns = cfg.file_patterns()
        self.unmatched = UnmatchedFiles(cfg.name, Path(cfg.path), self.patterns.text, events)
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
                    f"folder {folder} has no files matching {self.cfg.describe_patterns()}; "
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
        files, others = self.patterns.listing(folder)
        self.unmatched.present(others)
        return files


def readable_folder(name: str, kind: str, folder: Path) -> CheckResult | None:
    """The failed check of a file source's folder, None when it can be listed."""
    if not folder.is_dir():  # a path that does not exist: the config is wrong
        return failed(
            name, f"{kind} path {folder} is not a directory; create it or fix the path", EXIT_USAGE
        )
    if not os.access(folder, os.R_OK | os.X_OK):  # there, but unusable: the data
        return failed(
            name, f"{folder} is not readable by this user; fix its permissions", EXIT_DATA
        )
    return None


def check(cfg: FolderConfig, timeout_s: float) -> CheckResult:
    """The folder is readable and holds a first sample."""
    name = f"source {cfg.name}"
    problem = readable_folder(name, "folder", Path(cfg.path))
    if problem is not None:
        return problem

    def frames(events: EventSink, stop: threading.Event) -> Iterator[Frame]:
        return FolderSource(cfg, events).frames(stop)

    first, why = first_sample(frames, cfg.name, timeout_s)
    return passed(name, f"folder delivered {first}") if first else failed(name, why)


KIND = SourceKind(FolderConfig, lambda cfg, ctx: FolderSource(cfg, ctx.events, ctx.memory), check)
