"""Station totals for the status line and the retained status message."""

from __future__ import annotations

import threading

KEYS = ("samples", "decisions", "errors", "dropped")


class Counts:
    """Thread-safe counters, written by the capture, publish and drop paths."""

    def __init__(self) -> None:
        self._values = dict.fromkeys(KEYS, 0)
        self._lock = threading.Lock()

    def add(self, key: str, n: int = 1) -> int:
        """Add ``n`` and return the new total."""
        with self._lock:
            self._values[key] += n
            return self._values[key]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)

    def __getitem__(self, key: str) -> int:
        return self._values[key]
