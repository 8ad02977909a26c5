"""The PLC handshake of a line-triggered source: trigger -> busy -> result ready -> acknowledged.

One state machine per ``triggered`` source, shared by every transport that speaks it (OPC UA
nodes in the ``opcua`` sink, MQTT topics in :mod:`flowedge.edge.handshake_mqtt`), so both
behave the same. The PLC gives a part id and a trigger; the source takes its next sample
under that part id (:meth:`Handshake.wait_trigger`); the station's decision for that part
(:meth:`Handshakes.decided`, called by the publish stage) is the result; the PLC then
acknowledges it. A result not acknowledged within ``ack_timeout_s`` is a
``handshake_timeout`` event; a trigger that cannot be taken (busy, or the last result not
yet acknowledged) is refused with a ``handshake_refused`` event, never silently.

When the source stops taking samples (the station stops, the wrapped source ends or
fails) the state is ``stopped``: a PLC is never shown Ready by a source that cannot answer,
and its triggers are refused with the reason.

The state is held in memory only: after a restart the station is ready again and the PLC
triggers again (a replayed decision never answers a trigger it did not receive).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

READY, BUSY, RESULT_READY, STOPPED = "ready", "busy", "result_ready", "stopped"
MAX_PART_ID = 200  # characters: a part id is a label (file names, messages), not a payload

EventSink = Callable[..., None]  # (sensor, kind, message, **details)


@dataclass(frozen=True)
class Snapshot:
    """What a transport shows the PLC: the state and, once there is one, the result."""

    source: str
    state: str  # ready | busy | result_ready | stopped
    part_id: str | None  # the part being inspected or answered
    result: dict[str, Any] | None  # the decision document answering ``part_id``
    timed_out: bool = False  # the result waited longer than ack_timeout_s


class Handshake:
    """The state machine of one source; every method is thread-safe and never blocks long."""

    def __init__(self, source: str, ack_timeout_s: float, events: EventSink) -> None:
        self.source, self.ack_timeout_s, self.events = source, ack_timeout_s, events
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._state, self._part_id = READY, None
        self._stopped_why = ""
        self._result: dict[str, Any] | None = None
        self._taken = False  # the source has taken the sample for the pending trigger
        self._timed_out = False
        self._round = 0  # one per accepted trigger: a late timer never expires a newer round
        self._timer: threading.Timer | None = None
        self._listeners: list[Callable[[Snapshot], None]] = []

    def listen(self, listener: Callable[[Snapshot], None]) -> None:
        """``listener(snapshot)`` after every change (called outside the lock)."""
        self._listeners.append(listener)
        listener(self.snapshot())

    def snapshot(self) -> Snapshot:
        with self._lock:
            return self._snapshot()

    def _snapshot(self) -> Snapshot:
        return Snapshot(self.source, self._state, self._part_id, self._result, self._timed_out)

    def _tell(self, snapshot: Snapshot) -> None:
        for listener in self._listeners:
            try:
                listener(snapshot)
            except Exception:  # a transport's failure must not stop the others
                log.exception("%s: handshake listener failed", self.source)

    # --- from the PLC (any transport) ---------------------------------------------------
    def trigger(self, part_id: str, origin: str) -> str | None:
        """Take a trigger for ``part_id``; the reason it was refused, or None when taken."""
        part_id = part_id.strip()
        with self._lock:
            if not part_id:
                why = "the trigger has no part id; write the part id before the trigger"
            elif len(part_id) > MAX_PART_ID or not part_id.isprintable():
                why = f"the part id must be printable and at most {MAX_PART_ID} characters"
            elif self._state == STOPPED:
                why = f"the source has stopped ({self._stopped_why}); see the station's log"
            elif self._state == BUSY:
                why = f"still inspecting part {self._part_id}; wait for the result"
            elif self._state == RESULT_READY and not self._timed_out:
                why = f"the result for part {self._part_id} is not acknowledged yet; ack it first"
            else:
                why = None
                self._cancel_timer()
                self._round += 1
                self._state, self._part_id, self._result = BUSY, part_id, None
                self._taken = self._timed_out = False
                self._changed.notify_all()
                snapshot = self._snapshot()
        if why is not None:
            self.events(
                self.source,
                "handshake_refused",
                f"{self.source}: trigger for part {part_id[:MAX_PART_ID] or '(none)'!r} from "
                f"{origin} refused: {why}",
                part_id=part_id[:MAX_PART_ID],
                origin=origin,
            )
            return why
        log.info("%s: triggered for part %s by %s", self.source, part_id, origin)
        self._tell(snapshot)
        return None

    def acknowledge(self, origin: str, part_id: str | None = None) -> bool:
        """The PLC has the result (for ``part_id``, when the transport names it): ready again."""
        with self._lock:
            if self._state != RESULT_READY or (part_id is not None and part_id != self._part_id):
                log.warning(
                    "%s: acknowledgement from %s for part %s ignored (state %s, part %s)",
                    self.source,
                    origin,
                    part_id,
                    self._state,
                    self._part_id,
                )
                return False
            self._cancel_timer()
            self._state, self._timed_out = READY, False
            snapshot = self._snapshot()
        self._tell(snapshot)
        return True

    # --- from the station -----------------------------------------------------------------
    def wait_trigger(self, stop: threading.Event, poll_s: float = 0.2) -> str | None:
        """The part id of a trigger whose sample is still to be taken (marked taken), or None
        when ``stop`` is set first. The capture thread of the triggered source waits here."""
        with self._lock:
            while not stop.is_set():
                if self._state == BUSY and not self._taken:
                    self._taken = True
                    return self._part_id
                self._changed.wait(poll_s)
        return None

    def decided(self, doc: dict[str, Any]) -> None:
        """A decision of this source: the result, when it answers the pending trigger."""
        with self._lock:
            if self._state != BUSY or doc.get("part_id") != self._part_id:
                return
            self._state, self._result = RESULT_READY, doc
            round_ = self._round
            self._timer = threading.Timer(self.ack_timeout_s, self._expire, args=(round_,))
            self._timer.daemon = True
            self._timer.start()
            snapshot = self._snapshot()
        self._tell(snapshot)

    def _expire(self, round_: int) -> None:
        with self._lock:
            if self._round != round_ or self._state != RESULT_READY:
                return
            self._timed_out = True
            part_id, snapshot = self._part_id, self._snapshot()
        self.events(
            self.source,
            "handshake_timeout",
            f"{self.source}: the PLC did not acknowledge the result for part {part_id} within "
            f"{self.ack_timeout_s:g} s; check the PLC program's ResultAck (or ack topic); the "
            "next trigger is taken",
            part_id=part_id,
            ack_timeout_s=self.ack_timeout_s,
        )
        self._tell(snapshot)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def stop(self, why: str) -> None:
        """The source takes no more samples (``why``): not ready, every trigger refused."""
        with self._lock:
            self._cancel_timer()
            if self._state == STOPPED:
                return
            self._state, self._stopped_why = STOPPED, why
            self._changed.notify_all()
            snapshot = self._snapshot()
        log.info("%s: handshake stopped: %s", self.source, why)
        self._tell(snapshot)

    def close(self) -> None:
        with self._lock:
            self._cancel_timer()


class Handshakes:
    """The station's handshakes by source name: sources register theirs when opened, the
    publish stage hands each decision over, the transports look them up."""

    def __init__(self) -> None:
        self._by_source: dict[str, Handshake] = {}

    def add(self, handshake: Handshake) -> Handshake:
        self._by_source[handshake.source] = handshake
        return handshake

    def get(self, source: str) -> Handshake | None:
        return self._by_source.get(source)

    def all(self) -> list[Handshake]:
        return list(self._by_source.values())

    def decided(self, source: str, doc: dict[str, Any]) -> None:
        handshake = self._by_source.get(source)
        if handshake is not None:
            handshake.decided(doc)

    def close(self) -> None:
        for handshake in self._by_source.values():
            handshake.close()
