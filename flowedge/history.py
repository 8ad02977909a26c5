"""The station's history from Python: query its decisions, review them, export them.

    import flowedge.history as history

    for row in history.query("runs/history", decision="ANOMALY", since="2026-11-23"):
        print(row.part_id, row.score, row.input_path)
    history.review("runs/history", "false_alarm", by="anna", part_id="part_0042.png",
                   note="dust on the lens")

``history`` is the history sink's folder (``sinks[].path``) or its ``history.sqlite``;
reading never needs the station. The same functions back ``flowedge history``;
docs/history.md has the schema, the verdicts and the review loop.
"""

from __future__ import annotations

from pathlib import Path

from flowedge.calibration.history.export import DatasetReport, write_table
from flowedge.calibration.history.export import export_dataset as _export_dataset
from flowedge.calibration.history.query import HistoryRow, Query, select, utc_bound
from flowedge.calibration.history.review import Review, review, reviews_of
from flowedge.calibration.history.store import VERDICTS, opened

History = str | Path


def make_query(
    since: str | None = None,
    until: str | None = None,
    part_id: str | None = None,
    decision: str | None = None,
    source: str | None = None,
    verdict: str | None = None,
    reviewed: bool | None = None,
    limit: int | None = None,
) -> Query:
    """The filters as a :class:`Query`; times as ISO 8601 text (UTC when no offset)."""
    return Query(
        since=None if since is None else utc_bound(since, "since"),
        until=None if until is None else utc_bound(until, "until"),
        part_id=part_id,
        decision=decision,
        source=source,
        verdict=verdict,
        reviewed=reviewed,
        limit=limit,
    )


def query(history: History, **filters: object) -> list[HistoryRow]:
    """The decisions matching the filters of :func:`make_query`, oldest first."""
    with opened(history) as db:
        return select(db, make_query(**filters))  # type: ignore[arg-type]


def export_table(history: History, out: str | Path, **filters: object) -> int:
    """Write the matching decisions to ``out`` (.csv, or .parquet with pyarrow); how many."""
    rows = query(history, **filters)
    write_table(rows, Path(out))
    return len(rows)


def export_dataset(
    history: History,
    out: str | Path,
    holdout: float = 0.2,
    base: str | Path | None = None,
    **filters: object,
) -> DatasetReport:
    """Write the reviewed samples as an MVTec-like training set (see
    :mod:`flowedge.calibration.history.export`)."""
    with opened(history) as db:
        return _export_dataset(
            db,
            Path(out),
            make_query(**filters),  # type: ignore[arg-type]
            holdout,
            None if base is None else Path(base),
        )


__all__ = [
    "VERDICTS",
    "DatasetReport",
    "HistoryRow",
    "Review",
    "export_dataset",
    "export_table",
    "make_query",
    "query",
    "review",
    "reviews_of",
]
