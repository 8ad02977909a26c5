"""A Sparkplug B DDATA as a row of the decisions table (docs/plant-protocols.md, metrics).

A station's Sparkplug sink is an edge node (group id = site, edge node id = station) with
one device per source; each decision is one DDATA carrying every device metric, stamped
with the decision time. So the row's key is the same as the JSON message's: (site, station,
source, ``Sequence``), and a decision that arrives both ways is stored once. A DDATA
without ``Sequence`` is a drift report, not a decision: it is no row and no rejection.
Sparkplug carries no capture time; it is the decision time less ``Latency ms``.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from flowedge.core.decision import DECISIONS
from flowedge.historian.rows import MAX_DOCUMENT_BYTES, Decision, Key, row

NAMESPACE = "spBv1.0"
SUBSCRIPTION = f"{NAMESPACE}/+/DDATA/+/+"


def topic_levels(topic: str) -> Key:
    """(site, station, source) of a DDATA topic."""
    levels = topic.split("/")
    if len(levels) != 5 or levels[0] != NAMESPACE or levels[2] != "DDATA":
        raise ValueError(
            f"not a Sparkplug DDATA topic ({NAMESPACE}/<site>/DDATA/<station>/<source>)"
        )
    return levels[1], levels[3], levels[4]


def _number(values: dict[str, Any], name: str) -> float | None:
    value = values.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"metric {name!r} must be a finite number or null (got {value!r})")
    return float(value)


def parse_sparkplug(topic: str, payload: bytes) -> Decision | None:
    """The row of a decision's DDATA, None for a DDATA that is no decision; ValueError
    saying why the message is neither."""
    from flowedge.core.sparkplug import decode

    stream = topic_levels(topic)
    if len(payload) > MAX_DOCUMENT_BYTES:
        raise ValueError(f"{len(payload)} bytes, more than a decision ({MAX_DOCUMENT_BYTES})")
    metrics = decode(payload)
    values = {metric.name: metric.value for metric in metrics}
    if "Sequence" not in values:
        return None
    seq = values["Sequence"]
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
        raise ValueError(f"Sequence {seq!r}: the stations number decisions from 1")
    if values.get("Decision") not in DECISIONS:
        raise ValueError(
            f"Decision {values.get('Decision')!r} is not one of {', '.join(DECISIONS)}"
        )
    stamp = next((m.timestamp_ms for m in metrics if m.name == "Sequence"), None)
    if stamp is None:
        raise ValueError("the Sequence metric has no timestamp (the decision time)")
    decided = datetime.fromtimestamp(stamp / 1000, UTC)
    latency = _number(values, "Latency ms") or 0.0
    historical = any(m.historical for m in metrics)
    document = json.dumps(
        {"via": "sparkplug", "topic": topic, "historical": historical, "metrics": values},
        sort_keys=True,
    )
    return row(
        site=stream[0],
        station=stream[1],
        source=stream[2],
        seq=seq,
        part_id=str(values.get("Part Id") or ""),
        captured_utc=decided - timedelta(milliseconds=latency),
        decided_utc=decided,
        modality=None,
        decision=values["Decision"],
        score=_number(values, "Score"),
        threshold=_number(values, "Threshold"),
        normalised_score=_number(values, "Normalised Score"),
        error=None if values.get("Error") is None else str(values["Error"]),
        model_id=None if values.get("Model Id") is None else str(values["Model Id"]),
        weights_sha256=None,
        calibration_sha256=None,
        backend=None,
        drift="drifted" if values.get("Drift") else None,  # null: not reported
        resent=False,
        digest=hashlib.sha256(payload).hexdigest(),
        document=document,
    )
