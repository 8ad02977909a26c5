"""A growing machine-data log (a robot controller's logger appending CSV lines), cut into cycles.

The log is polled; complete lines after the last cycle taken are parsed with the
source's log format and cut by its segmenter in streaming mode (a cycle counts
once the next one has started, the trigger has fallen, or a window is full). Each
cycle is a :class:`Frame` whose payload is the cycle itself. The byte offset and
row number after the last cycle taken (and where the header in force starts) are
remembered in the spool with the intake journal row, so after a restart the log is
read on from there: no cycle is taken twice and none is skipped. Each cycle's locator
is its byte range in the log (``PATH#bytes=A-B&row=R&header=H``) and its version a
digest of those bytes (with the header), so a cycle that was taken but not answered when the station stopped is
read again from the log and scored after the restart; only when the log was
rotated or rewritten meanwhile is it answered ERROR. A file that shrinks was
rotated: it is read from its start. Bad rows, header lines mid-file and holes of NUL
bytes are answered ERROR and passed over (:mod:`flowedge.edge.sources.tail_lines`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
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
from flowedge.edge.sources.tail_lines import MAX_LINE, Line, hole, rows_text, split_lines
from flowedge.edge.spool import IntakeRow
from flowedge.modalities.series_cycles import CycleSpan, SegmentConfig, cycle_spans, id_text
from flowedge.modalities.series_io import LogFormat, SignalTable, arrow_table, decode_log

log = logging.getLogger(__name__)

MAX_READ = 16 * 2**20  # bytes of log read at a time: a 2 GiB log is taken a slice at a time


class TailConfig(SourceBaseConfig):
    kind: Literal["tail"] = "tail"
    modality: Literal["series"] = "series"  # cycles of named signals
    path: BoundedPath = Field(
        description="the log file the logger appends to (CSV lines or parquet)"
    )
    log: LogFormat | None = None  # how to read it; None: the defaults
    segment: SegmentConfig | None = None  # how to cut it into cycles; None: fixed windows


_LOCATOR = re.compile(
    r"(?P<path>.*)#bytes=(?P<start>\d+)-(?P<stop>\d+)&row=(?P<row>\d+)(&header=(?P<header>\d+))?"
)


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

    def failed(self, path: Path, why: object) -> None:
        if not self.reported:
            self.events(self.name, "source_lost", f"log {path} cannot be read: {why}")
            self.reported = True

    def ended(self) -> None:
        self.reported = False


class UnusableHeader(Exception):
    """The log's header line cannot be one (a source outage until the log is replaced)."""


@dataclass
class Position:
    """Where the log is read on from: the first byte and row not taken, the header's byte."""

    offset: int = 0
    row: int = 0
    header_at: int = 0

    def text(self) -> str:
        return f"{self.offset}:{self.row}:{self.header_at}"

    @classmethod
    def parse(cls, text: str | None) -> Position:
        """``offset:row[:header]`` (a position written before header changes has two parts)."""
        parts = [int(part) for part in text.split(":")] if text else []
        return cls(*parts)


@dataclass(frozen=True)
class Chunk:
    """Complete lines of the log read at ``base`` after ``header``, and what stops them: the
    end of what the logger has written, or the start of a line too long to be a row."""

    header: bytes
    base: int
    data: bytes
    lines: list[Line]
    full: bool  # all of a read, as large as a read may be, from a row on: more is waiting


class LogTailSource:
    """Cycles from a CSV log that grows (``kind: tail``).

    The log is read at most ``MAX_READ`` bytes at a time (a 2 GiB log is never read whole),
    its lines classified (:mod:`flowedge.edge.sources.tail_lines`): a bad row is answered
    ERROR on its own, a header line mid-file or a hole of NUL bytes cuts the cycle running
    into it short (answered ERROR) and a new header names the columns after it.
    """

    modality = "series"
    poll_s = 0.1
    POSITION = "position"  # memory key: Position.text() after the last cycle taken

    def __init__(
        self, cfg: TailConfig, events: EventSink, memory: SourceMemory | None = None
    ) -> None:
        self.name, self.cfg, self.events, self.memory = cfg.name, cfg, events, memory
        self.fmt = cfg.log or LogFormat()
        self.segment = cfg.segment or SegmentConfig(mode="window")
        self.at = Position()
        self.skipping = False  # inside a line too long to be a row: read on to its end
        self.answered_to = 0  # byte offset: the bad lines before it are answered

    def _position(self) -> Position:
        stored = self.memory.recall(self.name).get(self.POSITION) if self.memory else None
        return Position.parse(stored)

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        path = Path(self.cfg.path)
        self.at = self._position()
        outage = LogOutage(self.name, self.events)
        while not stop.is_set():
            try:
                chunk, more = self._read(path)
                outage.ended()
            except (OSError, UnusableHeader) as exc:
                outage.failed(path, exc)
                stop.wait(self.poll_s)
                continue
            for frame in self._frames_of(chunk) if chunk else ():
                yield frame
                if stop.is_set():
                    return
            if not more:  # read on at once while a read comes back full
                stop.wait(self.poll_s)

    def _read(self, path: Path) -> tuple[Chunk | None, bool]:
        """The next chunk of complete lines (None while nothing complete is there), and
        whether more is waiting."""
        size = path.stat().st_size
        with open(path, "rb") as handle:
            if size < self.at.offset:  # rotated or truncated: a new log
                self.events(self.name, "source_reconnected", f"log {path} restarted")
                self.at, self.skipping, self.answered_to = Position(), False, 0
            handle.seek(self.at.header_at)
            header = handle.readline(MAX_LINE + 1)
            if len(header) > MAX_LINE:
                raise UnusableHeader(
                    f"its header line (byte {self.at.header_at}) is longer than {MAX_LINE} "
                    "bytes: no CSV header; replace the log"
                )
            if not header.endswith(b"\n"):
                return None, False  # the logger is writing the header
            self.at.offset = max(self.at.offset, self.at.header_at + len(header))
            handle.seek(self.at.offset)
            data = handle.read(MAX_READ)
        more = len(data) == MAX_READ
        if self.skipping:
            data = self._skip(data)
        ended = data.rfind(b"\n") + 1
        lines = split_lines(header, data[:ended], self.at.row, self.fmt)
        if len(data) - ended > MAX_LINE:  # a line too long to be a row, not ended yet
            lines.append(hole(ended, len(data), self.at.row + len(lines)))
        elif not lines:
            return None, more
        return Chunk(header, self.at.offset, data, lines, len(data) == MAX_READ), more

    def _skip(self, data: bytes) -> bytes:
        """Pass over the rest of a line too long to be a row."""
        end = data.find(b"\n") + 1
        self.skipping = not end
        self.at.offset += end if end else len(data)
        return data[end:] if end else b""

    def _frames_of(self, chunk: Chunk) -> Iterator[Frame]:
        """Each run of lines up to a break, then the break (a header line, a hole)."""
        header, first, before = chunk.header, 0, self.at.offset
        for index, line in enumerate(chunk.lines):
            if line.breaks:
                yield from self._cycles(chunk, header, chunk.lines[first:index], line)
                header = chunk.data[line.start : line.end] if line.kind == "header" else header
                first = index + 1
        if first < len(chunk.lines):
            yield from self._cycles(chunk, header, chunk.lines[first:], None)
        if chunk.full and self.at.offset == before and not self.skipping:
            yield self._too_long(chunk)

    def _cycles(
        self, chunk: Chunk, header: bytes, lines: list[Line], brk: Line | None
    ) -> Iterator[Frame]:
        """The complete cycles of ``lines`` and, with a break ``brk`` after them, whatever
        is left before it; each bad line answered in its place in the log."""
        rows = [line for line in lines if line.kind == "row"]
        bad = [line for line in lines if line.kind == "bad"]
        table, problem = self._table(chunk, header, lines, rows)
        spans = [] if table is None else cycle_spans(table, self.segment, complete_only=True)
        for span in spans:
            resume = resume_row(self.segment, span, len(rows))
            following = rows[resume] if resume < len(rows) else None
            position = Position(
                chunk.base + (following.start if following else rows[-1].end),
                following.row if following else rows[-1].row + 1,
                self.at.header_at,
            )
            end = chunk.base + rows[span.stop - 1].end
            yield from self._bad_lines(chunk, bad, end)  # inside the cycle or before it
            # bad lines between the cycle and the next: the position stops at the first,
            # each then answered moves it past itself
            waiting = [line for line in bad if end <= chunk.base + line.start < position.offset]
            stop_at = self._at(chunk, waiting[0]) if waiting else position
            yield self._cycle(chunk, header, table, rows, span, stop_at)
            yield from self._bad_lines(chunk, bad, position.offset, remember=True)
            self.at = position
        if problem is not None:  # the rows cannot be read at all: answered ERROR, passed over
            yield from self._last_remembers(
                [*self._bad_lines(chunk, bad, chunk.base + lines[-1].end)],
                self._rows_error(rows, problem),
                self._after(chunk, lines[-1]),
            )
        elif brk is not None:
            yield from self._break(chunk, table, rows, bad, brk)
        else:  # bad lines before the rows still waiting for their cycle's end are answered
            waiting = [row for row in rows if chunk.base + row.start >= self.at.offset]
            before = chunk.base + (waiting[0].start if waiting else lines[-1].end)
            yield from self._bad_lines(chunk, bad, before, remember=True)

    def _break(
        self, chunk: Chunk, table: SignalTable | None, rows: list[Line], bad: list[Line], brk: Line
    ) -> Iterator[Frame]:
        """A header line or a hole: the rows of the cycle running into it are cut short."""
        after = self._after(chunk, brk)
        frames = [*self._bad_lines(chunk, bad, chunk.base + brk.start)]
        left = [row for row in rows if chunk.base + row.start >= self.at.offset]
        if left:
            cut = "a header line" if brk.kind == "header" else "a line too long to be a row"
            cycle_id = self._cycle_id(table, rows.index(left[0]))
            frames.append(
                self._rows_error(left, f"cut short by {cut} at data row {brk.row + 1}", cycle_id)
            )
        if brk.kind == "header":
            after.header_at = chunk.base + brk.start
            self.events(
                self.name,
                "source_reconnected",
                f"log {self.cfg.path}: a header line at data row {brk.row + 1} (the logger "
                "restarted): the rows after it are read with its columns",
            )
        else:
            frames.append(self._line_error(brk))
            self.skipping = brk.end == len(chunk.data)  # its end is not read yet
        yield from self._last_remembers(frames[:-1], frames[-1] if frames else None, after)

    def _last_remembers(
        self, frames: list[Frame], last: Frame | None, position: Position
    ) -> Iterator[Frame]:
        """``frames`` then ``last``, which remembers ``position`` (the log is read on there)."""
        yield from frames
        self.at = position
        if last is not None:
            yield replace(last, remember=(self.POSITION, position.text()))

    def _table(
        self, chunk: Chunk, header: bytes, lines: list[Line], rows: list[Line]
    ) -> tuple[SignalTable | None, str | None]:
        """The rows as a table, or why they cannot be read (a text in a numeric column...)."""
        if not rows:
            return None, None
        try:
            table = decode_log(rows_text(header, chunk.data, lines), f"{self.cfg.path}", self.fmt)
        except BadInputError as exc:
            return None, str(exc)
        table.first_row = rows[0].row
        return table, None

    def _after(self, chunk: Chunk, line: Line) -> Position:
        """The position just after ``line``."""
        return Position(chunk.base + line.end, line.row + 1, self.at.header_at)

    def _at(self, chunk: Chunk, line: Line) -> Position:
        """The position of ``line`` itself (it is read again from there)."""
        return Position(chunk.base + line.start, line.row, self.at.header_at)

    def _bad_lines(
        self, chunk: Chunk, bad: list[Line], before: int, remember: bool = False
    ) -> Iterator[Frame]:
        """The ERROR of each bad line before byte ``before`` not answered yet; ``remember``:
        each moves the position past it."""
        for line in bad:
            if self.answered_to <= chunk.base + line.start < before:
                self.answered_to = chunk.base + line.end
                frame = self._line_error(line)
                if remember:
                    self.at = self._after(chunk, line)
                    frame = replace(frame, remember=(self.POSITION, self.at.text()))
                yield frame

    def _line_error(self, line: Line) -> Frame:
        return Frame(f"row-{line.row + 1}", None, error=f"log {self.cfg.path}: {line.problem}")

    def _rows_error(self, rows: list[Line], why: str, cycle_id: str | None = None) -> Frame:
        """Rows that form no cycle that can be scored: one ERROR, named by their cycle id
        where the segmenter has one, else by the first row."""
        first, last = rows[0].row + 1, rows[-1].row + 1
        where = f"data row {first}" if first == last else f"data rows {first}-{last}"
        return Frame(
            cycle_id or f"row-{first}",
            None,
            error=f"log {self.cfg.path}: {where}: {why}; answered ERROR",
        )

    def _cycle_id(self, table: SignalTable | None, index: int) -> str | None:
        """The cycle id of row ``index`` of ``table`` (segmenting by cycle id), else None."""
        column = self.segment.column or ""
        if table is None or self.segment.mode != "cycle_id" or column not in table.columns:
            return None
        value = float(table.columns[column][index])
        return id_text(value) if np.isfinite(value) else None

    def _cycle(
        self,
        chunk: Chunk,
        header: bytes,
        table: SignalTable,
        rows: list[Line],
        span: CycleSpan,
        position: Position,
    ) -> Frame:
        first, last = rows[span.start].start, rows[span.stop - 1].end
        cycle = table.rows(span.start, span.stop, f"{self.name}:{span.cycle_id}")
        cycle.first_row = rows[span.start].row
        locator = f"{self.cfg.path}#bytes={chunk.base + first}-{chunk.base + last}"
        locator += f"&row={cycle.first_row}&header={position.header_at}"
        return cycle_frame(
            cycle,
            span.cycle_id,
            locator=locator,
            version=_digest(header, chunk.data[first:last]),
            remember=(self.POSITION, position.text()),
        )

    def _too_long(self, chunk: Chunk) -> Frame:
        """A whole read of rows without one complete cycle: the segmenter never cuts them."""
        rows = [line for line in chunk.lines if line.kind == "row"] or chunk.lines
        why = (
            f"more than {MAX_READ} bytes of log without one complete cycle; check sources[].segment"
        )
        position = self._after(chunk, chunk.lines[-1])
        self.at, self.answered_to = position, position.offset
        return replace(self._rows_error(rows, why), remember=(self.POSITION, position.text()))

    def replay(self, row: IntakeRow) -> Frame:
        """A cycle taken before a restart but not answered, read again from its byte range."""
        where = _LOCATOR.fullmatch(row.locator or "")
        if row.error is not None or where is None:
            return replayed(row)  # the journal's general rule
        start, stop = int(where["start"]), int(where["stop"])
        try:
            with open(where["path"], "rb") as handle:
                handle.seek(int(where["header"] or 0))
                header = handle.readline(MAX_LINE + 1)
                handle.seek(start)
                rows = handle.read(stop - start)
        except OSError:
            return gone(row)
        if _digest(header, rows) != row.version:
            return gone(row)  # rotated or rewritten since
        lines = split_lines(header, rows, int(where["row"]), self.fmt)
        try:
            cycle = decode_log(
                rows_text(header, rows, lines), f"{self.name}:{row.part_id}", self.fmt
            )
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
        row = self._position().row  # parquet: "<row group>:<row>"
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
