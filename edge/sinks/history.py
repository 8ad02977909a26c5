"""The history sink: every decision and event into the station's own SQLite history.

``sinks: [{kind: history, name: history, path: runs/history}]``. Its writer thread takes
the records after its cursor in the spool, keeps each decision's evidence (the kept
input, ``pipeline.evidence``, and the heatmap / spectrogram / cycle plot: hard links,
so the station's own rolling limits may delete their names, or copies across file
systems) and stores a batch in one transaction; only then does the spool's cursor move.
A record delivered again after a crash finds its (sensor, seq) row and is skipped.

When the history cannot be written (the disk below ``min_free_mb``, a full or broken
database, a folder gone) nothing is acknowledged: the records wait in the spool within
its limits (``max_backlog``, ``spool.max_messages``), an event and the
``flowedge_sink_failures_total`` counter say so, ``systemctl status`` shows it, and the
writer retries with backoff. The other sinks have their own cursors: MQTT is never
delayed. Retention (:mod:`flowedge.calibration.history.retention`) runs every minute and
whenever a budget is exceeded. Schema, retention and review: docs/history.md.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import Field

from flowedge.calibration.history.records import (
    KeptEvidence,
    add_decision,
    add_event,
    decision_key,
    digest,
    stored_digest,
)
from flowedge.calibration.history.retention import (
    Retention,
    enforce,
    evidence_bytes,
    sweep_orphans,
)
from flowedge.calibration.history.store import EVIDENCE_FOLDER, HistoryDB, locate
from flowedge.core.errors import FlowedgeError
from flowedge.core.outpaths import check_output_dir
from flowedge.core.paths import BoundedPath
from flowedge.edge.checks import CheckResult, failed, passed
from flowedge.edge.loop.filenames import safe_suffix
from flowedge.edge.sinks.base import Delivery, SinkBaseConfig, SinkContext, SinkKind
from flowedge.edge.spool import Record

log = logging.getLogger(__name__)

BATCH = 200  # records per transaction
RETENTION_EVERY_S = 60.0
RETRY_MIN_S, RETRY_MAX_S = 1.0, 30.0
IDLE_S = 0.5
MAX_DAYS = 36_500
MB = 1e6


class HistorySinkConfig(SinkBaseConfig):
    """One ``sinks`` entry of kind ``history``: where, and what it may keep for how long."""

    kind: Literal["history"] = "history"
    name: str = Field("history", pattern=r"^[A-Za-z0-9_.-]+$", min_length=1, max_length=64)
    path: BoundedPath = Field(Path("runs/history"), description="folder: history.sqlite, evidence/")
    keep_days: float = Field(365, gt=0, le=MAX_DAYS, description="unreviewed decisions, events")
    reviewed_keep_days: float = Field(
        3650, gt=0, le=MAX_DAYS, description="reviewed decisions with their evidence"
    )
    evidence_keep_days: float = Field(30, gt=0, le=MAX_DAYS, description="evidence of OK")
    anomaly_keep_days: float = Field(180, gt=0, le=MAX_DAYS, description="evidence of ANOMALY")
    keep_mb: float = Field(1000, gt=0, description="database budget (records)")
    evidence_keep_mb: float = Field(5000, gt=0, description="budget of the evidence files")
    min_free_mb: float = Field(
        500, ge=0, description="the history writes nothing while the disk has less free"
    )

    def retention(self) -> Retention:
        return Retention(
            keep_days=self.keep_days,
            reviewed_keep_days=self.reviewed_keep_days,
            evidence_keep_days=self.evidence_keep_days,
            anomaly_keep_days=self.anomaly_keep_days,
            keep_bytes=self.keep_mb * MB,
            evidence_keep_bytes=self.evidence_keep_mb * MB,
        )


class NoRoom(Exception):
    """The disk is below ``min_free_mb``: writing now could fill it."""


def link_or_copy(source: Path, target: Path) -> None:
    """``target`` becomes ``source``'s file: a hard link (no extra disk), a copy across file
    systems; replaced atomically, so a retry after a crash finds a whole file."""
    partial = target.with_name(target.name + ".tmp")
    partial.unlink(missing_ok=True)
    try:
        os.link(source, partial)
    except OSError:  # another file system, or links not allowed there
        shutil.copyfile(source, partial)
    os.replace(partial, target)


class HistorySink:
    """Owns the writer thread, the only user of the database connection."""

    def __init__(self, cfg: HistorySinkConfig, context: SinkContext) -> None:
        self.name, self.cfg, self.context = cfg.name, cfg, context
        self.delivery = Delivery(context.spool, cfg.name, cfg.max_backlog)
        self.db: HistoryDB | None = None
        self.written = 0  # records stored (or found stored) since start
        self.failure = ""  # why the history cannot be written now; "" while it can
        self.failed_attempts = 0
        self.missing_evidence = 0  # evidence files gone before the history took them
        self._evidence_bytes = 0
        self._next_retention = 0.0
        self._failures = context.metrics.sink_failures.labels(cfg.name)
        self._kick = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{cfg.name}-writer", daemon=True)
        context.spool.subscribe(self.wake)

    # --- the sink protocol -------------------------------------------------------------
    def start(self) -> None:
        log.info("history: writing to %s", self.cfg.path)
        self._thread.start()

    def wake(self) -> None:
        self._kick.set()

    def status_changed(self, reason: str) -> None:
        """The status is state, not a record: the history keeps the events instead."""

    def health(self) -> str:
        if self.failure:
            return (
                f"history NOT WRITTEN ({self.failure}); "
                f"{self.delivery.backlog()} record(s) wait in the spool"
            )
        return f"history {self.cfg.path}: {self.written} record(s) written"

    def flush(self, timeout_s: float) -> bool:
        return self.delivery.wait_until_delivered(timeout_s, self.wake)

    def stop(self, reason: str, flush_timeout_s: float = 5.0) -> None:
        """Store what it can within the timeout; the rest stays in the spool."""
        if not self.failure:
            self.flush(flush_timeout_s)
        self._stop.set()
        self.wake()
        self._thread.join(timeout=max(flush_timeout_s, 2.0))
        if not self._thread.is_alive():
            self._close()

    def _close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    # --- the writer thread ---------------------------------------------------------------
    def _run(self) -> None:
        retry = RETRY_MIN_S
        while not self._stop.is_set():
            self._kick.clear()  # cleared before looking: a later wake is never missed
            try:
                stored = self._step()
            except Exception as exc:  # a disk or database failure (or a bug): wait, retry
                self._failed(exc)
                self._close()  # the next attempt opens afresh (and sweeps what it left)
                self._stop.wait(retry)
                retry = min(retry * 2, RETRY_MAX_S)
                continue
            retry = RETRY_MIN_S
            if self.failure:
                self._recovered()
            if not stored:
                self._kick.wait(IDLE_S)

    def _step(self) -> int:
        """Store the next batch and acknowledge it; retention when due. Records stored."""
        db = self._open()
        records = self.delivery.next(BATCH)
        if records:
            try:
                self._room()
                self._store(db, records)
            except BaseException:
                self.delivery.rewind()  # nothing acknowledged: the same records next time
                raise
            self.delivery.acknowledged(record.id for record in records)
            self.written += len(records)
        over = (
            self._evidence_bytes > self.cfg.evidence_keep_mb * MB
            or db.used_bytes() > self.cfg.keep_mb * MB
        )
        if over or time.monotonic() >= self._next_retention:
            self._retain(db)
        return len(records)

    def _open(self) -> HistoryDB:
        if self.db is None:
            self.cfg.path.mkdir(parents=True, exist_ok=True)
            self._room()
            db = HistoryDB(self.cfg.path, create=True)
            swept = sweep_orphans(db)
            if swept:
                log.info("history: %d evidence file(s) no record refers to deleted", swept)
            self._evidence_bytes = evidence_bytes(db)
            self.db = db
        return self.db

    def _room(self) -> None:
        free = shutil.disk_usage(self.cfg.path).free
        if free < self.cfg.min_free_mb * MB:
            raise NoRoom(
                f"only {free / MB:.0f} MB free on the disk of {self.cfg.path}, below "
                f"min_free_mb {self.cfg.min_free_mb:g}"
            )

    def _store(self, db: HistoryDB, records: list[Record]) -> None:
        conflicts: list[str] = []
        added = 0
        with db.transaction():
            for record in records:
                try:
                    doc = record.doc()
                    if record.kind == "decision":
                        added += self._decision(db, record, doc, conflicts)
                    else:
                        add_event(db, doc, record.body)
                except (KeyError, TypeError, ValueError) as exc:  # not a station document
                    log.error("history: record %d skipped, unreadable (%s)", record.id, exc)
        self._evidence_bytes += added
        if conflicts:
            self.context.emit(
                None,
                "history_conflict",
                f"history {self.cfg.path} already holds other decisions under "
                f"{', '.join(conflicts[:5])}: the spool was probably deleted and the numbering "
                "restarted; the stored ones are kept, the new ones are only in the other sinks",
                sink=self.name,
                decisions=conflicts,
            )

    def _decision(self, db: HistoryDB, record: Record, doc: dict, conflicts: list[str]) -> int:
        """Store one decision unless stored already; the bytes of evidence it kept."""
        source, seq = decision_key(doc)
        known = stored_digest(db, source, seq)
        if known is not None:
            if known != digest(record.body):
                conflicts.append(f"{source} #{seq}")
            return 0  # delivered again: stored already
        kept = self._keep_evidence(db, doc, source, seq)
        add_decision(db, doc, record.body, kept)
        return kept.bytes

    def _keep_evidence(
        self, db: HistoryDB, doc: dict[str, Any], source: str, seq: int
    ) -> KeptEvidence:
        station_files = {
            "input": (doc.get("evidence") or {}).get("input"),
            "heatmap": doc.get("heatmap"),
        }
        kept: dict[str, str] = {}
        size = 0
        for label, station_file in station_files.items():
            if not isinstance(station_file, str) or not station_file:
                continue
            original = Path(station_file)
            if not original.is_file():  # the station's rolling limit was faster than us
                self.missing_evidence += 1
                log.warning(
                    "history: %s of %s #%d gone before it was kept (%s): the history was "
                    "behind; raise pipeline.heatmap_keep / pipeline.evidence.keep",
                    label,
                    source,
                    seq,
                    original,
                )
                continue
            relative = PurePosixPath(
                EVIDENCE_FOLDER, source, f"{seq:09d}-{label}{safe_suffix(original.name)}"
            )
            target = db.folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(original, target)
            kept[label] = relative.as_posix()
            size += target.stat().st_size
        return KeptEvidence(kept.get("input"), kept.get("heatmap"), size)

    def _retain(self, db: HistoryDB) -> None:
        pruned = enforce(db, self.cfg.retention(), datetime.now(UTC))
        for problem in pruned.failed:
            log.warning("history: evidence file not deleted: %s", problem)
        self._evidence_bytes = evidence_bytes(db)
        self._next_retention = time.monotonic() + RETENTION_EVERY_S

    # --- failure and recovery --------------------------------------------------------------
    def _failed(self, exc: Exception) -> None:
        expected = isinstance(exc, NoRoom | OSError | sqlite3.Error | FlowedgeError)
        reason = str(exc) if expected else f"{type(exc).__name__}: {exc}"
        self.failed_attempts += 1
        self._failures.inc()
        if self.failure:  # the outage goes on: counted, said once
            self.failure = reason
            return
        self.failure = reason
        if expected:
            log.error("history %s cannot be written: %s", self.cfg.path, reason)
        else:  # a bug: keep the traceback
            log.exception("history %s cannot be written", self.cfg.path)
        self.context.emit(
            None,
            "history_failed",
            f"history {self.cfg.path} cannot be written ({reason}); its records wait in the "
            "spool (within max_backlog and spool.max_messages) and the other sinks go on: "
            "free disk space or repair the history folder",
            sink=self.name,
            reason=reason,
        )

    def _recovered(self) -> None:
        log.info(
            "history %s written again after %d failed attempt(s)",
            self.cfg.path,
            self.failed_attempts,
        )
        self.context.emit(
            None,
            "history_recovered",
            f"history {self.cfg.path} is written again ({self.failed_attempts} failed attempts)",
            sink=self.name,
            failed_attempts=self.failed_attempts,
        )
        self.failure = ""
        self.failed_attempts = 0


def check(cfg: HistorySinkConfig, site: str, station: str, timeout_s: float) -> CheckResult:
    """The folder can be written, the disk has room, an existing database opens."""
    name = f"history {cfg.name}"
    try:
        check_output_dir(cfg.path, f"sinks.{cfg.name}.path")
        existing = cfg.path
        while not existing.exists():
            existing = existing.parent
        free = shutil.disk_usage(existing).free / MB
        if free < cfg.min_free_mb:
            return failed(
                name,
                f"{cfg.path}: only {free:.0f} MB free, below min_free_mb {cfg.min_free_mb:g}: "
                "the history would write nothing; free disk space or lower min_free_mb",
            )
        if not locate(cfg.path)[1].is_file():
            return passed(name, f"{cfg.path} can be written ({free:.0f} MB free); new history")
        with HistoryDB(cfg.path) as db:
            count = db.value("SELECT COUNT(*) FROM decisions")
    except FlowedgeError as exc:
        return failed(name, str(exc), exc.exit_code)
    except OSError as exc:
        return failed(name, f"{cfg.path}: {exc}")
    return passed(name, f"{cfg.path}: {count} decision(s), {free:.0f} MB free")


KIND = SinkKind(HistorySinkConfig, HistorySink, check)
