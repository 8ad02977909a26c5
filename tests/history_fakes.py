"""Stand-ins for the history tests: decision documents as the station publishes them, a
history sink on a bare spool (no pipeline), a history filled without a station."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flowedge.calibration.history.records import KeptEvidence, add_decision
from flowedge.calibration.history.retention import utc_text
from flowedge.calibration.history.store import HistoryDB
from flowedge.edge.commands import CommandsConfig, StationCommands
from flowedge.edge.metrics import Metrics
from flowedge.edge.sinks.base import SinkContext
from flowedge.edge.sinks.history import HistorySink, HistorySinkConfig
from flowedge.edge.spool import Spool

WEIGHTS = "f" * 64


def days_ago(days: float) -> str:
    return utc_text(datetime.now(UTC) - timedelta(days=days))


def decision(
    seq: int,
    score: float,
    threshold: float = 3.0,
    source: str = "cam1",
    part_id: str | None = None,
    captured_utc: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A decision document (edge/schema/decision.schema.json) of the fake model."""
    when = captured_utc or utc_text(datetime.now(UTC))
    return {
        "schema": "flowedge.decision/1",
        "site": "plant",
        "station": "line1",
        "sensor": source,
        "seq": seq,
        "part_id": part_id or f"part_{seq:04d}.png",
        "captured_utc": when,
        "decided_utc": when,
        "decision": "ANOMALY" if score > threshold else "OK",
        "score": score,
        "threshold": threshold,
        "normalised_score": None,
        "model": {
            "id": "fake-ffffffffffff",
            "weights_sha256": WEIGHTS,
            "calibration_sha256": None,
            "backend": "torch",
        },
        "latency_ms": {"total": 1.0},
        "heatmap": None,
        "error": None,
        "modality": "image",
        **fields,
    }


def event(kind: str = "dropped", message: str = "a frame was dropped") -> dict[str, Any]:
    return {
        "schema": "flowedge.event/1",
        "site": "plant",
        "station": "line1",
        "sensor": "cam1",
        "utc": utc_text(datetime.now(UTC)),
        "kind": kind,
        "severity": "warning",
        "message": message,
        "details": {},
    }


def encoded(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def put_decisions(spool: Spool, docs: list[dict[str, Any]]) -> None:
    """Store the documents as the publish stage does (numbered per sensor: seq must match)."""
    for doc in docs:
        spool.put_numbered(doc["sensor"], lambda seq, doc=doc: encoded({**doc, "seq": seq}))


class Recorder:
    """The station's event emitter, remembered (kind, message, details)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, sensor: str | None, kind: str, message: str, **details: Any) -> None:
        self.events.append((kind, message, details))

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.events]


def sink_context(
    spool: Spool, emit: Recorder, status: Callable[[], dict] = dict, config: Any = None
) -> SinkContext:
    """What a station hands a sink, on a bare spool: no command allowed."""
    commands = StationCommands(CommandsConfig(), emit)
    return SinkContext("plant", "line1", spool, Metrics(), emit, status, commands, config=config)


def history_sink(spool: Spool, path: Path, emit: Recorder | None = None, **cfg: Any) -> HistorySink:
    """A history sink on ``spool`` (not started: tests call ``_step`` or ``start``)."""
    context = sink_context(spool, emit or Recorder())
    return HistorySink(HistorySinkConfig(**{"path": path, "min_free_mb": 0, **cfg}), context)


def filled_history(path: Path, docs: list[dict[str, Any]]) -> HistoryDB:
    """A history holding ``docs`` (no evidence), written without a station."""
    db = HistoryDB(path, create=True)
    with db.transaction():
        for doc in docs:
            add_decision(db, doc, encoded(doc), KeptEvidence())
    return db
