"""A folder of files the station writes per sensor, with a retention limit.

A station runs for months: heatmap overlays and input copies would fill the disk and
then the spool could not commit. Per sensor at most ``keep`` files and ``keep_bytes``
bytes stay, oldest deleted first (names start with the capture time, so name order is
age order).
"""

from __future__ import annotations

import logging
from collections import deque
from pathlib import Path

log = logging.getLogger(__name__)


def stamped_name(captured_utc: str, stem: str, suffix: str) -> str:
    """``<capture time>_<stem><suffix>``: sorts by capture time within a sensor's folder."""
    stamp = captured_utc.replace("-", "").replace(":", "").replace(".", "")
    return f"{stamp}_{stem}{suffix}"


class KeptFiles:
    """One sensor's files on disk, oldest first (one thread: no locking)."""

    def __init__(self, folder: Path, pattern: str = "*") -> None:
        files = sorted(p for p in folder.glob(pattern) if p.is_file()) if folder.is_dir() else []
        self.files: deque[tuple[Path, int]] = deque((p, p.stat().st_size) for p in files)
        self.bytes = sum(size for _, size in self.files)

    def add(self, path: Path) -> None:
        size = path.stat().st_size
        self.files.append((path, size))
        self.bytes += size

    def prune(self, keep: int, keep_bytes: float) -> None:
        """Delete the oldest files over either limit; the newest one always stays."""
        while len(self.files) > 1 and (len(self.files) > keep or self.bytes > keep_bytes):
            path, size = self.files.popleft()
            self.bytes -= size
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                log.warning("old file %s not deleted: %s", path, exc)
