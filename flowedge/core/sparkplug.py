"""Sparkplug B payloads: which metrics the station publishes, with which datatypes, encoded with
the official schema (``sparkplug_b.proto`` beside this module and protoc's ``sparkplug_b_pb2``).

The metric catalogue is here, in one place, because births must announce every metric a later
NDATA or DDATA may carry, with the same name and datatype (docs/plant-protocols.md lists them).
Needs protobuf (``pip install 'flowedge[sparkplug]'``); only the Sparkplug sink imports it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flowedge.core import sparkplug_b_pb2 as pb

BDSEQ = "bdSeq"
REBIRTH = "Node Control/Rebirth"
STATION_THRESHOLD = "Station/Threshold"  # writable by NCMD (set_threshold, when allowed)
DEVICE_THRESHOLD = "Threshold"  # writable by DCMD: the same station-wide threshold

# value field of the Metric oneof per datatype
_FIELD = {
    pb.Int64: "long_value",
    pb.UInt64: "long_value",
    pb.DateTime: "long_value",
    pb.Double: "double_value",
    pb.Boolean: "boolean_value",
    pb.String: "string_value",
}
Value = int | float | bool | str | None


@dataclass(frozen=True)
class Metric:
    """One metric value as the sink tracks it; ``None`` is sent as ``is_null``."""

    name: str
    datatype: int  # pb.DataType
    value: Value
    timestamp_ms: int | None = None
    historical: bool = False


# the station's health on the edge node, from SinkContext.status_fields()
NODE_HEALTH = {
    "Station/Model Id": pb.String,
    STATION_THRESHOLD: pb.Double,
    "Station/Samples": pb.UInt64,
    "Station/Decisions": pb.UInt64,
    "Station/Errors": pb.UInt64,
    "Station/Dropped": pb.UInt64,
    "Station/Spooled": pb.UInt64,
    "Station/Spool Overflowed": pb.UInt64,
    "Station/Commands Allowed": pb.String,
}
# the latest event record (station-wide and per source) on the edge node
NODE_EVENT = {
    "Event/Source": pb.String,
    "Event/Kind": pb.String,
    "Event/Severity": pb.String,
    "Event/Message": pb.String,
}
# one device per source: its latest decision and drift state
DEVICE = {
    "Decision": pb.String,
    "Score": pb.Double,
    DEVICE_THRESHOLD: pb.Double,
    "Normalised Score": pb.Double,
    "Model Id": pb.String,
    "Part Id": pb.String,
    "Sequence": pb.UInt64,
    "Error": pb.String,
    "Latency ms": pb.Double,
    "Drift": pb.Boolean,
    "Drift Report": pb.String,
}


def epoch_ms(utc: str) -> int:
    """Milliseconds since the epoch of a record's ISO 8601 UTC stamp."""
    return int(datetime.fromisoformat(utc).timestamp() * 1000)


def health_metrics(status: dict[str, Any], allowed: Iterable[str]) -> dict[str, Value]:
    """The node's health values from the station's live status fields."""
    counts = status.get("counts", {})
    return {
        "Station/Model Id": status.get("model_id"),
        STATION_THRESHOLD: status.get("threshold"),
        "Station/Samples": counts.get("samples"),
        "Station/Decisions": counts.get("decisions"),
        "Station/Errors": counts.get("errors"),
        "Station/Dropped": counts.get("dropped"),
        "Station/Spooled": status.get("spooled"),
        "Station/Spool Overflowed": status.get("spool_overflowed"),
        "Station/Commands Allowed": ",".join(sorted(allowed)),
    }


def decision_metrics(doc: dict[str, Any]) -> dict[str, Value]:
    """A decision document (edge/schema/decision.schema.json) as the device's values."""
    return {
        "Decision": doc["decision"],
        "Score": doc["score"],
        DEVICE_THRESHOLD: doc["threshold"],
        "Normalised Score": doc["normalised_score"],
        "Model Id": (doc["model"] or {}).get("id"),  # null: no model applied (recipes)
        "Part Id": doc["part_id"],
        "Sequence": doc["seq"],
        "Error": doc["error"],
        "Latency ms": doc["latency_ms"].get("total"),
    }


def event_metrics(doc: dict[str, Any]) -> dict[str, Value]:
    """An event document (edge/schema/event.schema.json) as the node's Event values."""
    return {
        "Event/Source": doc["sensor"],
        "Event/Kind": doc["kind"],
        "Event/Severity": doc["severity"],
        "Event/Message": doc["message"],
    }


def drift_metrics(doc: dict[str, Any]) -> dict[str, Value]:
    """A ``drift`` event as the device's drift state (the monitor reports drift only)."""
    return {"Drift": True, "Drift Report": doc["message"]}


def metrics(
    values: dict[str, Value],
    types: dict[str, int],
    timestamp_ms: int | None = None,
    historical: bool = False,
) -> list[Metric]:
    return [
        Metric(name, types[name], value, timestamp_ms, historical) for name, value in values.items()
    ]


def encode(items: Iterable[Metric], seq: int | None, timestamp_ms: int | None = None) -> bytes:
    """One Sparkplug B payload (``seq`` None: NDEATH, which carries none); a metric without
    its own time stamp gets the payload's."""
    payload = pb.Payload()
    if timestamp_ms is not None:
        payload.timestamp = timestamp_ms
    if seq is not None:
        payload.seq = seq
    for item in items:
        metric = payload.metrics.add(name=item.name, datatype=item.datatype)
        stamp = item.timestamp_ms if item.timestamp_ms is not None else timestamp_ms
        if stamp is not None:
            metric.timestamp = stamp
        if item.historical:
            metric.is_historical = True
        if item.value is None or (isinstance(item.value, float) and not math.isfinite(item.value)):
            metric.is_null = True
        else:
            setattr(metric, _FIELD[item.datatype], _typed(item.value, item.datatype))
    return payload.SerializeToString()


def _typed(value: Value, datatype: int) -> Value:
    if datatype == pb.Double:
        return float(value)  # type: ignore[arg-type]
    if datatype in (pb.Int64, pb.UInt64, pb.DateTime):
        return int(value) & 0xFFFF_FFFF_FFFF_FFFF  # type: ignore[arg-type]  # Int64: two's complement
    return value


def decode(data: bytes) -> list[Metric]:
    """The metrics of a Sparkplug B payload; ValueError when it is not one.

    Values become what JSON can carry: a number that is not finite, bytes, a data set or a
    template is named as text (and refused as a value wherever one is expected).
    """
    try:
        payload = pb.Payload.FromString(data)
    except Exception as exc:  # protobuf's DecodeError (its module path varies by runtime)
        raise ValueError(f"not a Sparkplug B payload ({exc})") from exc
    found: list[Metric] = []
    for metric in payload.metrics:
        field = metric.WhichOneof("value")
        value = None if field is None or metric.is_null else getattr(metric, field)
        if isinstance(value, float) and not math.isfinite(value):
            value = str(value)
        elif value is not None and not isinstance(value, (bool, int, float, str)):
            value = f"<{field}>"
        elif metric.datatype == pb.Int64 and isinstance(value, int) and value >= 1 << 63:
            value -= 1 << 64  # sent as two's complement in an unsigned field
        stamp = metric.timestamp if metric.HasField("timestamp") else None
        found.append(Metric(metric.name, metric.datatype, value, stamp, metric.is_historical))
    return found


def commands(data: bytes) -> list[tuple[str, Value]]:
    """(metric name, value) of an NCMD or DCMD payload; ValueError when it is not Sparkplug B."""
    return [(metric.name, metric.value) for metric in decode(data)]


def state_online(data: bytes) -> tuple[bool, int] | None:
    """A primary host's STATE (Sparkplug 3.0 JSON ``{"online": bool, "timestamp": ms}``);
    None when it is not one."""
    try:
        doc = json.loads(data)
        online, stamp = doc["online"], doc["timestamp"]
    except (ValueError, TypeError, KeyError, RecursionError):
        return None
    if not isinstance(online, bool) or not isinstance(stamp, int):
        return None
    return online, stamp
