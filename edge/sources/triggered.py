"""``kind: triggered``: another source whose samples are taken only when the PLC triggers.

The PLC gives a part id and a trigger (OPC UA nodes of the ``opcua`` sink, or the MQTT
topics of ``mqtt`` here); the wrapped source's next sample is taken under that part id,
and its decision answers the PLC (:mod:`flowedge.edge.handshake`). Samples the wrapped
source offers between triggers wait in it (a folder's next file, a camera's next frame).

A wrapped source that gives nothing within ``capture_timeout_s`` of a trigger (a camera that
hangs, a folder the vision system stopped writing to) answers that trigger ERROR, so the PLC
gets a result and the line is not held; a sample it hands over after that belonged to the
part already answered and is discarded with a ``sample_discarded`` event.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, Literal

from pydantic import Field, PrivateAttr, model_validator

from flowedge.core.validation import DAY_S
from flowedge.edge.checks import CheckResult
from flowedge.edge.handshake import Handshake
from flowedge.edge.handshake_mqtt import HandshakeTopics, MqttHandshake
from flowedge.edge.sources.base import (
    Frame,
    Source,
    SourceBaseConfig,
    SourceContext,
    SourceKind,
    replayed,
)
from flowedge.edge.spool import IntakeRow


class TriggeredConfig(SourceBaseConfig):
    """A source taken by PLC trigger; ``source`` is the wrapped source (any other kind)."""

    kind: Literal["triggered"] = "triggered"
    source: dict[str, Any] = Field(
        description="the wrapped source's keys (kind, path, uri, ...); its name is this one's"
    )
    ack_timeout_s: float = Field(
        10.0, gt=0, le=DAY_S, description="a result not acknowledged this long: an event"
    )
    capture_timeout_s: float | None = Field(
        10.0,
        gt=0,
        le=DAY_S,
        description="no sample from the wrapped source this long after a trigger: the "
        "trigger is answered ERROR; None: wait for the sample however long it takes",
    )
    mqtt: HandshakeTopics | None = Field(
        None, description="the handshake over MQTT topics (PLCs without OPC UA); None: OPC UA only"
    )
    _inner: Any = PrivateAttr(None)

    @model_validator(mode="after")
    def _wrapped(self) -> TriggeredConfig:
        from flowedge.edge.sources import parse_source  # the registry imports this module

        if self.source.get("kind") == "triggered":
            raise ValueError("a triggered source cannot wrap another triggered source")
        if self.backpressure != "block":  # a dropped sample would leave the PLC waiting
            raise ValueError("a triggered source needs backpressure: block (each trigger answered)")
        self._inner = parse_source({**self.source, "name": self.name})
        return self

    @property
    def inner(self) -> SourceBaseConfig:
        return self._inner


class TriggeredSource:
    """Yields the wrapped source's next frame per accepted trigger, under the PLC's part id."""

    def __init__(self, cfg: TriggeredConfig, context: SourceContext) -> None:
        from flowedge.edge.sources import make_source

        self.name, self.cfg = cfg.name, cfg
        self.inner: Source = make_source(cfg.inner, context)
        self.modality = self.inner.modality
        self.handshake = context.handshakes.add(
            Handshake(cfg.name, cfg.ack_timeout_s, context.events)
        )
        self.transport = None
        if cfg.mqtt is not None and context.broker is not None:
            self.transport = MqttHandshake(self.handshake, context.broker, cfg.mqtt)

    def replay(self, row: IntakeRow) -> Frame:
        """A journal row left by a crash: the wrapped source reads it again."""
        return getattr(self.inner, "replay", replayed)(row)

    def frames(self, stop: threading.Event) -> Iterator[Frame]:
        samples = OnRequest(self.inner.frames(stop), self._discarded, stop)
        why = "the wrapped source ended"
        try:
            while not stop.is_set():
                part_id = self.handshake.wait_trigger(stop)
                if part_id is None:
                    return
                frame = samples.take(self.cfg.capture_timeout_s)
                if frame is TIMED_OUT:
                    yield Frame(part_id=part_id, payload=None, error=self._no_sample(part_id))
                    continue
                if frame is None:  # the wrapped source ended: the trigger gets no sample
                    return
                yield replace(frame, part_id=part_id)
        except Exception as exc:
            why = f"the wrapped source failed: {exc}"
            raise
        finally:
            samples.close()
            self.handshake.stop("the station is stopping" if stop.is_set() else why)
            if self.transport is not None:
                self.transport.close()

    def _no_sample(self, part_id: str) -> str:
        return (
            f"{self.name}: the {self.cfg.inner.kind} source gave no sample within "
            f"{self.cfg.capture_timeout_s:g} s of the trigger for part {part_id}; check the "
            "camera or the folder it reads (capture_timeout_s sets the wait)"
        )

    def _discarded(self, frame: Frame) -> None:
        self.handshake.events(
            self.name,
            "sample_discarded",
            f"{self.name}: a sample ({frame.part_id}) arrived after its trigger had timed out "
            "and was answered ERROR; it was discarded (it belongs to a part already answered)",
            part_id=frame.part_id,
        )


TIMED_OUT = object()  # OnRequest.take: no sample within the timeout
CLOSED = 0  # OnRequest's request numbers start at 1; 0 ends its thread


class OnRequest:
    """The wrapped source's samples one per request, taken on a thread of their own, so a
    trigger can time out while the source hangs. A sample that arrives for a request that
    timed out is handed to ``discarded``: it belongs to a part already answered."""

    def __init__(
        self, frames: Iterator[Frame], discarded: Callable[[Frame], None], stop: threading.Event
    ) -> None:
        self.frames, self.discarded, self.stop = frames, discarded, stop
        self._requests: queue.Queue[int] = queue.Queue()
        self._results: queue.Queue[tuple[int, Frame | None, BaseException | None]] = queue.Queue()
        self._numbers = iter(range(1, 1 << 62))
        self._pending: int | None = None  # the request the source is still working on
        threading.Thread(target=self._run, name="triggered-capture", daemon=True).start()

    def _run(self) -> None:
        while True:
            number = self._requests.get()
            if number == CLOSED:
                return
            try:
                frame = next(self.frames, None)
            except BaseException as exc:  # handed to the capture thread, which reports it
                self._results.put((number, None, exc))
                return
            self._results.put((number, frame, None))
            if frame is None:
                return

    def _request(self) -> int:
        self._pending = next(self._numbers)
        self._requests.put(self._pending)
        return self._pending

    def take(self, timeout_s: float | None) -> Frame | None | object:
        """The next sample, None when the source ended, TIMED_OUT after ``timeout_s``."""
        wanted = self._request() if self._pending is None else None  # else: a stale one runs
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self.stop.is_set():
            wait = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
            if wait <= 0:
                return TIMED_OUT
            try:
                number, frame, error = self._results.get(timeout=wait)
            except queue.Empty:
                continue
            self._pending = None
            if error is not None:
                raise error
            if frame is None or number == wanted:
                return frame
            self.discarded(frame)
            wanted = self._request()
        return None

    def close(self) -> None:
        """End the thread once the source's pending sample (if any) is in."""
        self._requests.put(CLOSED)


def check(cfg: TriggeredConfig, timeout_s: float) -> CheckResult:
    """The wrapped source's own check (a trigger is not needed to see it deliver)."""
    from flowedge.edge.sources import SOURCE_KINDS

    return SOURCE_KINDS[cfg.inner.kind].check(cfg.inner, timeout_s)


KIND = SourceKind(TriggeredConfig, TriggeredSource, check)
