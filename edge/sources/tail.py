"""A growing machine-data log (a robot controller's logger appending CSV lines), cut into cycles.

The log is polled; complete lines after the last cycle taken are parsed with the
source's log format and cut by its segmenter in streaming mode (a cycle counts
once the next one has started, the trigger has fallen, or a window is full). Each
cycle is a :class:`Frame` whose payload is the cycle itself. The byte offset and
row number after the last cycle taken are remembered in the spool with the intake
journal row, so after a restart the log is read on from there: no cycle is taken
twice and none is skipped. Each cycle's locator is its byte range in the log
(``PATH#bytes=A-B&row=R``) and its version a digest of those bytes (with the
header), so a cycle that was taken but not answered when the station stopped is
read again from the log and scored after the restart; only when the log was
rotated or rewritten meanwhile is it answered ERROR. A file that shrinks was
rotated: it is read from its start.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from flowedge.core.errors import EXIT_DATA, EXIT_USAGE, BadInputError, ConfigError
from flowedge.core.paths import BoundedPath
from flowedge.edge.checks import CheckResult, failed, passed
from flowedge.edge.sources.base import (
    EventSink,
    Frame,
    SourceBaseConfig,
    SourceKind,
    SourceMemory,
    gone,
    replayed,
)
from flowedge.edge.spool import IntakeRow
from flowedge.modalities.series_cycles import CycleSpan, SegmentConfig, cycle_spans
from flowedge.modalities.series_io import LogFormat, SignalTable, arrow_table, decode_log

log = logging.getLogger(__name__)


class TailConfig(SourceBaseConfig):
    kind: Literal["tail"] = "tail"
    modality: Literal["series"] = "series"  # cycles of named signals
    path: BoundedPath = Field(
        description="the log file the logger appends to (CSV lines or parquet)"
    )
    log: LogFormat | None = None  # how to read it; None: the defaults
    segment: SegmentConfig | None = None  # how to cut it into cycles; None: fixed windows


_BLANK = b" \t\r\n;,|"


def _row_bounds(data: bytes) -> list[tuple[int, int]]:
    """(start, end) byte offsets of each non-blank line (the rows the CSV parser keeps)."""
    bounds, start = [], 0
    while (end := data.find(b"\n", start)) >= 0:
        if data[start:end].strip(_BLANK):
            bounds.append((start, end + 1))
        start = end + 1
    return bounds


_LOCATOR = re.compile(r"(?P<path>.*)#bytes=(?P<start>\d+)-(?P<stop>\d+)&row=(?P<row>\d+)")


def _digest(header: bytes, rows: bytes) -> str:
    """The version of a cycle's bytes: the same bytes read again after a restart match it."""
    return hashlib.sha256(header + rows).hexdigest()[:32]


def resume_row(segment: SegmentConfig, span: CycleSpan, rows: int) -> int:
    """The row to read on from after ``span`` (a window's next start, else its end)."""
    step = segment.step_rows if segment.mode == "window" else span.stop - span.start
    return min(span.start + step, rows)


def cycle_frame(cycle: SignalTable, cycle_id: str, **journal: Any) -> Frame:
    """The cycle as a frame; ``journal``: its Frame fields for the intake journal."""
    times = cycle.times() if (cycle.time_s is not None or cycle.rate_hz) else None
    context = {
        "id": cycle_id,
        "first_row": cycle.first_row,
        "rows": len(cycle),
        "start_s": None if times is None else float(times[0]),
        "end_s": None if times is None else float(times[-1]),
    }
    return Frame(cycle_id, cycle, context={"cycle": context}, **journal)


class LogOutage:
    """One ``source_lost`` event per outage of a log file, not one per poll."""

    def __init__(self, name: str, events: EventSink) -> None:
        self.name, self.events, self.reported = name, events, False

    def failed(self, path: Path, exc: OSError) -> None:
        if not self.reported:
            self.events(self.name, "source_lost", f"log {path} cannot be read: {exc}")
            self.reported = True

    def ended(self) -> None:
        self.reported = False


class LogTailSource:
    """Cycles from a CSV log that grows (``kind: tail``)."""

    modality = "series"
    poll_s = 0.1
    POSITION = "position"  # memory key: "<byte offset>:<row number>" after the last cycle taken

    def __init__(
        self, cfg: TailConfig, events: EventSink, memory: SourceMemory | None = None
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
        path = Path(self.cfg.path)
        offset, row = self._position()
        outage = LogOutage(self.name, self.events)
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
                outage.ended()
            except OSError as exc:
                outage.failed(path, exc)
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
            resume = resume_row(self.segment, span, len(bounds))
            next_offset = offset + (bounds[resume][0] if resume < len(bounds) else bounds[-1][1])
            cycle = table.rows(span.start, span.stop, f"{self.name}:{span.cycle_id}")
            position = (next_offset, row + resume)
            first, last = bounds[span.start][0], bounds[span.stop - 1][1]
            frame = cycle_frame(
                cycle,
                span.cycle_id,
                locator=f"{self.cfg.path}#bytes={offset + first}-{offset + last}"
                f"&row={row + span.start}",
                version=_digest(header, data[first:last]),
                remember=(self.POSITION, f"{position[0]}:{position[1]}"),
            )
            yield frame, position

    def replay(self, row: IntakeRow) -> Frame:
        """A cycle taken before a restart but not answered, read again from its byte range."""
        where = _LOCATOR.fullmatch(row.locator or "")
        if row.error is not None or where is None:
            return replayed(row)  # the journal's general rule
        start, stop = int(where["start"]), int(where["stop"])
        try:
            with open(where["path"], "rb") as handle:
                header = handle.readline()
                handle.seek(start)
                rows = handle.read(stop - start)
        except OSError:
            return gone(row)
        if _digest(header, rows) != row.version:
            return gone(row)  # rotated or rewritten since
        try:
            cycle = decode_log(header + rows, f"{self.name}:{row.part_id}", self.fmt)
        except BadInputError as exc:
            return unreadable_again(row, exc)
        cycle.first_row = int(where["row"])
        return replayed_cycle(cycle, row)


def replayed_cycle(cycle: SignalTable, row: IntakeRow) -> Frame:
    """A cycle re-read after a restart: the journal's part id, locator, version and capture time."""
    return cycle_frame(
        cycle,
        row.part_id,
        locator=row.locator,
        version=row.version,
        captured_utc=row.captured_utc,
    )


def unreadable_again(row: IntakeRow, exc: BadInputError) -> Frame:
    """The bytes are back but no longer decode: that cycle's ERROR, with the reason."""
    return Frame(row.part_id, None, row.locator, error=str(exc), captured_utc=row.captured_utc)


_ROWS_LOCATOR = re.compile(r"(?P<path>.*)#rows=(?P<start>\d+)-(?P<stop>\d+)")


def _table_digest(cycle: SignalTable) -> str:
    """The version of a cycle read from parquet: its columns' names and values."""
    digest = hashlib.sha256()
    for name, values in [("time", cycle.time_s), *cycle.columns.items()]:
        if values is not None:
            digest.update(name.encode() + values.tobytes())
    return digest.hexdigest()[:32]


class ParquetTailSource(LogTailSource):
    """Cycles from a parquet log that gains row groups (``kind: tail`` on a ``.parquet`` path).

    The logger rewrites the file with one more row group per flush (a parquet file is
    only readable once its footer is written), so the file is read again when its size
    or modification time changes, from the row group holding the first row not yet taken.
    The position remembered is ``<row group>:<row number>``; a locator is the cycle's row
    range (``PATH#rows=A-B``) and its version a digest of those rows, so a cycle taken but
    not answered is read again after a restart unless the log was rewritten meanwhile.
    A file with fewer rows than were taken was rotated: it is read from its start.
    """

    def __init__(
        self, cfg: TailConfig, events: EventSink, memory: SourceMemory | None = None
    ) -> None:
        super().__init__(cfg, events, memory)
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ConfigError(
                f"source {cfg.name}: tailing a parquet log needs pyarrow: "
                "pip install 'flowedge[robot]'"
            ) from None
        self._parquet = pq

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        path = Path(self.cfg.path)
        _, row = self._position()
        seen: tuple[int, int] | None = None
        outage = LogOutage(self.name, self.events)
        while not stop.is_set():
            try:
                stat = path.stat()
                if (stat.st_size, stat.st_mtime_ns) == seen:
                    stop.wait(self.poll_s)
                    continue
                reader = self._parquet.ParquetFile(path)
                seen = (stat.st_size, stat.st_mtime_ns)
                outage.ended()
            except ValueError:  # pyarrow.ArrowInvalid: the footer is not written yet
                stop.wait(self.poll_s)
                continue
            except OSError as exc:
                outage.failed(path, exc)
                stop.wait(self.poll_s)
                continue
            starts = self._group_starts(reader)
            if row > starts[-1]:  # fewer rows than were taken: a new log
                self.events(self.name, "source_reconnected", f"log {path} restarted")
                row = 0
            for frame, resume in self._cycles_from(reader, starts, row):
                row = resume
                yield frame
                if stop.is_set():
                    return
            stop.wait(self.poll_s)

    @staticmethod
    def _group_starts(reader: Any) -> list[int]:
        """The first row number of each row group, then the total row count."""
        starts = [0]
        for index in range(reader.metadata.num_row_groups):
            starts.append(starts[-1] + reader.metadata.row_group(index).num_rows)
        return starts

    def _read(self, reader: Any, starts: list[int], first: int, stop: int) -> SignalTable:
        """Rows ``first:stop`` (row numbers in the log), reading only the row groups holding them."""
        groups = [g for g in range(len(starts) - 1) if starts[g] < stop and starts[g + 1] > first]
        table = arrow_table(reader.read_row_groups(groups), f"{self.cfg.path}", self.fmt)
        offset = first - starts[groups[0]]
        part = table.rows(offset, offset + stop - first, table.name)
        part.first_row = first
        return part

    def _cycles_from(self, reader: Any, starts: list[int], row: int) -> Iterator[tuple[Frame, int]]:
        """Each complete cycle from row number ``row`` on, with the row to read on from."""
        if row >= starts[-1]:
            return
        try:
            table = self._read(reader, starts, row, starts[-1])
        except BadInputError as exc:
            log.warning("%s: %s", self.name, exc)
            self.events(self.name, "source_lost", f"{self.name}: {exc}")
            return
        for span in cycle_spans(table, self.segment, complete_only=True):
            resume = row + resume_row(self.segment, span, len(table))
            group = max(g for g, first in enumerate(starts[:-1]) if first <= resume)
            cycle = table.rows(span.start, span.stop, f"{self.name}:{span.cycle_id}")
            frame = cycle_frame(
                cycle,
                span.cycle_id,
                locator=f"{self.cfg.path}#rows={cycle.first_row}-{cycle.first_row + len(cycle)}",
                version=_table_digest(cycle),
                remember=(self.POSITION, f"{group}:{resume}"),
            )
            yield frame, resume

    def replay(self, row: IntakeRow) -> Frame:
        """A cycle taken before a restart but not answered, read again from its row range."""
        where = _ROWS_LOCATOR.fullmatch(row.locator or "")
        if row.error is not None or where is None:
            return replayed(row)
        first, stop = int(where["start"]), int(where["stop"])
        try:
            reader = self._parquet.ParquetFile(where["path"])
        except (OSError, ValueError):  # gone, or rewritten and not complete yet
            return gone(row)
        starts = self._group_starts(reader)
        if stop > starts[-1]:
            return gone(row)
        try:
            cycle = self._read(reader, starts, first, stop)
        except BadInputError as exc:
            return unreadable_again(row, exc)
        cycle.name = f"{self.name}:{row.part_id}"
        if _table_digest(cycle) != row.version:
            return gone(row)  # rotated or rewritten since
        return replayed_cycle(cycle, row)


def tail_source(
    cfg: TailConfig, events: EventSink, memory: SourceMemory | None = None
) -> LogTailSource:
    """The tail source for the log's format: parquet by its suffix, else CSV lines."""
    if Path(cfg.path).suffix.lower() == ".parquet":
        return ParquetTailSource(cfg, events, memory)
    return LogTailSource(cfg, events, memory)


def check(cfg: TailConfig, timeout_s: float) -> CheckResult:
    """The log is there and readable (a cycle only comes when the robot runs)."""
    name = f"source {cfg.name}"
    log_file = Path(cfg.path)
    if not log_file.is_file() or not os.access(log_file, os.R_OK):
        code = EXIT_DATA if log_file.is_file() else EXIT_USAGE  # unreadable, or not there
        return failed(name, f"log {log_file} is missing or unreadable; check sources[].path", code)
    return passed(name, f"tailing {log_file}")


KIND = SourceKind(TailConfig, lambda cfg, ctx: tail_source(cfg, ctx.events, ctx.memory), check)
