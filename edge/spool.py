"""Store and forward: every sample and every message is on disk before it moves on.

SQLite in WAL mode with ``synchronous=FULL``: a row that a call returned survives
SIGKILL and power loss. Three things live in the same file:

- the intake journal: a captured sample is recorded (with where to re-read it)
  before it enters the pipeline queues, and its row is deleted in the very
  transaction that stores its decision, so a crash anywhere in between leaves
  the row for the next start to answer;
- what each source remembers (folder replay position, files a watch folder has
  taken), written in the intake transaction, so "taken" and "journaled" never
  disagree after a crash;
- the outbox: rows leave it only when the broker acknowledged them (QoS 1 PUBACK),
  plus the per-sensor sequence counters, so a restart continues the numbering and
  a PLC can detect gaps.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
CREATE TABLE IF NOT EXISTS intake (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source TEXT NOT NULL,
    part_id TEXT NOT NULL,
    locator TEXT,  -- where the payload can be read again (a file path); NULL: memory only
    version TEXT,  -- that file's version when captured (see file_version)
    error TEXT,  -- the source already judged the sample bad (answered ERROR)
    captured_utc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS source_memory (
    source TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    stamp INTEGER NOT NULL,  -- intake id that wrote it: the size cap forgets the oldest
    PRIMARY KEY (source, key)
);
"""


def _stored(text: str | None) -> bytes | None:
    """File names may carry undecodable bytes (os.fsdecode surrogates), which SQLite's TEXT
    refuses: names and paths are stored as their exact bytes instead."""
    return None if text is None else text.encode("utf-8", "surrogateescape")


def _loaded(value: bytes | str | None) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value


@dataclass(frozen=True)
class IntakeRow:
    """A captured sample that has no stored decision yet."""

    id: int
    source: str
    part_id: str
    locator: str | None
    version: str | None
    error: str | None
    captured_utc: str


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
        if self._size:
            log.info(
                "spool %s holds %d unsent message(s) from a previous run", self.path, self._size
            )
        unanswered = int(self._db.execute("SELECT COUNT(*) FROM intake").fetchone()[0])
        if unanswered:
            log.info(
                "spool %s holds %d sample(s) captured but not answered before a crash; "
                "they are answered first",
                self.path,
                unanswered,
            )

    def put(self, topic: str, payload: bytes, retain: bool = False) -> int | None:
        """Store a message; returns its row id, or None when ``reject_new`` refused it."""
        with self._lock:
            return self._put(topic, payload, retain)

    def put_numbered(
        self,
        sensor: str,
        build: Callable[[int], tuple[str, bytes]],
        intake_id: int | None = None,
    ) -> int | None:
        """Number a sensor's next message, store it and close its intake row in one transaction.

        ``build(seq)`` returns (topic, payload). A crash either keeps the new
        sequence number and the message with the journal row gone, or none of
        them (and the sample is answered after the restart).
        """
        with self._lock:
            size = self._size
            try:
                with self._transaction():
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
                    if intake_id is not None:
                        self._db.execute("DELETE FROM intake WHERE id = ?", (intake_id,))
            except BaseException:
                self._size = size
                raise
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

    # --- intake journal ----------------------------------------------------------------
    def record_intake(
        self,
        source: str,
        part_id: str,
        captured_utc: str,
        locator: str | None = None,
        version: str | None = None,
        error: str | None = None,
        remember: tuple[str, str] | None = None,
    ) -> int:
        """Journal a captured sample (and what its source now remembers) in one transaction.

        Returns the journal id that ``put_numbered`` or ``drop_intake`` closes.
        """
        with self._lock, self._transaction():
            cursor = self._db.execute(
                "INSERT INTO intake(source, part_id, locator, version, error, captured_utc) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (source, _stored(part_id), _stored(locator), version, _stored(error), captured_utc),
            )
            intake_id = int(cursor.lastrowid)
            if remember is not None:
                self._remember(source, {remember[0]: remember[1]}, intake_id)
            return intake_id

    def pending_intake(self, source: str) -> list[IntakeRow]:
        """Samples of ``source`` captured by an earlier run and never answered, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, source, part_id, locator, version, error, captured_utc "
                "FROM intake WHERE source = ? ORDER BY id",
                (source,),
            ).fetchall()
        return [
            IntakeRow(i, src, _loaded(part), _loaded(loc), version, _loaded(err), utc)
            for i, src, part, loc, version, err, utc in rows
        ]

    def drop_intake(self, intake_id: int) -> None:
        """Close a journal row without a decision (backpressure dropped the sample: counted)."""
        with self._lock:
            self._db.execute("DELETE FROM intake WHERE id = ?", (intake_id,))

    # --- source memory -----------------------------------------------------------------
    def recall(self, source: str) -> dict[str, str]:
        """What ``source`` remembered (key -> value), empty when it never ran."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key, value FROM source_memory WHERE source = ?", (source,)
            ).fetchall()
        return {_loaded(key): _loaded(value) for key, value in rows}

    def remember(self, source: str, entries: dict[str, str]) -> None:
        with self._lock, self._transaction():
            self._remember(source, entries, 0)

    def prune_memory(self, source: str, keep: set[str], cap: int) -> int:
        """Forget keys not in ``keep``, then all but the ``cap`` newest; returns how many went."""
        with self._lock, self._transaction():
            keys = [
                k
                for (k,) in self._db.execute(
                    "SELECT key FROM source_memory WHERE source = ?", (source,)
                )
            ]
            gone = [(source, k) for k in keys if _loaded(k) not in keep]
            self._db.executemany("DELETE FROM source_memory WHERE source = ? AND key = ?", gone)
            capped = self._db.execute(
                "DELETE FROM source_memory WHERE source = ? AND key IN (SELECT key FROM "
                "source_memory WHERE source = ? ORDER BY stamp DESC LIMIT -1 OFFSET ?)",
                (source, source, cap),
            )
            return len(gone) + capped.rowcount

    def _remember(self, source: str, entries: dict[str, str], stamp: int) -> None:
        self._db.executemany(
            "INSERT INTO source_memory(source, key, value, stamp) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(source, key) DO UPDATE SET value = excluded.value, "
            "stamp = excluded.stamp",
            [(source, _stored(key), _stored(value), stamp) for key, value in entries.items()],
        )

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One commit (one disk sync) for everything inside; nothing of it if it raises."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def count(self) -> int:
        return self._size

    def close(self) -> None:
        with self._lock:
            self._db.close()
