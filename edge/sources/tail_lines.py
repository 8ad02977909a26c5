"""The lines of a growing CSV log as the tail source sees them: rows, bad lines, breaks.

Loggers are not tidy. A glitch writes a row with more or fewer fields than the header;
a logger that restarts writes a new header line mid-file (its columns may be others);
a crash leaves a hole of NUL bytes, one "line" megabytes long. A bad line is answered
ERROR on its own and the rows around it are read as if it were not there (like a
dropped telegram); a header line or a hole is a *break*: the cycle running into it is
cut short, and the rows after a header line are read with its columns.

Row numbers count the non-blank lines after the log's first line from 0 (messages show
them from 1, as "data row N").
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import Literal

from flowedge.modalities.series_io import LogFormat, detect_separator

MAX_LINE = 2**20  # bytes: a longer line is no log row (binary junk, a hole of NUL bytes)
_BLANK = b" \t\r\n;,|"


@dataclass(frozen=True)
class Line:
    """One non-blank line of a chunk: its bytes ``start:end`` (in the chunk) and what it is."""

    start: int
    end: int
    row: int  # row number in the log
    kind: Literal["row", "bad", "header", "hole"] = "row"
    problem: str = ""  # a bad line or a hole: why it is no row

    @property
    def breaks(self) -> bool:
        """A header line or a hole: the cycle before it cannot go on after it."""
        return self.kind in ("header", "hole")


def hole(start: int, end: int, row: int) -> Line:
    """A line longer than any log row (``end`` may not be its end yet)."""
    return Line(
        start,
        end,
        row,
        "hole",
        f"data row {row + 1} is a line of {end - start} bytes or more, no log row (a hole of "
        "NUL bytes left by a crash, or binary data): answered ERROR and passed over",
    )


def _text(line: bytes) -> str:
    try:
        return line.decode("utf-8-sig")
    except UnicodeDecodeError:
        return line.decode("latin-1")  # as the log reader does


def _cells(line: bytes, separator: str) -> list[str]:
    return next(csv.reader([_text(line).rstrip("\r\n")], delimiter=separator), [])


def _number(cell: str) -> bool:
    text = cell.strip().lower()
    if text in ("true", "false", "yes", "no", "on", "off"):
        return True
    try:
        float(text.replace(",", "."))
    except ValueError:
        return False
    return True


class Columns:
    """The header a row is read with: its separator, width and names."""

    def __init__(self, header: bytes, fmt: LogFormat) -> None:
        text = _text(header)
        self.separator = detect_separator(text) if fmt.separator == "auto" else fmt.separator
        self.fmt = fmt
        cells = _cells(header, self.separator)
        self.width = len(cells)
        self.names = {c.strip() for c in cells if c.strip()}

    def is_header(self, cells: list[str]) -> bool:
        """Column names: no cell a number, at least two names, and either another width or a
        name of this header (a row of text cells and empty values is a row, not a header)."""
        names = {c.strip() for c in cells if c.strip()}
        if len(names) < 2 or any(_number(c) for c in cells if c.strip()):
            return False
        return len(cells) != self.width or bool(names & self.names)


def split_lines(header: bytes, data: bytes, first_row: int, fmt: LogFormat) -> list[Line]:
    """Every non-blank line of ``data`` (complete lines after ``header``), classified."""
    columns = Columns(header, fmt)
    lines, start, row = [], 0, first_row
    while (end := data.find(b"\n", start)) >= 0:
        end += 1
        line = data[start:end]
        if line.strip(_BLANK):
            lines.append(_classify(line, start, end, row, columns))
            if lines[-1].kind == "header":
                columns = Columns(line, fmt)
            row += 1
        start = end
    return lines


def _classify(line: bytes, start: int, end: int, row: int, columns: Columns) -> Line:
    if end - start > MAX_LINE:
        return hole(start, end, row)
    cells = _cells(line, columns.separator)
    if columns.is_header(cells):
        return Line(start, end, row, "header")
    if len(cells) != columns.width:
        return Line(
            start,
            end,
            row,
            "bad",
            f"data row {row + 1} has {len(cells)} fields, the header {columns.width} (separator "
            f"{columns.separator!r}): a glitch of the logger; answered ERROR and passed over",
        )
    return Line(start, end, row)


def rows_text(header: bytes, data: bytes, lines: list[Line]) -> bytes:
    """The header and the rows among ``lines``: what the log reader decodes."""
    return header + b"".join(data[line.start : line.end] for line in lines if line.kind == "row")
