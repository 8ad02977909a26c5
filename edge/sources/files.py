"""What the two file source kinds (``folder`` replay, ``watch``) share: where and which files."""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Annotated

from pydantic import AfterValidator, Field

from flowedge.core.paths import BoundedPath
from flowedge.edge.sources.base import EventSink, SourceBaseConfig
from flowedge.modalities import MODALITIES, get_modality


def split_patterns(value: str) -> list[str]:
    return [p.strip() for p in value.split(",") if p.strip()]


def _confined_patterns(value: str) -> str:
    """Comma-separated globs relative to the source folder, never reaching outside it."""
    patterns = split_patterns(value)
    if not patterns:
        raise ValueError("needs at least one file pattern, e.g. '*.png'")
    for pattern in patterns:
        posix, windows = PurePosixPath(pattern), PureWindowsPath(pattern)
        if posix.is_absolute() or windows.is_absolute() or windows.drive:
            raise ValueError(f"pattern {pattern!r} must be relative to the source path")
        if ".." in posix.parts or ".." in windows.parts:
            raise ValueError(f"pattern {pattern!r} must not use '..' (it would leave the folder)")
    return value


def _registered_modality(value: str) -> str:
    if value not in MODALITIES:
        raise ValueError(f"{value!r} is not a modality of this flowedge ({', '.join(MODALITIES)})")
    if value == "series":  # a log holds many cycles, cut with the log format and segmenter
        raise ValueError("machine-data logs are read by a 'tail' source (kind: tail), not a folder")
    return value


class FileSourceConfig(SourceBaseConfig):
    """A directory of sample files of one modality."""

    path: BoundedPath = Field(description="the directory of sample files")
    # what the files are (a registered modality: image, audio, series, ...); the model's
    # input kind must match
    modality: Annotated[str, AfterValidator(_registered_modality)] = "image"
    # comma-separated globs inside ``path`` (no absolute patterns, no '..');
    # None: every file suffix of the modality (images: *.png,*.jpg,...; audio: *.wav,*.flac)
    pattern: Annotated[str, AfterValidator(_confined_patterns)] | None = None

    def patterns(self) -> list[str]:
        if self.pattern is not None:
            return split_patterns(self.pattern)
        return [f"*{suffix}" for suffix in sorted(get_modality(self.modality).extensions)]

    def describe_patterns(self) -> str:
        return ",".join(self.patterns())

    def file_patterns(self) -> FilePatterns:
        return FilePatterns(self.patterns())


def any_case(pattern: str) -> str:
    """``pattern`` as a glob that matches names without regard to case (``*.png`` takes
    ``PART.PNG``): each letter becomes ``[pP]``, a bracket expression gains the other case."""
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if char == "[":
            start = i + 1 + (pattern[i + 1 : i + 2] == "!")
            end = pattern.find("]", start + (pattern[start : start + 1] == "]"))
            if end < 0:
                out.append("[[]")  # an unclosed bracket is a literal one
            else:
                negate = "!" if start > i + 1 else ""
                members = pattern[start:end]
                out.append(f"[{negate}{members}{members.swapcase()}]")
                i = end
        elif char.lower() != char.upper():
            out.append(f"[{char.lower()}{char.upper()}]")
        else:
            out.append(char)
        i += 1
    return "".join(out)


class FilePatterns:
    """Which files of a source folder are samples: globs matched without regard to case.

    ``listing`` also names the files directly in the folder that match no pattern, so a
    source reports them instead of ignoring them silently (hidden files, such as the
    temporary files rsync and many writers rename into place, are not reported).
    """

    def __init__(self, patterns: list[str]) -> None:
        self.text = ",".join(patterns)
        self.globs = [any_case(pattern) for pattern in patterns]
        # every pattern names files of the folder itself (none reaches into a subfolder)
        self.flat = not any("/" in p or "\\" in p or "**" in p for p in patterns)

    def matches(self, name: str) -> bool:
        """Whether a file called ``name`` directly in the folder is a sample."""
        return any(fnmatch.fnmatchcase(name, glob) for glob in self.globs)

    def listing(self, folder: Path) -> tuple[list[Path], list[str]]:
        """(the matching files in name order, the other files' names directly in ``folder``)."""
        names = [entry.name for entry in os.scandir(folder) if _is_file(entry)]
        if self.flat:
            found = {folder / name for name in names if self.matches(name)}
        else:
            found = {path for glob in self.globs for path in folder.glob(glob) if path.is_file()}
        taken = {path.name for path in found if path.parent == folder}
        others = sorted(n for n in names if n not in taken and not n.startswith("."))
        return sorted(found), others


def _is_file(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file()
    except OSError:  # gone between listing and looking
        return False


class UnmatchedFiles:
    """One ``file_unmatched`` event per file name that matches no pattern, while it stays."""

    def __init__(self, source: str, folder: Path, patterns: str, events: EventSink) -> None:
        self.source, self.folder, self.patterns, self.events = source, folder, patterns, events
        self.reported: set[str] = set()

    def present(self, names: list[str]) -> None:
        """The unmatched files now (a full listing): report the new ones, forget the gone."""
        self.reported &= set(names)
        self.seen(names)

    def seen(self, names: list[str]) -> None:
        for name in names:
            if name not in self.reported:
                self.reported.add(name)
                self.events(
                    self.source,
                    "file_unmatched",
                    f"{self.folder / name} matches none of the patterns {self.patterns} of "
                    f"source {self.source}, so it is not scored; give it a sample's suffix, or "
                    "widen sources[].pattern",
                    file=name,
                    patterns=self.patterns,
                )

    def gone(self, name: str) -> None:
        self.reported.discard(name)
