"""Store and forward: every message is on disk before it is published.

SQLite in WAL mode with ``synchronous=FULL``: a row that ``put`` returned survives
SIGKILL and power loss. Rows leave the spool only when the broker acknowledged
them (QoS 1 PUBACK). The per-sensor sequence counters live in the same file, so
a restart continues the numbering and a PLC can detect gaps.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flowedge.core.errors import ConfigError

log = logging.getLogger(__name__)

OVERFLOW_LOG_EVERY = 1000  # every loss is counted (metrics, status); the log says it now and then

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    retain INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sequence (
    sensor TEXT PRIMARY KEY,
    last INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS watermark (
    source TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class SpoolRow:
    id: int
    topic: str
    payload: bytes
    retain: bool


class Spool:
    """Thread-safe outbox with a size limit; overflow drops the oldest or rejects the new row."""

    def __init__(self, path: Path, max_messages: int, overflow: str = "drop_oldest") -> None:
        self.path = Path(path)
        self.max_messages = max_messages
        self.overflow = overflow
        self.overflowed = 0  # rows lost to the size limit since start (counted, reported)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(
                f"spool.path {self.path}: cannot open the spool database ({exc}); "
                "the directory must be writable by the flowedge user"
            ) from exc
        self._size = int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        pending = self._size
        if pending:
            log.info("spool %s holds %d unsent message(s) from a previous run", self.path, pending)

    def put(self, topic: str, payload: bytes, retain: bool = False) -> int | None:
        """Store a message; returns its row id, or None when ``reject_new`` refused it."""
        with self._lock:
            return self._put(topic, payload, retain)

    def put_numbered(self, sensor: str, build: Callable[[int], tuple[str, bytes]]) -> int | None:
        """Number a sensor's next message and store it in one transaction (one disk sync).

        ``build(seq)`` returns (topic, payload). A crash either keeps both the new
        sequence number and the message, or neither.
        """
        with self._lock:
            size = self._size
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO sequence(sensor, last) VALUES (?, 1) "
                    "ON CONFLICT(sensor) DO UPDATE SET last = last + 1",
                    (sensor,),
                )
                seq = self._db.execute(
                    "SELECT last FROM sequence WHERE sensor = ?", (sensor,)
                ).fetchone()[0]
                topic, payload = build(int(seq))
                row = self._put(topic, payload, False)
            except BaseException:
                self._db.execute("ROLLBACK")
                self._size = size
                raise
            self._db.execute("COMMIT")
            return row

    def _put(self, topic: str, payload: bytes, retain: bool) -> int | None:
        count = self._size
        if count >= self.max_messages:
            self.overflowed += 1
            if self.overflowed == 1 or self.overflowed % OVERFLOW_LOG_EVERY == 0:
                log.warning(
                    "spool full (%d messages): %d message(s) lost so far (%s); the broker "
                    "is away or MQTT is disabled: raise spool.max_messages or connect a broker",
                    count,
                    self.overflowed,
                    "newest rejected" if self.overflow == "reject_new" else "oldest dropped",
                )
            if self.overflow == "reject_new":
                return None
            dropped = self._db.execute(
                "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT ?)",
                (count - self.max_messages + 1,),
            )
            self._size -= dropped.rowcount
        cursor = self._db.execute(
            "INSERT INTO outbox(topic, payload, retain) VALUES (?, ?, ?)",
            (topic, payload, int(retain)),
        )
        self._size += 1
        return int(cursor.lastrowid)

    def after(self, row_id: int, limit: int) -> list[SpoolRow]:
        """Rows with an id above ``row_id``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, payload, retain FROM outbox WHERE id > ? ORDER BY id LIMIT ?",
                (row_id, limit),
            ).fetchall()
        return [SpoolRow(int(i), t, bytes(p), bool(r)) for i, t, p, r in rows]

    def delete(self, row_id: int) -> None:
        with self._lock:
            deleted = self._db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
            self._size -= deleted.rowcount

    def watermark(self, source: str) -> int | None:
        """What a source recorded as handled (a watch folder: newest file mtime), None if never."""
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM watermark WHERE source = ?", (source,)
            ).fetchone()
        return None if row is None else int(row[0])

    def set_watermark(self, source: str, value: int) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO watermark(source, value) VALUES (?, ?) "
                "ON CONFLICT(source) DO UPDATE SET value = max(value, excluded.value)",
                (source, value),
            )

    def count(self) -> int:
        return self._size

    def close(self) -> None:
        with self._lock:
            self._db.close()
