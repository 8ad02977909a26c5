"""A growing machine-data log (a robot controller's logger appending CSV lines), cut into cycles.

The log is polled; complete lines after the last cycle taken are parsed with the
source's log format and cut by its segmenter in streaming mode (a cycle counts
once the next one has started, the trigger has fallen, or a window is full). Each
cycle is a :class:`Frame` whose payload is the cycle itself. The byte offset and
row number after the last cycle taken are remembered in the spool with the intake
journal row, so after a restart the log is read on from there: no cycle is taken
twice and none is skipped. A cycle that was taken but not answered when the
station stopped is answered ERROR after the restart (the reliability rule for
payloads kept in memory). A file that shrinks was rotated: it is read from its start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from flowedge.core.errors import BadInputError
from flowedge.edge.config import SourceConfig
from flowedge.edge.sources import EventSink, Frame, SourceMemory
from flowedge.modalities.series_cycles import SegmentConfig, cycle_spans
from flowedge.modalities.series_io import LogFormat, SignalTable, decode_log

log = logging.getLogger(__name__)

_BLANK = b" \t\r\n;,|"


def _row_bounds(data: bytes) -> list[tuple[int, int]]:
    """(start, end) byte offsets of each non-blank line (the rows the CSV parser keeps)."""
    bounds, start = [], 0
    while (end := data.find(b"\n", start)) >= 0:
        if data[start:end].strip(_BLANK):
            bounds.append((start, end + 1))
        start = end + 1
    return bounds


class LogTailSource:
    """Cycles from a CSV log that grows (``kind: tail``)."""

    modality = "series"
    poll_s = 0.1
    POSITION = "position"  # memory key: "<byte offset>:<row number>" after the last cycle taken

    def __init__(
        self, cfg: SourceConfig, events: EventSink, memory: SourceMemory | None = None
    ) -> None:
        self.name, self.cfg, self.events, self.memory = cfg.name, cfg, events, memory
        self.fmt = cfg.log or LogFormat()
        self.segment = cfg.segment or SegmentConfig(mode="window")

    def _position(self) -> tuple[int, int]:
        stored = self.memory.recall(self.name).get(self.POSITION) if self.memory else None
        if not stored:
            return 0, 0
        offset, row = stored.split(":")
        return int(offset), int(row)

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        path = Path(self.cfg.path or "")
        offset, row = self._position()
        missing_reported = False
        while not stop.is_set():
            try:
                size = path.stat().st_size
                with open(path, "rb") as handle:
                    header = handle.readline()
                    if size < offset:  # rotated or truncated: a new log
                        self.events(self.name, "source_reconnected", f"log {path} restarted")
                        offset, row = 0, 0
                    offset = max(offset, handle.tell())
                    handle.seek(offset)
                    data = handle.read()
                missing_reported = False
            except OSError as exc:
                if not missing_reported:
                    self.events(self.name, "source_lost", f"log {path} cannot be read: {exc}")
                    missing_reported = True
                stop.wait(self.poll_s)
                continue
            data = data[: data.rfind(b"\n") + 1]  # a line still being written waits
            bounds = _row_bounds(data)
            if header.endswith(b"\n") and bounds:
                for frame, position in self._cycles(header, data, bounds, offset, row):
                    offset, row = position
                    yield frame
                    if stop.is_set():
                        return
            stop.wait(self.poll_s)

    def _cycles(
        self, header: bytes, data: bytes, bounds: list[tuple[int, int]], offset: int, row: int
    ) -> Iterator[tuple[Frame, tuple[int, int]]]:
        try:
            table = decode_log(header + data[: bounds[-1][1]], f"{self.cfg.path}", self.fmt)
        except BadInputError as exc:
            log.warning("%s: %s", self.name, exc)
            self.events(self.name, "source_lost", f"{self.name}: {exc}")
            return
        table.first_row = row
        for span in cycle_spans(table, self.segment, complete_only=True):
            resume = (
                span.stop if self.segment.mode != "window" else span.start + self.segment.step_rows
            )
            resume = min(resume, len(bounds))
            next_offset = offset + (bounds[resume][0] if resume < len(bounds) else bounds[-1][1])
            cycle = table.rows(span.start, span.stop, f"{self.name}:{span.cycle_id}")
            position = (next_offset, row + resume)
            yield self._frame(cycle, span.cycle_id, position), position

    def _frame(self, cycle: SignalTable, cycle_id: str, position: tuple[int, int]) -> Frame:
        times = cycle.times() if (cycle.time_s is not None or cycle.rate_hz) else None
        context = {
            "id": cycle_id,
            "first_row": cycle.first_row,
            "rows": len(cycle),
            "start_s": None if times is None else float(times[0]),
            "end_s": None if times is None else float(times[-1]),
        }
        return Frame(
            cycle_id,
            cycle,
            None,  # kept in memory: answered ERROR if the station stops before scoring it
            remember=(self.POSITION, f"{position[0]}:{position[1]}"),
            context={"cycle": context},
        )
