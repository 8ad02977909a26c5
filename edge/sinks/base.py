"""What every sink kind shares: its config base, the station context, its delivery cursor.

A sink takes the records (decisions and events) the station stored in the spool and
delivers them over one protocol: MQTT JSON now; Sparkplug B, OPC UA or a history
database are further kinds. Each sink has its own durable cursor in the spool
(:class:`Delivery`), so a slow or dead sink never blocks or loses another's records,
and a record is deleted only once every attached sink has acknowledged it.

A sink kind is one module defining its config (a :class:`SinkBaseConfig` with a
``kind`` literal), the sink and its ``flowedge check``, ending in
``KIND = SinkKind(Config, open, check)``; then one line in ``edge/sinks/__init__.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import Field

from flowedge.core.validation import MAX_RECORDS, Name, Strict
from flowedge.edge.checks import CheckResult
from flowedge.edge.commands import StationCommands
from flowedge.edge.handshake import Handshakes
from flowedge.edge.metrics import Metrics
from flowedge.edge.spool import Record, Spool


class SinkBaseConfig(Strict):
    """The keys every sink has; each kind adds its own and a ``kind`` literal."""

    name: Name  # the delivery cursor's name in the spool: keep it when editing the sink
    enabled: bool = True
    max_backlog: int | None = Field(
        None,
        ge=1,
        le=MAX_RECORDS,
        description="records this sink may fall behind before its oldest are passed over "
        "(counted and reported); None: only spool.max_messages bounds it",
    )

    def station_problems(self, site: str, station: str, sources: list[str]) -> list[str]:
        """What this sink cannot do with the station's names (e.g. a topic too long)."""
        return []


class Sink(Protocol):
    name: str

    def start(self) -> None:
        """Connect and start delivering (on its own threads; never blocks the station)."""

    def wake(self) -> None:
        """New records are in the spool (called after each commit; must not block)."""

    def status_changed(self, reason: str) -> None:
        """The station's state changed (a source lost or back, a reload)."""

    def health(self) -> str:
        """One phrase for ``systemctl status``: connected, or why not."""

    def flush(self, timeout_s: float) -> bool:
        """Wait until this sink has acknowledged every record; False on timeout."""

    def stop(self, reason: str, flush_timeout_s: float) -> None:
        """Deliver what it can within the timeout, announce ``reason``, disconnect."""


@dataclass(frozen=True)
class SinkContext:
    """What the station hands a sink it opens."""

    site: str
    station: str
    spool: Spool
    metrics: Metrics
    emit: Callable[..., None]  # (sensor, kind, message, **details): an event
    status_fields: Callable[[], dict[str, Any]]  # the station's live state
    commands: StationCommands  # what a sink may ask of the station (allow-listed, logged)
    handshakes: Handshakes = field(default_factory=Handshakes)  # triggered sources' PLC handshakes
    config: Any = None  # the station's FlowedgeConfig (its folders, its model), read only
    sinks_health: Callable[[], dict[str, str]] = dict  # each sink's health line, by name


@dataclass(frozen=True)
class SinkKind:
    """One registered sink kind: its config model, how to open it, how to check it."""

    config: type[SinkBaseConfig]
    open: Callable[[Any, SinkContext], Sink]
    check: Callable[[Any, str, str, float], CheckResult]  # (config, site, station, timeout_s)

    @property
    def name(self) -> str:
        return str(self.config.model_fields["kind"].default)


class Delivery:
    """One sink's place in the spool: records go out in order and may be acknowledged in
    any order; the durable cursor moves over the acknowledged prefix, so a crash re-sends
    at most what was in flight (at-least-once; receivers de-duplicate by ``seq``)."""

    def __init__(self, spool: Spool, sink: str, max_backlog: int | None = None) -> None:
        self.spool, self.sink = spool, sink
        self.sent = spool.attach(sink, max_backlog)  # highest id handed out in this process
        self._outstanding: dict[int, bool] = {}  # id -> acknowledged, in send order

    def next(self, limit: int) -> list[Record]:
        """The next records to send (after the last one handed out), at most ``limit``."""
        start = max(self.sent, self.spool.cursor(self.sink))  # max_backlog may have moved it
        records = self.spool.after(start, limit)
        for record in records:
            self._outstanding[record.id] = False
        if records:
            self.sent = records[-1].id
        return records

    def acknowledged(self, ids: Iterable[int]) -> None:
        """The receiver has these records: move the durable cursor over the acknowledged prefix."""
        for record_id in ids:
            if record_id in self._outstanding:
                self._outstanding[record_id] = True
        delivered = None
        while self._outstanding:
            first = next(iter(self._outstanding))
            if not self._outstanding[first]:
                break
            del self._outstanding[first]
            delivered = first
        if delivered is not None:
            self.spool.advance(self.sink, delivered)

    def in_flight(self) -> int:
        return len(self._outstanding)

    def rewind(self) -> None:
        """Forget what is in flight (a new connection): send again from the durable cursor."""
        self._outstanding.clear()
        self.sent = self.spool.cursor(self.sink)

    def backlog(self) -> int:
        return self.spool.backlog(self.sink)

    def wait_until_delivered(self, timeout_s: float, wake: Callable[[], None]) -> bool:
        """Wait until the sink has acknowledged every record (``wake`` its sender meanwhile);
        False when ``timeout_s`` ran out first. A sink's ``flush``."""
        deadline = time.monotonic() + timeout_s
        while self.backlog() and time.monotonic() < deadline:
            wake()
            time.sleep(0.02)
        return self.backlog() == 0
