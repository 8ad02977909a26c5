"""The historian's PostgreSQL connection: a batch of decisions in one transaction, each once.

A batch is copied into a temporary staging table (``COPY``, the fastest way in) and moved
into ``flowedge_decisions`` with ``ON CONFLICT DO NOTHING``, so a redelivered decision
adds nothing; what is not a decision goes to ``flowedge_rejected`` in the same
transaction. Only after the commit does the historian acknowledge the messages.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import psycopg

from flowedge.historian.config import DatabaseConfig
from flowedge.historian.rows import COLUMNS, Decision, Key
from flowedge.historian.schema import DECISIONS, KEY, REJECTED, prepare

log = logging.getLogger(__name__)

STAGING = "flowedge_staging"
# Same key, another decision: the station's numbering restarted. Not the digest: one decision
# arrives as JSON and as Sparkplug (millisecond time stamps) with two different messages.
ANOTHER_DECISION = (
    "d.part_id <> s.part_id OR d.decision <> s.decision"
    " OR abs(extract(epoch FROM d.decided_utc - s.decided_utc)) >= 0.002"
)
GAP_LOOKBACK = 100_000  # decisions per sensor searched for gaps when the historian starts


@dataclass(frozen=True)
class Rejected:
    topic: str
    reason: str
    payload: bytes


@dataclass
class Written:
    """What one transaction did."""

    stored: int = 0  # new rows
    duplicates: int = 0  # decisions the table had already
    conflicts: list[str] = field(default_factory=list)  # same key, another decision
    rejected: int = 0


@dataclass(frozen=True)
class Known:
    """What the table holds of one sensor's sequence (where the historian starts from)."""

    highest: int  # 0: nothing yet
    gaps: list[tuple[int, int]]  # missing (first, last), ascending


class Store:
    """One connection, opened on first use and again after a failure."""

    def __init__(self, cfg: DatabaseConfig) -> None:
        self.cfg = cfg
        self.conn: psycopg.Connection | None = None
        self.layout = ""

    def connection(self) -> psycopg.Connection:
        if self.conn is None or self.conn.closed:
            password = os.environ.get(self.cfg.password_env) or None
            conn = psycopg.connect(self.cfg.dsn, password=password, connect_timeout=10)
            conn.autocommit = True  # transactions are explicit (conn.transaction())
            self.layout = prepare(conn, self.cfg.timescale)
            conn.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {STAGING} (LIKE {DECISIONS} INCLUDING DEFAULTS)"
            )
            self.conn = conn
        return self.conn

    def write(self, decisions: list[Decision], rejected: list[Rejected]) -> Written:
        """Store a batch in one transaction (all of it or, on an exception, nothing)."""
        conn = self.connection()
        written = Written(rejected=len(rejected))
        columns = ", ".join(COLUMNS)
        key = ", ".join(KEY)
        with conn.transaction():
            if decisions:
                with conn.cursor().copy(f"COPY {STAGING} ({columns}) FROM STDIN") as copy:
                    for decision in decisions:
                        copy.write_row(decision.values)
                cursor = conn.execute(
                    f"INSERT INTO {DECISIONS} SELECT * FROM {STAGING} ON CONFLICT DO NOTHING"
                )
                written.stored = cursor.rowcount
                written.duplicates = len(decisions) - written.stored
                if written.duplicates:
                    written.conflicts = [
                        f"{row[0]}/{row[1]}/{row[2]} #{row[3]}"
                        for row in conn.execute(
                            f"SELECT DISTINCT {', '.join('s.' + k for k in KEY)} FROM {STAGING} s "
                            f"JOIN {DECISIONS} d USING ({key}) WHERE {ANOTHER_DECISION}"
                        )
                    ]
                conn.execute(f"DELETE FROM {STAGING}")
            if rejected:
                with conn.cursor().copy(
                    f"COPY {REJECTED} (topic, reason, payload) FROM STDIN"
                ) as copy:
                    for item in rejected:
                        copy.write_row((item.topic, item.reason, item.payload))
        return written

    def known(self, stream: Key, backfill: bool) -> Known:
        """The highest seq stored for ``stream`` and the gaps among its latest decisions
        (``backfill``: also those before the first one stored)."""
        conn = self.connection()
        where = "site = %s AND station = %s AND source = %s"
        row = conn.execute(f"SELECT max(seq) FROM {DECISIONS} WHERE {where}", stream).fetchone()
        highest = int(row[0] or 0) if row else 0
        if not highest:
            return Known(0, [])
        start = max(0, highest - GAP_LOOKBACK)
        rows = conn.execute(
            f"SELECT seq + 1, next - 1 FROM (SELECT seq, lead(seq, 1, %s) OVER (ORDER BY seq) "
            f"AS next FROM {DECISIONS} WHERE {where} AND seq >= %s) AS s WHERE next > seq + 1 "
            "ORDER BY seq",
            (highest + 1, *stream, start),
        ).fetchall()
        gaps = [(int(first), int(last)) for first, last in rows]
        lowest = conn.execute(
            f"SELECT min(seq) FROM {DECISIONS} WHERE {where} AND seq >= %s", (*stream, start)
        ).fetchone()[0]
        if backfill and start == 0 and lowest > 1:
            gaps.insert(0, (1, int(lowest) - 1))
        return Known(highest, gaps)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
