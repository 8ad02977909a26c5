"""systemd integration: READY/STATUS/STOPPING and a watchdog fed only by real progress.

Notifications go as raw ``AF_UNIX`` datagrams to ``$NOTIFY_SOCKET`` (``@`` means
the abstract namespace), so there is no dependency and nothing happens outside
systemd. The watchdog is fed only while every stage either made progress since
the last check or is idle with an empty input queue: a hung stage stops the
pings and systemd restarts the service.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self._sock: socket.socket | None = None
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *lines: str) -> None:
        if self._sock is None:
            return
        try:
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:  # systemd gone (shutdown): nothing to tell
            log.debug("sd_notify failed: %s", exc)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval_s() -> float | None:
    """Half of ``$WATCHDOG_USEC`` (the systemd advice), None when no watchdog is set."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec or not usec.isdigit():
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 2e6


POLL_S = 0.5  # how often an idle stage ticks its progress (the watchdog's "alive")


class StageProgress:
    """A stage counts its iterations; ``idle`` says its input queue is empty."""

    def __init__(self, name: str, idle: Callable[[], bool]) -> None:
        self.name = name
        self.idle = idle
        self.ticks = 0

    def tick(self) -> None:
        self.ticks += 1


class Watchdog(threading.Thread):
    """Pings WATCHDOG=1 while all stages are healthy, and refreshes the STATUS= line."""

    def __init__(
        self,
        notifier: Notifier,
        stages: list[StageProgress],
        interval_s: float,
        status: Callable[[], str],
    ) -> None:
        super().__init__(name="watchdog", daemon=True)
        self.notifier, self.stages, self.interval_s, self.status = (
            notifier,
            stages,
            interval_s,
            status,
        )
        self.stop_event = threading.Event()
        self._last = {stage.name: -1 for stage in stages}

    def stalled(self) -> list[str]:
        stuck = []
        for stage in self.stages:
            if stage.ticks == self._last[stage.name] and not stage.idle():
                stuck.append(stage.name)
            self._last[stage.name] = stage.ticks
        return stuck

    def run(self) -> None:
        while not self.stop_event.wait(self.interval_s):
            stuck = self.stalled()
            if stuck:
                log.error(
                    "stage(s) %s made no progress in %.1f s: watchdog not fed",
                    ", ".join(stuck),
                    self.interval_s,
                )
                self.notifier.send(f"STATUS=stalled: {', '.join(stuck)}")
                continue
            self.notifier.send("WATCHDOG=1", f"STATUS={self.status()}")

    def stop(self) -> None:
        self.stop_event.set()
