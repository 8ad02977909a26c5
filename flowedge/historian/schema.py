"""The historian's tables in PostgreSQL (docs/historian.md shows them with example queries).

``flowedge_decisions`` holds one row per decision, keyed by (site, station, source, seq):
a decision delivered twice (a redelivery, or live and re-sent) is stored once. With the
TimescaleDB extension installed the table is made a hypertable on ``captured_utc``, whose
unique key must contain that column: (site, station, source, seq, captured_utc). A
decision delivered again carries the same capture time, so it is still stored once.
``flowedge_rejected`` keeps what arrived on a decision topic and is no decision.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

DECISIONS = "flowedge_decisions"
REJECTED = "flowedge_rejected"
KEY = ("site", "station", "source", "seq")
HYPERTABLE_KEY = (*KEY, "captured_utc")
SCHEMA_LOCK = 0x666C6F77  # an advisory lock: two historians starting at once create it once

TABLE = """
CREATE TABLE IF NOT EXISTS flowedge_decisions (
    site text NOT NULL,
    station text NOT NULL,
    source text NOT NULL,                 -- the sensor (sources[].name)
    seq bigint NOT NULL,                  -- its decision number, from 1, never reused
    part_id text NOT NULL,
    captured_utc timestamptz NOT NULL,
    decided_utc timestamptz NOT NULL,
    modality text,                        -- image | audio | series
    decision text NOT NULL,               -- OK | ANOMALY | ERROR | BASELINING
    score double precision,
    threshold double precision,
    normalised_score double precision,
    error text,                           -- for ERROR: why
    model_id text,
    weights_sha256 text,
    calibration_sha256 text,
    backend text,
    drift text,                           -- ok | drifted | unchecked
    resent boolean NOT NULL,              -- it came through a re-send: the broker had lost it
    stored_utc timestamptz NOT NULL DEFAULT clock_timestamp(),
    digest text NOT NULL,                 -- sha256 of the message
    document jsonb NOT NULL,              -- the decision as published
    PRIMARY KEY ({key})
)"""

INDEXES = """
CREATE INDEX IF NOT EXISTS flowedge_decisions_captured ON flowedge_decisions (captured_utc);
CREATE INDEX IF NOT EXISTS flowedge_decisions_part ON flowedge_decisions (part_id);
CREATE TABLE IF NOT EXISTS flowedge_rejected (
    id bigserial PRIMARY KEY,
    received_utc timestamptz NOT NULL DEFAULT clock_timestamp(),
    topic text NOT NULL,
    reason text NOT NULL,
    payload bytea NOT NULL
);
"""


def _one(conn: Any, sql: str, params: tuple = ()) -> Any:
    row = conn.execute(sql, params).fetchone()
    return None if row is None else row[0]


def is_hypertable(conn: Any) -> bool:
    if not _one(conn, "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"):
        return False
    return bool(
        _one(
            conn,
            "SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = %s",
            (DECISIONS,),
        )
    )


def prepare(conn: Any, timescale: str) -> str:
    """Create what is missing; the layout in use: ``hypertable`` or ``table``."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        exists = _one(conn, "SELECT to_regclass(%s)", (DECISIONS,)) is not None
        available = timescale == "auto" and _one(
            conn, "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
        )
        if not exists and available:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            conn.execute(TABLE.format(key=", ".join(HYPERTABLE_KEY)))
            conn.execute(
                "SELECT create_hypertable(%s, 'captured_utc', if_not_exists => TRUE)",
                (DECISIONS,),
            )
        elif not exists:
            conn.execute(TABLE.format(key=", ".join(KEY)))
        for statement in INDEXES.split(";"):
            if statement.strip():
                conn.execute(statement)
        layout = "hypertable" if is_hypertable(conn) else "table"
    log.info("historian: decisions go to %s (a %s)", DECISIONS, layout)
    return layout
