"""What the station knows about each source: starting, up, lost, ended or failed.

Feeds the ``flowedge_source_up`` gauge, the retained status message (republished on
every change) and the exit code: when every source failed, ``flowedge run`` exits
non-zero so systemd restarts it; sources that simply ended (a finite folder) do not.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from flowedge.edge.metrics import Metrics


class SourceStates:
    def __init__(
        self, names: list[str], metrics: Metrics, on_change: Callable[[str], None]
    ) -> None:
        self.metrics, self.on_change = metrics, on_change
        self._states = dict.fromkeys(names, "starting")
        self._failures: dict[str, str] = {}
        self._lock = threading.Lock()

    def set(self, name: str, state: str) -> None:
        self.metrics.source_up.labels(name).set(1 if state == "up" else 0)
        with self._lock:
            changed = self._states.get(name) != state
            self._states[name] = state
        if changed:
            self.on_change(f"source {name} {state}")

    def connected(self, name: str, up: bool) -> None:
        """The sources' ``on_state`` callback (a camera lost and back)."""
        self.set(name, "up" if up else "lost")

    def failed(self, name: str, reason: str) -> None:
        with self._lock:
            self._failures[name] = reason
        self.set(name, "failed")

    def get(self, name: str) -> str:
        return self._states[name]

    def snapshot(self) -> dict[str, str]:
        with self._lock:
            return dict(self._states)

    def all_failed(self) -> str | None:
        """Why every source failed ("cam1: ..."), None while any source did not fail."""
        with self._lock:
            if not self._states or set(self._states) != set(self._failures):
                return None
            return "; ".join(f"{name}: {why}" for name, why in self._failures.items())
