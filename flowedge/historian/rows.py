"""A received MQTT message as a row of the decisions table, or the reason it is none.

A message is a decision only when its topic is ``<prefix>/<site>/<station>/<sensor>/decision``
(or ``.../decision/resent``), its payload a ``flowedge.decision/1`` JSON object naming the
same site, station and sensor, with a positive ``seq``, a known decision and ISO 8601 times.
Anything else is kept out of the table and stored as rejected with the reason (a station
publishing on another's topic, a truncated message, a NaN that PostgreSQL's jsonb refuses).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flowedge.calibration.history.records import decision_key
from flowedge.core.decision import DECISIONS

DECISION_SCHEMA = "flowedge.decision/1"
MAX_DOCUMENT_BYTES = 1 << 20  # a decision is a few kB; a heatmap path, never the image
RESENT = "resent"

COLUMNS = (
    "site",
    "station",
    "source",
    "seq",
    "part_id",
    "captured_utc",
    "decided_utc",
    "modality",
    "decision",
    "score",
    "threshold",
    "normalised_score",
    "error",
    "model_id",
    "weights_sha256",
    "calibration_sha256",
    "backend",
    "drift",
    "resent",
    "digest",
    "document",
)

Key = tuple[str, str, str]  # (site, station, sensor): one sequence of decisions


@dataclass(frozen=True)
class Decision:
    """One row: the columns in :data:`COLUMNS` order."""

    values: tuple[Any, ...]

    @property
    def stream(self) -> Key:
        return self.values[0], self.values[1], self.values[2]

    @property
    def seq(self) -> int:
        return int(self.values[3])


def topic_levels(topic: str, prefix: str) -> tuple[Key, bool]:
    """(site, station, sensor) of a decision topic and whether it is a re-sent one."""
    levels = topic[len(prefix) + 1 :].split("/") if topic.startswith(prefix + "/") else []
    if len(levels) == 4 and levels[3] == "decision":
        return (levels[0], levels[1], levels[2]), False
    if len(levels) == 5 and levels[3:] == ["decision", RESENT]:
        return (levels[0], levels[1], levels[2]), True
    raise ValueError(f"not a decision topic under {prefix}/<site>/<station>/<sensor>/")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (PostgreSQL's jsonb refuses it)")


def _number(doc: dict[str, Any], key: str) -> float | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{key} must be a finite number or null (got {value!r})")
    return float(value)


def _time(doc: dict[str, Any], key: str) -> datetime:
    value = doc.get(key)
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ValueError(f"{key} must be an ISO 8601 time with a zone (got {value!r})")
    return moment


def _text(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    return None if value is None else str(value)


def parse(topic: str, payload: bytes, prefix: str) -> Decision:
    """The row of a decision message; ValueError saying why the message is none."""
    stream, resent = topic_levels(topic, prefix)
    if len(payload) > MAX_DOCUMENT_BYTES:
        raise ValueError(f"{len(payload)} bytes, more than a decision ({MAX_DOCUMENT_BYTES})")
    try:
        text = payload.decode("utf-8")
        doc = json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        raise ValueError(f"not UTF-8 JSON ({exc})") from None
    if "\\u0000" in text:
        raise ValueError("holds a NUL character (PostgreSQL's jsonb refuses it)")
    source, seq = decision_key(doc)
    if doc.get("schema") != DECISION_SCHEMA:
        raise ValueError(f"schema {doc.get('schema')!r}, not {DECISION_SCHEMA}")
    named = (doc.get("site"), doc.get("station"), source)
    if named != stream:
        raise ValueError(
            f"the document names {'/'.join(map(str, named))}, the topic {'/'.join(stream)}"
        )
    if seq < 1:
        raise ValueError(f"seq {seq}: the stations number decisions from 1")
    if doc.get("decision") not in DECISIONS:
        raise ValueError(f"decision {doc.get('decision')!r} is not one of {', '.join(DECISIONS)}")
    model = doc.get("model") if isinstance(doc.get("model"), dict) else {}
    return row(
        site=stream[0],
        station=stream[1],
        source=stream[2],
        seq=seq,
        part_id=str(doc.get("part_id", "")),
        captured_utc=_time(doc, "captured_utc"),
        decided_utc=_time(doc, "decided_utc"),
        modality=_text(doc, "modality"),
        decision=doc["decision"],
        score=_number(doc, "score"),
        threshold=_number(doc, "threshold"),
        normalised_score=_number(doc, "normalised_score"),
        error=_text(doc, "error"),
        model_id=_text(model, "id"),
        weights_sha256=_text(model, "weights_sha256"),
        calibration_sha256=_text(model, "calibration_sha256"),
        backend=_text(model, "backend"),
        drift=_text(doc, "drift"),
        resent=resent,
        digest=hashlib.sha256(payload).hexdigest(),
        document=text,
    )


def row(**values: Any) -> Decision:
    """A row from its columns by name (every one of :data:`COLUMNS`, no other)."""
    if set(values) != set(COLUMNS):
        raise TypeError(f"columns {sorted(set(values) ^ set(COLUMNS))} missing or unknown")
    return Decision(tuple(values[column] for column in COLUMNS))
