"""What the two file source kinds (``folder`` replay, ``watch``) share: where and which files."""

from __future__ import annotations

from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Annotated

from pydantic import AfterValidator, Field

from flowedge.core.paths import BoundedPath
from flowedge.edge.sources.base import SourceBaseConfig
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


def matching(folder: Path, patterns: list[str]) -> list[Path]:
    """The files in ``folder`` matching any pattern, in name order."""
    files = {p for pattern in patterns for p in folder.glob(pattern) if p.is_file()}
    return sorted(files)
