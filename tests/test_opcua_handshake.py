"""The PLC handshake's state machine on its own (both transports share it), and the results
file that keeps the OPC UA counters right across restarts."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from flowedge.edge.handshake import BUSY, READY, RESULT_READY, STOPPED, Handshake, Handshakes
from flowedge.edge.sinks.opcua_results import ResultsState


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, Any]]] = []
        self.arrived = threading.Event()

    def __call__(self, source: str, kind: str, message: str, **details: Any) -> None:
        self.seen.append((kind, message, details))
        self.arrived.set()


def decision(part_id: str, seq: int = 1, verdict: str = "OK") -> dict[str, Any]:
    return {"sensor": "cam1", "part_id": part_id, "seq": seq, "decision": verdict, "score": 1.0}


def test_trigger_result_ack_and_refusals() -> None:
    events = Events()
    registry = Handshakes()
    handshake = registry.add(Handshake("cam1", 60.0, events))
    states: list[str] = []
    handshake.listen(lambda snapshot: states.append(snapshot.state))
    stop = threading.Event()
    assert handshake.trigger("  ", "test") is not None  # no part id
    assert handshake.trigger("P" * 201, "test") is not None  # not a label
    assert handshake.trigger("P\x07x", "test") is not None  # a control character
    assert handshake.trigger("P-1", "test") is None
    assert handshake.trigger("P-2", "test") is not None  # busy
    assert handshake.wait_trigger(stop) == "P-1"
    registry.decided("cam1", decision("P-0"))  # another part's decision: not the answer
    assert handshake.snapshot().state == BUSY
    registry.decided("cam1", decision("P-1"))
    snapshot = handshake.snapshot()
    assert snapshot.state == RESULT_READY and snapshot.result["part_id"] == "P-1"
    assert handshake.trigger("P-2", "test") is not None  # result not acknowledged
    assert not handshake.acknowledge("test", part_id="P-9")  # names another part
    assert handshake.acknowledge("test", part_id="P-1")
    assert states == [READY, BUSY, RESULT_READY, READY]
    assert [kind for kind, _, _ in events.seen] == ["handshake_refused"] * 5
    assert not handshake.acknowledge("test")  # nothing to acknowledge
    stop.set()
    assert handshake.wait_trigger(stop) is None
    handshake.close()


def test_an_unacknowledged_result_times_out_once_and_the_next_trigger_is_taken() -> None:
    events = Events()
    handshake = Handshake("cam1", 0.05, events)
    assert handshake.trigger("P-1", "test") is None
    assert handshake.wait_trigger(threading.Event()) == "P-1"
    handshake.decided(decision("P-1"))
    assert events.arrived.wait(5)
    kind, message, details = events.seen[0]
    assert kind == "handshake_timeout" and details["part_id"] == "P-1" and "P-1" in message
    assert handshake.snapshot().timed_out
    assert handshake.trigger("P-2", "test") is None
    assert len(events.seen) == 1
    handshake.close()


def test_results_file_skips_records_already_applied(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    state = ResultsState(path, history_size=2)
    for record_id, verdict in ((1, "OK"), (2, "ANOMALY"), (4, "ERROR")):
        assert state.apply(record_id, "cam1", decision(f"p{record_id}", record_id, verdict))
    state.passed(5)  # an event
    state.save()
    again = ResultsState(path, history_size=2)  # after a restart the spool re-sends 4 and 5
    assert again.apply(4, "cam1", decision("p4", 4, "ERROR")) is None
    assert again.apply(6, "cam1", decision("p6", 6))["part_id"] == "p6"
    kept = again.sources["cam1"]
    assert kept.counters == {"ok": 2, "anomaly": 1, "error": 1, "samples": 4}
    assert [json.loads(r)["seq"] for r in kept.history] == [6, 4]
    assert (path.stat().st_mode & 0o777) == 0o600


@pytest.mark.parametrize("content", ["not json", '{"sources": {"cam1": {}}}'])
def test_a_damaged_results_file_starts_the_counters_again(tmp_path: Path, content: str) -> None:
    path = tmp_path / "results.json"
    path.write_text(content)
    state = ResultsState(path, history_size=5)
    assert state.last_id == 0 and state.sources == {}


class HangingCamera:
    """A wrapped source that gives a frame only when ``release`` is set: a camera that hangs."""

    name, modality = "cam1", "image"

    def __init__(self) -> None:
        self.release = threading.Event()

    def frames(self, stop: threading.Event):
        from flowedge.edge.sources import Frame

        taken = 0
        while not stop.is_set():
            if self.release.wait(0.02):
                self.release.clear()
                taken += 1
                yield Frame(part_id=f"frame-{taken}", payload=f"pixels {taken}")


def test_a_trigger_the_source_cannot_serve_is_answered_error_and_a_late_sample_discarded(
    tmp_path: Path,
) -> None:
    """A hung camera must not hold the PLC on Busy: the trigger is answered with an error
    frame after capture_timeout_s; the frame that comes late belonged to that part and is
    discarded with an event; the next trigger gets the camera's next frame."""
    import queue

    from flowedge.edge.sources.base import SourceContext
    from flowedge.edge.sources.triggered import TriggeredConfig, TriggeredSource

    events = Events()
    cfg = TriggeredConfig(
        name="cam1", source={"kind": "folder", "path": str(tmp_path)}, capture_timeout_s=1.0
    )
    source = TriggeredSource(cfg, SourceContext(events=events))
    camera = source.inner = HangingCamera()
    stop, taken = threading.Event(), queue.Queue()
    thread = threading.Thread(target=lambda: [taken.put(f) for f in source.frames(stop)])
    thread.start()
    try:
        assert source.handshake.trigger("P-1", "test") is None
        unanswered = taken.get(timeout=10)
        assert unanswered.part_id == "P-1" and unanswered.payload is None
        assert "no sample within 1 s of the trigger for part P-1" in unanswered.error
        source.handshake.decided(decision("P-1", verdict="ERROR"))
        assert source.handshake.acknowledge("test")
        camera.release.set()  # the hung camera delivers at last: P-1's frame, too late
        assert source.handshake.trigger("P-2", "test") is None
        for _ in range(200):  # the late frame is discarded, then P-2 waits for a fresh one
            if any(kind == "sample_discarded" for kind, _, _ in events.seen):
                break
            threading.Event().wait(0.01)
        camera.release.set()
        served = taken.get(timeout=10)
        assert served.part_id == "P-2" and served.payload == "pixels 2" and served.error is None
    finally:
        stop.set()
        thread.join(10)
    discarded = [(m, d) for kind, m, d in events.seen if kind == "sample_discarded"]
    assert len(discarded) == 1 and discarded[0][1]["part_id"] == "frame-1"
    assert not thread.is_alive()
    assert source.handshake.snapshot().state == STOPPED  # the PLC is not shown Ready any more
    assert "the source has stopped (the station is stopping)" in source.handshake.trigger(
        "P-3", "test"
    )


def test_a_failed_source_stops_its_handshake_with_the_reason(tmp_path: Path) -> None:
    from flowedge.edge.sources.base import SourceContext
    from flowedge.edge.sources.triggered import TriggeredConfig, TriggeredSource

    class Unplugged:
        name, modality = "cam1", "image"

        def frames(self, stop: threading.Event):
            raise OSError("camera 0 unplugged")
            yield  # a generator, like every source

    cfg = TriggeredConfig(name="cam1", source={"kind": "folder", "path": str(tmp_path)})
    source = TriggeredSource(cfg, SourceContext(events=Events()))
    source.inner = Unplugged()
    frames = source.frames(threading.Event())
    assert source.handshake.trigger("P-1", "test") is None
    with pytest.raises(OSError, match="unplugged"):
        next(frames)
    assert source.handshake.snapshot().state == STOPPED
    why = source.handshake.trigger("P-2", "test")
    assert "the wrapped source failed: camera 0 unplugged" in why
