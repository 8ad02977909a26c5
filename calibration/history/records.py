"""Decisions and events into the history, each exactly once.

A decision's identity is (sensor, seq): the station numbers each sensor's decisions
once and keeps the numbering across restarts, so a record the spool delivers again
(after a crash between the history's commit and the spool's cursor) finds its row and
is skipped. The row keeps the document as published, so a historian can later ask the
station to send a range of a sensor's decisions again (:func:`flowedge.calibration.
history.query.documents`). Events have no number: their document's digest is their
identity (it holds their time stamp to the millisecond).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from flowedge.calibration.history.store import ANOMALY, ORDINARY, HistoryDB
from flowedge.core.decision import DECISIONS


def digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


@dataclass(frozen=True)
class KeptEvidence:
    """The files the history keeps for one decision (paths relative to its folder)."""

    input_path: str | None = None
    heatmap_path: str | None = None
    bytes: int = 0


def decision_key(doc: Any) -> tuple[str, int]:
    """(sensor, seq) of a decision document; ValueError when it has none."""
    if not isinstance(doc, dict):
        raise ValueError(f"a decision must be a JSON object, got {type(doc).__name__}")
    source, seq = doc.get("sensor"), doc.get("seq")
    if not isinstance(source, str) or not isinstance(seq, int) or isinstance(seq, bool):
        raise ValueError(
            f"a decision needs a sensor name and an integer seq (got {source!r}, {seq!r})"
        )
    return source, seq


def stored_digest(db: HistoryDB, source: str, seq: int) -> str | None:
    """The digest of the decision stored under (source, seq), None when there is none."""
    return db.value("SELECT digest FROM decisions WHERE source = ? AND seq = ?", (source, seq))


def add_decision(db: HistoryDB, doc: dict[str, Any], body: bytes, kept: KeptEvidence) -> None:
    """Insert a decision not stored yet (check :func:`stored_digest` first)."""
    source, seq = decision_key(doc)
    decision = doc.get("decision")
    if decision not in DECISIONS:
        raise ValueError(f"{source} #{seq}: decision {decision!r} is not one of {DECISIONS}")
    model = doc.get("model") or {}
    row = {
        "source": source,
        "seq": seq,
        "site": str(doc.get("site", "")),
        "station": str(doc.get("station", "")),
        "part_id": str(doc.get("part_id", "")),
        "captured_utc": str(doc["captured_utc"]),
        "decided_utc": str(doc["decided_utc"]),
        "modality": doc.get("modality"),
        "decision": decision,
        "score": doc.get("score"),
        "threshold": doc.get("threshold"),
        "normalised_score": doc.get("normalised_score"),
        "error": doc.get("error"),
        "model_id": model.get("id"),
        "weights_sha256": model.get("weights_sha256"),
        "calibration_sha256": model.get("calibration_sha256"),
        "backend": model.get("backend"),
        "drift": doc.get("drift"),
        "input_path": kept.input_path,
        "heatmap_path": kept.heatmap_path,
        "evidence_bytes": kept.bytes,
        "keep_class": ANOMALY if decision == "ANOMALY" else ORDINARY,
        "digest": digest(body),
        "document": body,
    }
    names = ", ".join(row)
    marks = ", ".join(f":{name}" for name in row)
    db.db.execute(f"INSERT INTO decisions({names}) VALUES ({marks})", row)


def add_event(db: HistoryDB, doc: dict[str, Any], body: bytes) -> bool:
    """Insert an event unless this very document is stored already; True when inserted."""
    if not isinstance(doc, dict) or not isinstance(doc.get("kind"), str):
        raise ValueError("an event must be a JSON object with a kind")
    cursor = db.db.execute(
        "INSERT INTO events(digest, source, utc, kind, severity, message, document) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(digest) DO NOTHING",
        (
            digest(body),
            doc.get("sensor"),
            str(doc.get("utc", "")),
            doc["kind"],
            str(doc.get("severity", "info")),
            str(doc.get("message", "")),
            body,
        ),
    )
    return cursor.rowcount == 1
