"""Store and forward: every sample and every record is on disk before it moves on.

SQLite in WAL mode with ``synchronous=FULL``: a row that a call returned survives
SIGKILL and power loss. One file holds:

- the intake journal: a captured sample is recorded (with where to re-read it)
  before it enters the pipeline queues, and its row is deleted in the very
  transaction that stores its decision, so a crash anywhere in between leaves
  the row for the next start to answer;
- what each source remembers (folder replay position, files a watch folder has
  taken), written in the intake transaction, so "taken" and "journaled" never
  disagree after a crash;
- the records: each decision and event once, protocol-free (kind, source, JSON
  document), numbered per sensor (the ``sequence`` table) so a restart continues
  the numbering and a PLC or historian can detect gaps;
- one delivery cursor per sink (MQTT, later Sparkplug, OPC UA, the history): the
  highest record id that sink has acknowledged, everything before it included. A
  record is deleted once every attached sink's cursor has passed it, so a slow or
  dead sink never blocks another and never loses its own backlog. Records beyond
  ``max_messages`` (or a sink's own ``max_backlog``) are dropped oldest first or
  refused, counted and reported.

A spool written before sinks existed (an MQTT ``outbox`` table) is migrated on open,
in one transaction: every unsent message becomes a record that every sink still owes.
"""

from __future__ import annotations

import json
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

RECORD_KINDS = ("decision", "event")

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,  -- decision | event
    source TEXT,  -- the sensor; NULL: a station-wide event
    body BLOB NOT NULL  -- the JSON document (edge/schema/)
);
CREATE TABLE IF NOT EXISTS sink_cursor (
    sink TEXT PRIMARY KEY,
    delivered INTEGER NOT NULL  -- every record id up to this one is acknowledged by the sink
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
class Record:
    """One decision or event, as every sink receives it (each sink encodes it its own way)."""

    id: int
    kind: str  # decision | event
    source: str | None  # the sensor; None for a station-wide event
    body: bytes  # the JSON document

    def doc(self) -> dict:
        return json.loads(self.body)


class Spool:
    """Thread-safe record store with per-sink cursors and a size limit (drop oldest or reject)."""

    def __init__(self, path: Path, max_messages: int, overflow: str = "drop_oldest") -> None:
        self.path = Path(path)
        self.max_messages = max_messages
        self.overflow = overflow
        self.overflowed = 0  # records lost to the size limit since start (counted, reported)
        self.skipped: dict[str, int] = {}  # per sink: records passed over by its max_backlog
        self._lock = threading.Lock()
        self._sinks: dict[str, int | None] = {}  # attached sink -> its max_backlog
        self._listeners: list[Callable[[], None]] = []
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
            migrated = self._migrate_outbox()
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(
                f"spool.path {self.path}: cannot open the spool database ({exc}); "
                "the directory must be writable by the flowedge user"
            ) from exc
        if migrated:
            log.info(
                "spool %s: %d message(s) of an earlier release kept as records", path, migrated
            )
        self._size = int(self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0])
        if self._size:
            log.info(
                "spool %s holds %d undelivered record(s) from a previous run", path, self._size
            )
        unanswered = int(self._db.execute("SELECT COUNT(*) FROM intake").fetchone()[0])
        if unanswered:
            log.info(
                "spool %s holds %d sample(s) captured but not answered before a crash; "
                "they are answered first",
                self.path,
                unanswered,
            )

    def _migrate_outbox(self) -> int:
        """Turn an earlier release's MQTT outbox into records, ids and order kept."""
        found = self._db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'outbox'"
        ).fetchone()
        if found is None:
            return 0
        with self._transaction():
            rows = self._db.execute("SELECT id, topic, payload FROM outbox ORDER BY id").fetchall()
            self._db.executemany(
                "INSERT INTO records(id, kind, source, body) VALUES (?, ?, ?, ?)",
                [
                    (i, *_kind_and_source(topic, bytes(payload)), bytes(payload))
                    for i, topic, payload in rows
                ],
            )
            self._db.execute("DROP TABLE outbox")
        return len(rows)

    # --- sinks -------------------------------------------------------------------------
    def attach(self, sink: str, max_backlog: int | None = None) -> int:
        """Register a sink that must have each record before it is deleted; returns its cursor.

        A sink attached for the first time owes everything still in the spool.
        """
        with self._lock:
            self._db.execute(
                "INSERT INTO sink_cursor(sink, delivered) VALUES (?, 0) ON CONFLICT DO NOTHING",
                (sink,),
            )
            self._sinks[sink] = max_backlog
            self.skipped.setdefault(sink, 0)
            return self._cursor(sink)

    def attached(self) -> list[str]:
        """The sinks attached in this process (each has a backlog)."""
        with self._lock:
            return list(self._sinks)

    def subscribe(self, listener: Callable[[], None]) -> None:
        """``listener()`` runs after each new record is committed (wake a sender; never block)."""
        self._listeners.append(listener)

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()

    def cursor(self, sink: str) -> int:
        with self._lock:
            return self._cursor(sink)

    def _cursor(self, sink: str) -> int:
        row = self._db.execute(
            "SELECT delivered FROM sink_cursor WHERE sink = ?", (sink,)
        ).fetchone()
        return int(row[0]) if row else 0

    def advance(self, sink: str, delivered: int) -> None:
        """``sink`` has every record up to ``delivered``; delete what every sink now has."""
        with self._lock, self._transaction():
            self._db.execute(
                "UPDATE sink_cursor SET delivered = MAX(delivered, ?) WHERE sink = ?",
                (delivered, sink),
            )
            self._prune()

    def _prune(self) -> None:
        """Delete the records every attached sink has (none while no sink is attached: the
        spool is then the station's local record, bounded by ``max_messages``)."""
        if not self._sinks:
            return
        marks = ",".join("?" * len(self._sinks))
        low = self._db.execute(
            f"SELECT MIN(delivered) FROM sink_cursor WHERE sink IN ({marks})", tuple(self._sinks)
        ).fetchone()[0]
        gone = self._db.execute("DELETE FROM records WHERE id <= ?", (int(low or 0),))
        self._size -= gone.rowcount

    def backlog(self, sink: str) -> int:
        """Records ``sink`` has not acknowledged yet."""
        with self._lock:
            return int(
                self._db.execute(
                    "SELECT COUNT(*) FROM records WHERE id > ?", (self._cursor(sink),)
                ).fetchone()[0]
            )

    # --- records -----------------------------------------------------------------------
    def put(self, kind: str, source: str | None, body: bytes) -> int | None:
        """Store a record; returns its id, or None when ``reject_new`` refused it."""
        with self._lock:
            row = self._put(kind, source, body)
        self._notify()
        return row

    def put_numbered(
        self,
        sensor: str,
        build: Callable[[int], bytes],
        intake_id: int | None = None,
    ) -> int | None:
        """Number a sensor's next decision, store it and close its intake row in one transaction.

        ``build(seq)`` returns the decision document. A crash either keeps the new
        sequence number and the record with the journal row gone, or none of
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
                    row = self._put("decision", sensor, build(int(seq)))
                    if intake_id is not None:
                        self._db.execute("DELETE FROM intake WHERE id = ?", (intake_id,))
            except BaseException:
                self._size = size
                raise
        self._notify()
        return row

    def _put(self, kind: str, source: str | None, body: bytes) -> int | None:
        count = self._size
        if count >= self.max_messages:
            self.overflowed += 1
            if self.overflowed == 1 or self.overflowed % OVERFLOW_LOG_EVERY == 0:
                log.warning(
                    "spool full (%d records): %d record(s) lost so far (%s); a sink is away "
                    "or none is enabled: raise spool.max_messages or bring the sink back",
                    count,
                    self.overflowed,
                    "newest rejected" if self.overflow == "reject_new" else "oldest dropped",
                )
            if self.overflow == "reject_new":
                return None
            dropped = self._db.execute(
                "DELETE FROM records WHERE id IN (SELECT id FROM records ORDER BY id LIMIT ?)",
                (count - self.max_messages + 1,),
            )
            self._size -= dropped.rowcount
        cursor = self._db.execute(
            "INSERT INTO records(kind, source, body) VALUES (?, ?, ?)", (kind, source, body)
        )
        self._size += 1
        row = int(cursor.lastrowid)
        self._enforce_backlogs(row)
        return row

    def _enforce_backlogs(self, newest: int) -> None:
        """A sink with ``max_backlog`` passes over its oldest records beyond it (counted)."""
        for sink, limit in self._sinks.items():
            if limit is None:
                continue
            floor = newest - limit
            moved = self._db.execute(
                "SELECT COUNT(*) FROM records WHERE id > (SELECT delivered FROM sink_cursor "
                "WHERE sink = ?) AND id <= ?",
                (sink, floor),
            ).fetchone()[0]
            if moved:
                self.skipped[sink] += int(moved)
                self._db.execute(
                    "UPDATE sink_cursor SET delivered = ? WHERE sink = ? AND delivered < ?",
                    (floor, sink, floor),
                )
                log.warning(
                    "sink %s: %d record(s) passed over (max_backlog %d reached; %d so far)",
                    sink,
                    moved,
                    limit,
                    self.skipped[sink],
                )
                self._prune()

    def after(self, row_id: int, limit: int) -> list[Record]:
        """Records with an id above ``row_id``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, kind, source, body FROM records WHERE id > ? ORDER BY id LIMIT ?",
                (row_id, limit),
            ).fetchall()
        return [Record(int(i), k, s, bytes(b)) for i, k, s, b in rows]

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
            if self._db.in_transaction:  # SQLite already rolled back on disk full / I/O error
                self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def count(self) -> int:
        """Records not yet acknowledged by every attached sink (all of them while none is)."""
        return self._size

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _kind_and_source(topic: str, payload: bytes) -> tuple[str, str | None]:
    """An outbox row's record kind (its topic's last level) and sensor (from its document)."""
    kind = topic.rsplit("/", 1)[-1]
    try:
        source = json.loads(payload).get("sensor")
    except (ValueError, AttributeError):  # not a JSON object: keep it, unattributed
        source = None
    return (kind if kind in RECORD_KINDS else "event"), source
