"""Many capture threads into one preprocess stage, each source with its own backpressure.

``block`` makes the source wait for room (no frame is lost); ``drop_oldest`` keeps the
newest frame and hands the discarded one to ``on_drop`` (counted and reported).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from flowedge.edge.loop.sample import Sample
from flowedge.edge.sources.base import SourceBaseConfig

END = object()  # travels down the stage queues after the last sample


class FanIn:
    """Per-source bounded queues feeding one consumer, taken round robin."""

    def __init__(self, sources: list[SourceBaseConfig], on_drop: Callable[[Sample], None]) -> None:
        self._queues: dict[str, deque[Sample]] = {s.name: deque() for s in sources}
        self._limits = {s.name: (s.queue_size, s.backpressure) for s in sources}
        self._order = list(self._queues)
        self._next = 0
        self._cond = threading.Condition()
        self._closed = False
        self.on_drop = on_drop

    def put(self, sample: Sample) -> None:
        dropped = None
        with self._cond:
            q = self._queues[sample.source]
            size, policy = self._limits[sample.source]
            if policy == "block":
                while len(q) >= size:
                    self._cond.wait()
            elif len(q) >= size:
                dropped = q.popleft()
            q.append(sample)
            self._cond.notify_all()
        if dropped is not None:
            self.on_drop(dropped)

    def close(self) -> None:
        """No more puts: ``get`` returns ``END`` once everything queued was taken."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def get(self, timeout: float) -> Any:
        """The next sample round robin over sources, ``END`` after ``close``; None on timeout."""
        with self._cond:
            deadline = time.monotonic() + timeout
            while True:
                for i in range(len(self._order)):
                    q = self._queues[self._order[(self._next + i) % len(self._order)]]
                    if q:
                        self._next = (self._next + i + 1) % len(self._order)
                        self._cond.notify_all()
                        return q.popleft()
                if self._closed:
                    return END
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def depth(self) -> int:
        return sum(len(q) for q in self._queues.values())
