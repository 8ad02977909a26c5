"""The history database: where it lives, its schema, one connection to it.

A history is a folder: ``history.sqlite`` (SQLite in WAL mode, ``synchronous=FULL``:
a row the sink committed survives power loss before the spool forgets the record) and
``evidence/<sensor>/`` with the files it keeps. Evidence paths are stored relative to
the folder, so a copied folder reads the same on a workstation. The station's sink and
a reviewer's command may write at once: each waits for the other's short transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flowedge.core.errors import ConfigError, DataError

HISTORY_FILE = "history.sqlite"
EVIDENCE_FOLDER = "evidence"
FORMAT = 1  # PRAGMA user_version; a newer one is refused
BUSY_TIMEOUT_S = 10.0

# a reviewer's verdict on a decision: on an ANOMALY the first two, on an OK the last two
VERDICTS = ("confirmed_anomaly", "false_alarm", "missed_defect", "confirmed_normal")

# retention classes (decisions.keep_class): under a budget the lowest class goes first
ORDINARY, ANOMALY, REVIEWED = 0, 1, 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    source TEXT NOT NULL,  -- the sensor
    seq INTEGER NOT NULL,  -- its decision number: (source, seq) is the record's identity
    site TEXT NOT NULL,
    station TEXT NOT NULL,
    part_id TEXT NOT NULL,
    captured_utc TEXT NOT NULL,  -- ISO 8601 UTC with milliseconds and Z (sorts as text)
    decided_utc TEXT NOT NULL,
    modality TEXT,  -- image | audio | series; NULL in decisions of earlier releases
    decision TEXT NOT NULL,  -- OK | ANOMALY | ERROR | BASELINING
    score REAL,
    threshold REAL,
    normalised_score REAL,
    error TEXT,  -- for ERROR: why
    model_id TEXT,
    weights_sha256 TEXT,  -- the card's binding to its weights
    calibration_sha256 TEXT,
    backend TEXT,
    drift TEXT,  -- ok | drifted | unchecked; NULL without drift monitoring
    input_path TEXT,  -- kept evidence, relative to the history folder; NULL: none (any more)
    heatmap_path TEXT,  -- the overlay: heatmap, spectrogram or cycle plot
    evidence_bytes INTEGER NOT NULL DEFAULT 0,
    keep_class INTEGER NOT NULL,  -- 0 OK/ERROR, 1 ANOMALY, 2 reviewed
    digest TEXT NOT NULL,  -- sha256 of the document: a re-delivered record has the same
    document BLOB NOT NULL,  -- the decision exactly as the station published it
    PRIMARY KEY (source, seq)
);
CREATE INDEX IF NOT EXISTS decisions_captured ON decisions(captured_utc);
CREATE INDEX IF NOT EXISTS decisions_part ON decisions(part_id);
CREATE INDEX IF NOT EXISTS decisions_keep ON decisions(keep_class, captured_utc);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    digest TEXT NOT NULL UNIQUE,  -- sha256 of the document: a re-delivery is not stored twice
    source TEXT,  -- NULL: a station-wide event
    utc TEXT NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    message TEXT NOT NULL,
    document BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_utc ON events(utc);
CREATE TABLE IF NOT EXISTS reviews (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- the latest review of a sample wins
    source TEXT NOT NULL,
    seq INTEGER NOT NULL,
    verdict TEXT NOT NULL,  -- confirmed_anomaly | false_alarm | missed_defect | confirmed_normal
    reviewer TEXT NOT NULL,
    note TEXT NOT NULL,
    utc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reviews_sample ON reviews(source, seq, id);
"""


def locate(path: str | Path) -> tuple[Path, Path]:
    """(folder, database file) of a history given as its folder or its ``history.sqlite``."""
    path = Path(path)
    if path.suffix == ".sqlite" or path.is_file():
        return path.parent, path
    return path, path / HISTORY_FILE


class HistoryDB:
    """One connection; ``create`` makes the folder and schema (the sink), else the database
    must exist (the commands)."""

    def __init__(self, path: str | Path, create: bool = False) -> None:
        self.folder, self.file = locate(path)
        if not create and not self.file.is_file():
            raise ConfigError(
                f"history {path}: no {HISTORY_FILE} there; give the folder of the station's "
                "history sink (its sinks[].path, default runs/history) or the file itself"
            )
        if create:
            self.folder.mkdir(parents=True, exist_ok=True)  # OSError: the sink reports it
        try:
            self.db = sqlite3.connect(
                self.file, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self._prepare()
        except sqlite3.DatabaseError as exc:
            raise DataError(
                f"history {self.file}: not a readable history database ({exc}); give the "
                "history sink's folder, or restore the file from a backup"
            ) from exc

    def _prepare(self) -> None:
        version = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        if version > FORMAT:
            self.db.close()
            raise DataError(
                f"history {self.file} has format {version}, newer than this flowedge reads "
                f"({FORMAT}); upgrade flowedge to read it"
            )
        if version < FORMAT:
            self.db.executescript(
                f"BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version = {FORMAT}; COMMIT;"
            )

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One commit for everything inside; nothing of it if it raises."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if self.db.in_transaction:  # SQLite itself rolls back on a full disk or I/O error
                self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        return self.db.execute(sql, params).fetchall()

    def value(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        row = self.db.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def resolve(self, relative: str | None) -> Path | None:
        """The file of a stored evidence path."""
        return None if relative is None else self.folder / relative

    def used_bytes(self) -> int:
        """What the database's rows take (pages in use; freed pages are reused first)."""
        pages = self.value("PRAGMA page_count") - self.value("PRAGMA freelist_count")
        return int(pages * self.value("PRAGMA page_size"))

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> HistoryDB:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


@contextmanager
def opened(history: HistoryDB | str | Path) -> Iterator[HistoryDB]:
    """An open history as given, or the one at a path (closed again afterwards)."""
    if isinstance(history, HistoryDB):
        yield history
        return
    with HistoryDB(history) as db:
        yield db
