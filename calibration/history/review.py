"""A reviewer's verdict on one decision: what the part really was.

``confirmed_anomaly`` and ``false_alarm`` answer an ANOMALY, ``missed_defect`` and
``confirmed_normal`` an OK (an ERROR was never scored: there is nothing to judge).
Each review is a row of its own (who, when, verdict, note) and the latest one counts,
so a mistaken review is corrected by another and the history of reviews stays. A
reviewed decision is kept longest by retention. Who reviewed is what the reviewer
says (``by``): write access to the history folder decides who may review.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from flowedge.calibration.history.query import HistoryRow, Query, select
from flowedge.calibration.history.retention import utc_text
from flowedge.calibration.history.store import REVIEWED, VERDICTS, HistoryDB, opened
from flowedge.core.errors import ConfigError

ANSWERS = {  # verdict -> the decision it judges
    "confirmed_anomaly": "ANOMALY",
    "false_alarm": "ANOMALY",
    "missed_defect": "OK",
    "confirmed_normal": "OK",
}
NORMAL = ("false_alarm", "confirmed_normal")  # the part was good
DEFECT = ("confirmed_anomaly", "missed_defect")  # the part was bad
MAX_NAME = 100
MAX_NOTE = 2000
MAX_LISTED = 5  # candidates named when a part id is ambiguous


@dataclass(frozen=True)
class Review:
    source: str
    seq: int
    part_id: str
    decision: str
    verdict: str
    reviewer: str
    note: str
    utc: str


def review(
    history: HistoryDB | str | Path,
    verdict: str,
    by: str,
    note: str = "",
    *,
    source: str | None = None,
    seq: int | None = None,
    part_id: str | None = None,
) -> Review:
    """Record ``by``'s verdict on the one decision that ``source``/``seq`` or ``part_id``
    (with ``source`` when several sensors saw the part) names."""
    reviewer, note = by.strip(), note.strip()
    _check_words(verdict, reviewer, note)
    with opened(history) as db:
        target = _target(db, source, seq, part_id)
        expected = ANSWERS[verdict]
        if target.decision != expected:
            raise ConfigError(_mismatch(target, verdict))
        done = Review(
            target.source,
            target.seq,
            target.part_id,
            target.decision,
            verdict,
            reviewer,
            note,
            utc_text(datetime.now(UTC)),
        )
        with db.transaction():
            db.db.execute(
                "INSERT INTO reviews(source, seq, verdict, reviewer, note, utc) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (done.source, done.seq, verdict, reviewer, note, done.utc),
            )
            db.db.execute(
                "UPDATE decisions SET keep_class = ? WHERE source = ? AND seq = ?",
                (REVIEWED, done.source, done.seq),
            )
    return done


def reviews_of(history: HistoryDB | str | Path, source: str, seq: int) -> list[Review]:
    """Every review of one decision, oldest first (the last one counts)."""
    with opened(history) as db:
        rows = db.rows(
            "SELECT r.source, r.seq, d.part_id, d.decision, r.verdict, r.reviewer, r.note, r.utc "
            "FROM reviews r JOIN decisions d ON d.source = r.source AND d.seq = r.seq "
            "WHERE r.source = ? AND r.seq = ? ORDER BY r.id",
            (source, seq),
        )
    return [Review(*tuple(row)) for row in rows]


def _check_words(verdict: str, reviewer: str, note: str) -> None:
    if verdict not in VERDICTS:
        raise ConfigError(f"verdict {verdict!r}: use one of {', '.join(VERDICTS)}")
    if not reviewer or len(reviewer) > MAX_NAME or not reviewer.isprintable():
        raise ConfigError(
            f"reviewer name {reviewer[:MAX_NAME]!r}: say who reviewed (--by NAME, 1 to "
            f"{MAX_NAME} printable characters)"
        )
    if len(note) > MAX_NOTE:
        raise ConfigError(f"the note has {len(note)} characters; at most {MAX_NOTE}")


def _target(db: HistoryDB, source: str | None, seq: int | None, part_id: str | None) -> HistoryRow:
    if seq is not None and source is None:
        raise ConfigError("a sequence number needs its sensor: give --source with --seq")
    if seq is None and part_id is None:
        raise ConfigError("name the decision: --part-id ID (and --source), or --source and --seq")
    rows = select(db, Query(source=source, seq=seq, part_id=part_id))
    named = " ".join(
        f"{flag} {value}"
        for flag, value in (("--source", source), ("--seq", seq), ("--part-id", part_id))
        if value is not None
    )
    if not rows:
        raise ConfigError(
            f"no decision with {named} in the history {db.folder} (retention may have deleted "
            "it); 'flowedge history list' shows what is there"
        )
    if len(rows) > 1:
        listed = "; ".join(
            f"{r.source} #{r.seq} at {r.captured_utc} ({r.decision})" for r in rows[:MAX_LISTED]
        )
        more = f" and {len(rows) - MAX_LISTED} more" if len(rows) > MAX_LISTED else ""
        raise ConfigError(
            f"{len(rows)} decisions match {named}: {listed}{more}; name one with --source and --seq"
        )
    return rows[0]


def _mismatch(target: HistoryRow, verdict: str) -> str:
    where = f"{target.source} #{target.seq} (part {target.part_id})"
    if target.decision == "ERROR":
        return (
            f"{where} was answered ERROR ({target.error}): it was never scored, so there is no "
            "verdict to give on its score"
        )
    if target.decision == "BASELINING":
        return (
            f"{where} was answered BASELINING: it re-estimated its model's input statistics "
            "after a changeover and was never judged, so there is no verdict to give on it"
        )
    fitting = [v for v, answered in ANSWERS.items() if answered == target.decision]
    return (
        f"{where} was decided {target.decision}, so '{verdict}' does not apply (it judges an "
        f"{ANSWERS[verdict]}); use {' or '.join(fitting)}"
    )
