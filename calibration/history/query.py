"""Reading the history: decisions by time range, part id, decision, sensor and review.

Each row comes with its latest review (the latest wins; :mod:`.review` keeps them all)
and its evidence as paths on this machine. :func:`documents` gives a sensor's decisions
exactly as they were published, for sending a range of them again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path

from flowedge.calibration.history.retention import utc_text
from flowedge.calibration.history.store import VERDICTS, HistoryDB
from flowedge.core.decision import DECISIONS
from flowedge.core.errors import ConfigError


@dataclass(frozen=True)
class Query:
    """Which decisions; every given filter must hold. Times are UTC bounds on the capture
    time (``since`` included, ``until`` excluded), in the stored format (:func:`utc_bound`)."""

    since: str | None = None
    until: str | None = None
    part_id: str | None = None
    decision: str | None = None
    source: str | None = None
    seq: int | None = None  # with source: one decision
    verdict: str | None = None  # the latest review's verdict
    reviewed: bool | None = None  # True: reviewed only, False: not reviewed only
    limit: int | None = None  # only the newest this many (still oldest first)

    def __post_init__(self) -> None:
        if self.decision is not None and self.decision not in DECISIONS:
            raise ConfigError(f"decision {self.decision!r}: use one of {', '.join(DECISIONS)}")
        if self.verdict is not None and self.verdict not in VERDICTS:
            raise ConfigError(f"verdict {self.verdict!r}: use one of {', '.join(VERDICTS)}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be at least 1 (got {self.limit})")


@dataclass(frozen=True)
class HistoryRow:
    """One decision as the history holds it, with its latest review (the export's columns)."""

    site: str
    station: str
    source: str
    seq: int
    part_id: str
    captured_utc: str
    decided_utc: str
    modality: str | None
    decision: str
    score: float | None
    threshold: float | None
    normalised_score: float | None
    error: str | None
    model_id: str | None
    weights_sha256: str | None
    calibration_sha256: str | None
    backend: str | None
    drift: str | None
    input_path: str | None  # the kept input on this machine, None when none is kept
    heatmap_path: str | None
    verdict: str | None
    reviewed_by: str | None
    reviewed_utc: str | None
    review_note: str | None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


COLUMNS = tuple(f.name for f in fields(HistoryRow))
_STORED = COLUMNS[: COLUMNS.index("verdict")]

# each decision with its latest review, if any
_SELECT = (
    "SELECT "
    + ", ".join(f"d.{name}" for name in _STORED)
    + ", r.verdict, r.reviewer, r.utc, r.note FROM decisions d LEFT JOIN reviews r ON r.id = "
    "(SELECT MAX(id) FROM reviews x WHERE x.source = d.source AND x.seq = d.seq)"
)


def utc_bound(text: str, flag: str) -> str:
    """A time a person typed (``2026-11-23``, ``2026-11-23T08:00``, with ``Z`` or an offset;
    no offset: UTC) in the stored format; ConfigError naming ``flag`` otherwise."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"{flag} {text!r} is not a date or time; use ISO 8601, e.g. 2026-11-23 or "
            "2026-11-23T08:00Z (UTC when no offset is given)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return utc_text(moment.astimezone(UTC))


def select(db: HistoryDB, query: Query) -> list[HistoryRow]:
    """The matching decisions, oldest capture first (with ``limit``: the newest ones)."""
    where, params = [], []
    for column, value in (
        ("d.part_id = ?", query.part_id),
        ("d.decision = ?", query.decision),
        ("d.source = ?", query.source),
        ("d.seq = ?", query.seq),
        ("d.captured_utc >= ?", query.since),
        ("d.captured_utc < ?", query.until),
        ("r.verdict = ?", query.verdict),
    ):
        if value is not None:
            where.append(column)
            params.append(value)
    if query.reviewed is not None:
        where.append("r.id IS NOT NULL" if query.reviewed else "r.id IS NULL")
    sql = _SELECT + (" WHERE " + " AND ".join(where) if where else "")
    if query.limit is None:
        rows = db.rows(sql + " ORDER BY d.captured_utc, d.source, d.seq", tuple(params))
    else:
        newest = " ORDER BY d.captured_utc DESC, d.source DESC, d.seq DESC LIMIT ?"
        rows = db.rows(sql + newest, (*params, query.limit))[::-1]
    return [_row(db, row) for row in rows]


def _row(db: HistoryDB, row: tuple) -> HistoryRow:
    values = dict(zip(COLUMNS, tuple(row), strict=True))
    for key in ("input_path", "heatmap_path"):
        path: Path | None = db.resolve(values[key])
        values[key] = None if path is None else str(path)
    return HistoryRow(**values)


def documents(db: HistoryDB, source: str, first: int, last: int) -> list[bytes]:
    """The decisions ``first``..``last`` of ``source`` exactly as published, in seq order
    (what a historian asks the station to send again; gaps are decisions forgotten by
    retention or never delivered to the history)."""
    rows = db.rows(
        "SELECT document FROM decisions WHERE source = ? AND seq BETWEEN ? AND ? ORDER BY seq",
        (source, first, last),
    )
    return [bytes(row[0]) for row in rows]
