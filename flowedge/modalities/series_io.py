"""Machine-data logs (CSV from a controller's logger, voraus-AD style parquet) as signal tables.

Controller exports are rarely tidy: ``;`` separators, decimal commas, ISO or
numeric time stamps, empty trailing columns, label and counter columns beside
the signals. A :class:`LogFormat` (from config, or detected) says how to read
one; the result is a :class:`SignalTable` of float64 columns that the segmenter
(:mod:`flowedge.modalities.series_cycles`) cuts into cycles. Metadata columns
(labels, cycle ids, counters) are kept for segmenting and evaluation but are
never model inputs. CSV needs only numpy; parquet needs pyarrow (``robot`` extra).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from flowedge.core.errors import BadInputError, ConfigError
from flowedge.core.validation import RateHz, Strict

PARQUET_MAGIC = b"PAR1"
_SEPARATORS = (";", ",", "\t", "|")
_AUTO_TIME = ("time", "timestamp", "time_s", "t")
_TRUE, _FALSE = {"true", "yes", "on"}, {"false", "no", "off"}
MAX_LOG_BYTES = 512 * 2**20  # a larger file is refused before reading (station memory)


class LogFormat(Strict):
    """How to read one machine-data log (``sources[].log`` and the training readers)."""

    separator: str = Field("auto", description="CSV field separator, or auto (; , tab |)")
    decimal: Literal["auto", ".", ","] = "auto"
    # the time stamp column: seconds (numbers) or ISO 8601 text; None: rows come at rate_hz
    time_column: str | None = "auto"
    rate_hz: RateHz | None = Field(None, description="nominal rate; needed without time")
    cycle_column: str | None = None  # cycle / sample id, for segmenting by id
    signals: list[str] | None = None  # model inputs; None: every numeric non-meta column
    units: dict[str, str] = Field(default_factory=dict)
    meta_columns: list[str] = Field(default_factory=list)  # labels, counters: never inputs


# voraus-AD (thesis ch. 7): 130 signals, per-sample ``time``, metadata never used for learning
VORAUS_META = ("index", "time", "sample", "anomaly", "category", "setting", "action", "active")
VORAUS_FORMAT = LogFormat(time_column="time", cycle_column="sample", meta_columns=list(VORAUS_META))


@dataclass
class SignalTable:
    """Rows of a log: float64 columns, time stamps in seconds (or None) and where they came from.

    A cycle is a table too (a slice of rows, named ``<log>:<cycle id>``), so readers,
    segmenter and preprocessing all pass the same type.
    """

    name: str
    columns: dict[str, np.ndarray]
    time_s: np.ndarray | None = None
    rate_hz: float | None = None  # nominal, when the log has no time stamps
    signals: tuple[str, ...] = ()  # the input candidates, in file order
    units: dict[str, str] = field(default_factory=dict)
    first_row: int = 0  # row number of the first row in the source log (0 = first data row)

    def __len__(self) -> int:
        return 0 if not self.columns else len(next(iter(self.columns.values())))

    def rows(self, start: int, stop: int, name: str) -> SignalTable:
        """Rows ``start:stop`` as a table of their own called ``name``."""
        return SignalTable(
            name=name,
            columns={k: v[start:stop] for k, v in self.columns.items()},
            time_s=None if self.time_s is None else self.time_s[start:stop],
            rate_hz=self.rate_hz,
            signals=self.signals,
            units=self.units,
            first_row=self.first_row + start,
        )

    def times(self) -> np.ndarray:
        """Time stamps in seconds; without a time column, the row index at the nominal rate."""
        if self.time_s is not None:
            return self.time_s
        if not self.rate_hz:
            raise BadInputError(
                f"log {self.name}: no time column and no rate; set the log format's "
                "time_column or rate_hz"
            )
        return (self.first_row + np.arange(len(self))) / self.rate_hz


def _parse_number(text: str, decimal: str) -> float:
    value = text.strip()
    if not value:
        return np.nan
    lowered = value.lower()
    if lowered in _TRUE:
        return 1.0
    if lowered in _FALSE:
        return 0.0
    return float(value.replace(",", ".") if decimal == "," else value)


def _numeric(values: list[str], decimal: str) -> np.ndarray | None:
    """The column as float64, or None when some cell is not a number (text, ISO time)."""
    try:
        return np.array([_parse_number(v, decimal) for v in values], dtype=np.float64)
    except ValueError:
        return None


def _iso_seconds(values: list[str], name: str, column: str) -> np.ndarray:
    """ISO 8601 stamps (``Z`` or naive, both read as UTC) to POSIX seconds; empty -> NaN."""
    out = np.full(len(values), np.nan)
    for i, text in enumerate(values):
        stamp = text.strip().removesuffix("Z")
        if not stamp:
            continue
        try:
            out[i] = np.datetime64(stamp, "us").astype(np.int64) / 1e6
        except ValueError:
            raise BadInputError(
                f"log {name}: row {i + 1} of time column {column!r} is {text!r}, neither "
                "seconds nor ISO 8601; fix the logger or set time_column"
            ) from None
    return out


def detect_separator(header: str) -> str:
    counts = {sep: header.count(sep) for sep in _SEPARATORS}
    best = max(counts, key=counts.__getitem__)
    return best if counts[best] else ","


def detect_decimal(rows: list[list[str]], separator: str) -> str:
    """A decimal comma is only possible when the separator is not a comma and a cell has one."""
    if separator == ",":
        return "."
    sample = rows[:50]
    return "," if any("," in cell for row in sample for cell in row) else "."


def _resolve_time(names: list[str], fmt: LogFormat) -> str | None:
    if fmt.time_column != "auto":
        return fmt.time_column
    lowered = {n.lower(): n for n in names}
    return next((lowered[c] for c in _AUTO_TIME if c in lowered), None)


def parse_csv_text(text: str, name: str, fmt: LogFormat) -> SignalTable:
    """A CSV log's text as a table; header names are stripped, empty trailing columns dropped."""
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise BadInputError(f"log {name}: empty, no header line; check the logger's output")
    separator = detect_separator(lines[0]) if fmt.separator == "auto" else fmt.separator
    rows = list(csv.reader(lines, delimiter=separator))
    header = [h.strip() for h in rows[0]]
    body = [r for r in rows[1:] if any(cell.strip() for cell in r)]
    decimal = detect_decimal(body, separator) if fmt.decimal == "auto" else fmt.decimal
    width = len(header)
    for i, row in enumerate(body):
        if len(row) != width:
            raise BadInputError(
                f"log {name}: data row {i + 1} has {len(row)} fields, the header {width}; "
                f"the file is cut or mixes separators (separator {separator!r})"
            )
    cells = {h: [r[i] for r in body] for i, h in enumerate(header)}
    empty_named = [h for h in header if not h]
    if any(v.strip() for h in empty_named for v in cells.get(h, [])):
        raise BadInputError(f"log {name}: a column without a header holds data; name it")
    time_name = _resolve_time(header, fmt)
    columns: dict[str, np.ndarray] = {}
    time_s = None
    for h in header:
        if not h:
            continue  # trailing separators of controller exports
        parsed = _numeric(cells[h], decimal)
        if h == time_name:
            time_s = parsed if parsed is not None else _iso_seconds(cells[h], name, h)
        elif parsed is not None:
            columns[h] = parsed
    return _table(name, columns, time_s, time_name, fmt)


def _table(
    name: str,
    columns: dict[str, np.ndarray],
    time_s: np.ndarray | None,
    time_name: str | None,
    fmt: LogFormat,
) -> SignalTable:
    """Check the configured columns exist and pick the signals (never meta, time or cycle id)."""
    if time_name is not None and time_s is None and fmt.time_column != "auto":
        raise BadInputError(
            f"log {name}: time column {time_name!r} is not in the file; "
            f"columns are {', '.join(columns)}"
        )
    meta = {*fmt.meta_columns, *([fmt.cycle_column] if fmt.cycle_column else [])}
    wanted = fmt.signals if fmt.signals is not None else [c for c in columns if c not in meta]
    required = [*wanted, *([fmt.cycle_column] if fmt.cycle_column else [])]  # meta: optional
    missing = [c for c in required if c not in columns and c != time_name]
    if missing:
        raise BadInputError(
            f"log {name}: column(s) {', '.join(map(repr, missing))} missing or not numeric; "
            f"the file has {', '.join(columns)}: fix the log format's column names"
        )
    if time_s is None and fmt.rate_hz is None:
        raise BadInputError(
            f"log {name}: no time column found; set the log format's time_column or rate_hz"
        )
    return SignalTable(
        name=name,
        columns=columns,
        time_s=time_s,
        rate_hz=fmt.rate_hz,
        signals=tuple(wanted),
        units={s: fmt.units.get(s, "") for s in wanted},
    )


def parse_parquet(source: str | Path | bytes, name: str, fmt: LogFormat) -> SignalTable:
    """A parquet log (e.g. voraus-AD): numeric and boolean columns as float64."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(
            "reading parquet logs needs pyarrow: pip install 'flowedge[robot]'"
        ) from None
    try:
        handle = pa.BufferReader(source) if isinstance(source, bytes) else str(source)
        table = pq.read_table(handle)
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadInputError(f"log {name}: not a readable parquet file ({exc})") from None
    return arrow_table(table, name, fmt)


def arrow_table(table: Any, name: str, fmt: LogFormat) -> SignalTable:
    """A pyarrow table (a whole parquet log or some of its row groups) as a signal table."""
    import pyarrow as pa

    columns: dict[str, np.ndarray] = {}
    for column_name in table.column_names:
        column = table.column(column_name)
        if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
            columns[column_name] = column.to_numpy().astype(np.float64)
        elif pa.types.is_boolean(column.type):
            columns[column_name] = column.to_numpy(zero_copy_only=False).astype(np.float64)
    time_name = _resolve_time(list(columns), fmt)
    time_s = columns.pop(time_name) if time_name in columns else None
    return _table(name, columns, time_s, time_name, fmt)


def decode_log(data: bytes, name: str, fmt: LogFormat | None = None) -> SignalTable:
    """A log's bytes (parquet by its magic number, else UTF-8 CSV) as a table."""
    fmt = fmt or LogFormat()
    if data[:4] == PARQUET_MAGIC:
        return parse_parquet(data, name, fmt)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")  # older controllers write their locale's code page
    return parse_csv_text(text, name, fmt)


def read_log(path: str | Path, fmt: LogFormat | None = None) -> SignalTable:
    """Read a CSV or parquet log file; BadInputError naming the file when it cannot be used."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_LOG_BYTES:
            raise BadInputError(
                f"log {path}: {size / 2**20:.0f} MiB is more than {MAX_LOG_BYTES / 2**20:.0f} MiB; "
                "rotate the logger's files or tail the log with a series source"
            )
        if path.suffix.lower() == ".parquet":
            return parse_parquet(path, str(path), fmt or LogFormat())
        return decode_log(path.read_bytes(), str(path), fmt)
    except OSError as exc:
        raise BadInputError(f"log {path}: cannot be read ({exc.strerror or exc})") from None


def write_csv(table: SignalTable, path: str | Path, decimal: str = ".") -> None:
    """Write ``time`` plus every column as CSV (the generic layout the readers load)."""
    separator = ";" if decimal == "," else ","
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=separator, lineterminator="\n")
    names = list(table.columns)
    writer.writerow(["time", *names])
    matrix = np.column_stack([table.times(), *(table.columns[n] for n in names)])
    for row in matrix:
        cells = [repr(float(v)) for v in row]
        writer.writerow([c.replace(".", ",") for c in cells] if decimal == "," else cells)
    Path(path).write_text(buffer.getvalue(), encoding="utf-8")
