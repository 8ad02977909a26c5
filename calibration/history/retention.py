"""What the history forgets, and in which order: by age, then by disk budget.

Records (decisions, events, reviews: the database) and evidence (the kept files) have
their own limits. Evidence of ANOMALY decisions is kept longer than that of OK ones, and
reviewed samples (records and evidence) longest: they are what recalibration and
retraining learn from. Under a budget the lowest class goes first, oldest first:
ordinary (OK, ERROR; events with them), then ANOMALY, then reviewed. The newest records
therefore survive a full budget; nothing is deleted that is younger than its class's
age unless a budget needs the room.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flowedge.calibration.history.store import (
    ANOMALY,
    EVIDENCE_FOLDER,
    ORDINARY,
    REVIEWED,
    HistoryDB,
)

log = logging.getLogger(__name__)

CHUNK = 500  # rows per step under a budget: each step is one short transaction
BUDGET_TARGET = 0.9  # a budget that is exceeded is brought down to this share of it
KEPT = "(input_path IS NOT NULL OR heatmap_path IS NOT NULL)"  # a decision with evidence


def utc_text(moment: datetime) -> str:
    """The stored time format (ISO 8601 UTC, milliseconds, Z), which sorts as text."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class Retention:
    """Ages in days, budgets in bytes (the sink's config in docs/history.md)."""

    keep_days: float  # unreviewed decisions and events
    reviewed_keep_days: float  # reviewed decisions with their reviews and evidence
    evidence_keep_days: float  # evidence of OK decisions
    anomaly_keep_days: float  # evidence of ANOMALY decisions
    keep_bytes: float  # the database
    evidence_keep_bytes: float  # the evidence files


@dataclass
class Pruned:
    """What one pass deleted."""

    decisions: int = 0
    events: int = 0
    evidence_files: int = 0
    evidence_bytes: int = 0
    failed: list[str] = field(default_factory=list)  # files that could not be deleted

    def __bool__(self) -> bool:
        return bool(self.decisions or self.events or self.evidence_files)


def enforce(db: HistoryDB, rules: Retention, now: datetime) -> Pruned:
    """Apply the ages, then the budgets; safe to run at any time (each step is committed)."""
    pruned = Pruned()
    evidence_days = {ORDINARY: rules.evidence_keep_days, ANOMALY: rules.anomaly_keep_days}
    record_days = {ORDINARY: rules.keep_days, ANOMALY: rules.keep_days}
    evidence_days[REVIEWED] = record_days[REVIEWED] = rules.reviewed_keep_days
    for keep_class, days in evidence_days.items():
        cutoff = utc_text(now - timedelta(days=days))
        _drop_evidence(db, "keep_class = ? AND captured_utc < ?", (keep_class, cutoff), pruned)
    for keep_class, days in record_days.items():
        cutoff = utc_text(now - timedelta(days=days))
        _drop_decisions(db, "keep_class = ? AND captured_utc < ?", (keep_class, cutoff), pruned)
    with db.transaction():
        cutoff = utc_text(now - timedelta(days=rules.keep_days))
        pruned.events += db.db.execute("DELETE FROM events WHERE utc < ?", (cutoff,)).rowcount
    _evidence_budget(db, rules.evidence_keep_bytes, pruned)
    _records_budget(db, rules.keep_bytes, pruned)
    if pruned:
        log.info(
            "history %s: retention deleted %d decision(s), %d event(s), %d evidence file(s)",
            db.folder,
            pruned.decisions,
            pruned.events,
            pruned.evidence_files,
        )
    return pruned


def sweep_orphans(db: HistoryDB) -> int:
    """Delete evidence files no decision refers to (a write or a deletion that a crash cut
    short); run before the sink writes. Returns how many went."""
    root = db.folder / EVIDENCE_FOLDER
    if not root.is_dir():
        return 0
    referenced = {
        path
        for row in db.rows(f"SELECT input_path, heatmap_path FROM decisions WHERE {KEPT}")
        for path in row
        if path
    }
    gone = 0
    for path in root.rglob("*"):
        if path.is_file() and path.relative_to(db.folder).as_posix() not in referenced:
            path.unlink(missing_ok=True)
            gone += 1
    return gone


def evidence_bytes(db: HistoryDB) -> int:
    return int(db.value("SELECT COALESCE(SUM(evidence_bytes), 0) FROM decisions"))


def _evidence_budget(db: HistoryDB, budget: float, pruned: Pruned) -> None:
    excess = evidence_bytes(db) - budget
    if excess <= 0:
        return
    excess += budget * (1 - BUDGET_TARGET)
    while excess > 0:
        oldest = db.rows(
            "SELECT rowid, evidence_bytes FROM decisions WHERE evidence_bytes > 0 "
            "ORDER BY keep_class, captured_utc LIMIT ?",
            (CHUNK,),
        )
        if not oldest:
            return
        chosen = []
        for rowid, size in oldest:
            chosen.append(rowid)
            excess -= size
            if excess <= 0:
                break
        _drop_evidence(db, f"rowid IN ({','.join('?' * len(chosen))})", tuple(chosen), pruned)


def _records_budget(db: HistoryDB, budget: float, pruned: Pruned) -> None:
    if db.used_bytes() <= budget:
        return
    target = budget * BUDGET_TARGET
    for keep_class in (ORDINARY, ANOMALY, REVIEWED):
        while (excess := db.used_bytes() - target) > 0:
            oldest = db.rows(
                "SELECT rowid, captured_utc FROM decisions WHERE keep_class = ? "
                "ORDER BY captured_utc LIMIT ?",
                (keep_class, _rows_for(db, excess)),
            )
            if not oldest:
                break
            marks = ",".join("?" * len(oldest))
            _drop_decisions(db, f"rowid IN ({marks})", tuple(r[0] for r in oldest), pruned)
            if keep_class == ORDINARY:  # the events of that time go with them
                with db.transaction():
                    gone = db.db.execute("DELETE FROM events WHERE utc <= ?", (oldest[-1][1],))
                    pruned.events += gone.rowcount
    while db.used_bytes() > target:  # only events left to give
        with db.transaction():
            gone = db.db.execute(
                "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT ?)",
                (CHUNK,),
            )
        if not gone.rowcount:
            return
        pruned.events += gone.rowcount


def _rows_for(db: HistoryDB, excess: int) -> int:
    """About how many decision rows free ``excess`` bytes (their average size), 1 to CHUNK."""
    rows = int(db.value("SELECT COUNT(*) FROM decisions")) + int(
        db.value("SELECT COUNT(*) FROM events")
    )
    average = db.used_bytes() / max(rows, 1)
    return max(1, min(CHUNK, math.ceil(excess / max(average, 1.0))))


def _drop_evidence(db: HistoryDB, where: str, params: tuple, pruned: Pruned) -> None:
    """Delete the evidence files of the matching decisions; the records stay."""
    _drop(db, f"{KEPT} AND {where}", params, pruned, records=False)


def _drop_decisions(db: HistoryDB, where: str, params: tuple, pruned: Pruned) -> None:
    """Delete the matching decisions with their reviews and evidence files."""
    _drop(db, where, params, pruned, records=True)


def _drop(db: HistoryDB, where: str, params: tuple, pruned: Pruned, records: bool) -> None:
    with db.transaction():
        rows = db.rows(
            f"SELECT rowid, input_path, heatmap_path, evidence_bytes, source, seq "
            f"FROM decisions WHERE {where}",
            params,
        )
        if records:
            keys = [(row[4], row[5]) for row in rows]
            db.db.executemany("DELETE FROM reviews WHERE source = ? AND seq = ?", keys)
            db.db.executemany("DELETE FROM decisions WHERE source = ? AND seq = ?", keys)
            pruned.decisions += len(rows)
        else:
            db.db.executemany(
                "UPDATE decisions SET input_path = NULL, heatmap_path = NULL, "
                "evidence_bytes = 0 WHERE rowid = ?",
                [(row[0],) for row in rows],
            )
    _unlink(db, rows, pruned)


def _unlink(db: HistoryDB, rows: list, pruned: Pruned) -> None:
    """The files go after the commit: a crash leaves an unreferenced file (swept at the next
    start), never a row pointing at nothing."""
    for row in rows:
        pruned.evidence_bytes += int(row[3])
        for relative in (row[1], row[2]):
            path = db.resolve(relative)
            if path is None:
                continue
            try:
                path.unlink(missing_ok=True)
                pruned.evidence_files += 1
            except OSError as exc:
                pruned.failed.append(f"{path} ({exc})")
