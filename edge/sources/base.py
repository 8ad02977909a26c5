"""What every source kind shares: the frame it yields, its config base, its registration.

A source yields ``Frame``s; the capture thread journals each one and turns it into a
sample. A source never stalls silently: one that cannot be opened or stops delivering
reports an event, waits with exponential backoff and tries again, and reports again
when it is back. File sources remember what they took (``SourceMemory``, kept in the
spool and written in the same transaction as the intake journal row), so a restart
neither skips nor repeats a file.

A source kind is one module defining its config (a :class:`SourceBaseConfig` with a
``kind`` literal), its source class and its ``flowedge check``, plus one
:class:`SourceKind` registration line in ``edge/sources/__init__.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import Field, model_validator

from flowedge.core.broker import MQTTConfig
from flowedge.core.validation import DAY_S, MAX_QUEUE, Name, Strict, ordered_backoff
from flowedge.edge.checks import CheckResult
from flowedge.edge.handshake import Handshakes
from flowedge.edge.spool import IntakeRow
from flowedge.edge.timestamps import utc_now

# (source name, kind, message, details) -> None; kinds are listed in event.schema.json
EventSink = Callable[..., None]

PAYLOAD_GONE = "station restarted before this sample was scored; the payload is gone"


@dataclass(frozen=True)
class Frame:
    """One captured sample as a source hands it over."""

    part_id: str  # file name or frame counter: what the PLC matches the decision to
    payload: Any  # a file path (decoded off the capture thread) or an in-memory frame
    locator: str | None = None  # where the payload can be read again after a crash
    remember: tuple[str, str] | None = None  # (key, value) the source keeps once journaled
    error: str | None = None  # the source already knows the sample is bad: answered ERROR
    captured_utc: str = field(default_factory=utc_now)
    # fields the source adds to the decision message, by name: {"event": {...}} for an audio
    # motion (label, start/end), {"cycle": {...}} for a robot cycle (id, rows, time range)
    context: dict[str, Any] | None = None
    # the payload's version when the source knows it better than the locator file's
    # (a cycle of a growing log: a digest of its bytes; the file itself changes on every line)
    version: str | None = None


class Source(Protocol):
    name: str
    modality: str

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        """Yield samples until exhausted or ``stop`` is set.

        A source whose locators are not plain file paths also has ``replay(row) -> Frame``:
        the frame of an intake journal row left open by a crash (see :func:`replayed`).
        """


class SourceMemory(Protocol):
    """Persistent memory of the sources (the spool): survives restarts and crashes."""

    def recall(self, source: str) -> dict[str, str]: ...

    def remember(self, source: str, entries: dict[str, str]) -> None: ...

    def prune_memory(self, source: str, keep: set[str], cap: int) -> int: ...

    def pending_intake(self, source: str) -> list[Any]: ...


class SourceBaseConfig(Strict):
    """The keys every source has; each kind adds its own and a ``kind`` literal."""

    name: Name
    backpressure: Literal["block", "drop_oldest"] = "block"
    queue_size: int = Field(8, ge=1, le=MAX_QUEUE)
    reconnect_min_s: float = Field(0.5, gt=0, le=DAY_S)
    reconnect_max_s: float = Field(30.0, gt=0, le=DAY_S)

    @model_validator(mode="after")
    def _backoff(self) -> SourceBaseConfig:
        ordered_backoff(self.reconnect_min_s, self.reconnect_max_s)
        return self


@dataclass(frozen=True)
class SourceContext:
    """What the station hands a source it opens."""

    events: EventSink
    memory: SourceMemory | None = None
    on_state: Callable[[str, bool], None] | None = None  # (source, delivering) changes
    broker: MQTTConfig | None = None  # the station's broker (a microphone's PLC trigger)
    handshakes: Handshakes = field(default_factory=Handshakes)  # a triggered source's PLC handshake


@dataclass(frozen=True)
class SourceKind:
    """One registered source kind: its config model, how to open it, how to check it."""

    config: type[SourceBaseConfig]
    open: Callable[[Any, SourceContext], Source]
    check: Callable[[Any, float], CheckResult]

    @property
    def name(self) -> str:
        return str(self.config.model_fields["kind"].default)


class Pacer:
    """Holds a loop to ``rate_hz`` without drift; no rate means as fast as possible."""

    def __init__(self, rate_hz: float | None) -> None:
        self.period = 1.0 / rate_hz if rate_hz else 0.0
        self.next = time.monotonic()

    def wait(self, stop: threading.Event) -> None:
        if self.period:
            self.next = max(self.next + self.period, time.monotonic())
            stop.wait(max(0.0, self.next - time.monotonic()))


def file_version(stat: Any) -> str:
    """Size, mtime (ns) and inode: a file rewritten, replaced or moved in reads as a new version."""
    return f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ino}"


def current_version(locator: str | None) -> str | None:
    """The version of the file behind ``locator`` now; None when there is none (or no file)."""
    if locator is None:
        return None
    try:
        return file_version(Path(locator).stat())
    except OSError:
        return None


def replayed(row: IntakeRow) -> Frame:
    """The frame of a journal row, re-read from its file when that file is still the same."""
    if row.error is not None:
        return Frame(row.part_id, None, row.locator, error=row.error, captured_utc=row.captured_utc)
    if row.locator is None or current_version(row.locator) != row.version:
        return gone(row)
    return Frame(row.part_id, Path(row.locator), row.locator, captured_utc=row.captured_utc)


def gone(row: IntakeRow) -> Frame:
    """The ERROR frame of a journal row whose payload cannot be read again."""
    error = f"{row.source}/{row.part_id}: {PAYLOAD_GONE}"
    return Frame(row.part_id, None, row.locator, error=error, captured_utc=row.captured_utc)
