"""Intake: every captured sample is journaled before it enters the queues.

The journal row is closed in the transaction that stores the sample's decision
(``Spool.put_numbered``), so after SIGKILL or power loss the rows still open are
exactly the samples that were captured and never answered. A source's capture
thread answers those first: re-read from their locator when the file is still
there unchanged, otherwise answered ERROR (an in-memory camera frame is gone).
A source with its own kind of locator (a byte range of a growing log) replays
its rows itself (``source.replay``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from flowedge.edge.sources import Frame, Source, file_version
from flowedge.edge.spool import IntakeRow, Spool

PAYLOAD_GONE = "station restarted before this sample was scored; the payload is gone"


def journaled(spool: Spool, source: Source, stop: threading.Event) -> Iterator[tuple[Frame, int]]:
    """(frame, journal id): first what an earlier run left unanswered, then new captures."""
    replay = getattr(source, "replay", replayed)
    for row in spool.pending_intake(source.name):
        yield replay(row), row.id
    for frame in source.frames(stop):
        intake_id = spool.record_intake(
            source.name,
            frame.part_id,
            frame.captured_utc,
            locator=frame.locator,
            version=frame.version or _version(frame.locator),
            error=frame.error,
            remember=frame.remember,
        )
        yield frame, intake_id


def replayed(row: IntakeRow) -> Frame:
    """The frame of a journal row, re-read from its file when that file is still the same."""
    if row.error is not None:
        return Frame(row.part_id, None, row.locator, error=row.error, captured_utc=row.captured_utc)
    if row.locator is None or _version(row.locator) != row.version:
        return gone(row)
    return Frame(row.part_id, Path(row.locator), row.locator, captured_utc=row.captured_utc)


def gone(row: IntakeRow) -> Frame:
    """The ERROR frame of a journal row whose payload cannot be read again."""
    error = f"{row.source}/{row.part_id}: {PAYLOAD_GONE}"
    return Frame(row.part_id, None, row.locator, error=error, captured_utc=row.captured_utc)


def _version(locator: str | None) -> str | None:
    """The version of the file behind ``locator`` now; None when there is none (or no file)."""
    if locator is None:
        return None
    try:
        return file_version(Path(locator).stat())
    except OSError:
        return None
