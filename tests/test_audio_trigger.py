"""External trigger: the PLC's start/stop cut the motions (segmenter fed directly; MQTT through
a real mosquitto)."""

from __future__ import annotations

import queue
import sys
from pathlib import Path

import numpy as np
import paho.mqtt.publish as publish
import pytest

from flowedge.core.broker import MQTTConfig
from flowedge.edge.sources.trigger import MqttTrigger, TriggerConfig
from flowedge.modalities.audio_events import EventRules
from flowedge.modalities.audio_synthetic import MOTION_END, MOTION_START, gear_motor_clip
from flowedge.modalities.audio_trigger import TriggeredSegmenter, parse_trigger

sys.path.insert(0, str(Path(__file__).parent))
from mqtt_broker import Broker, require_mosquitto  # noqa: E402

RATE = 16000
CLIP_S = 2.0


def feed(segmenter: TriggeredSegmenter, stream: np.ndarray, block: int = 1000) -> list:
    events = [
        e for i in range(0, len(stream), block) for e in segmenter.feed(stream[i : i + block])
    ]
    return events + segmenter.flush()


def test_marks_cut_one_event_each_with_the_plc_label_or_the_cycled_one() -> None:
    rng = np.random.default_rng(0)
    stream = np.concatenate([gear_motor_clip(RATE, CLIP_S, rng, motion=m) for m in ["fold"] * 3])
    rules = EventRules(pre_roll_s=0.1)
    segmenter = TriggeredSegmenter(rules, RATE)
    plc_labels = ["unfold", None, "fold"]  # the PLC may name the motion or leave it to the cycle
    for k, label in enumerate(plc_labels):
        segmenter.mark(round((k + MOTION_START) * CLIP_S * RATE), "start", label)
        segmenter.mark(round((k + MOTION_END) * CLIP_S * RATE), "stop")
    segmenter.mark(len(stream) - 10, "stop")  # a stop without a start is ignored

    events = feed(segmenter, stream)

    assert [e.label for e in events] == ["unfold", "unfold", "fold"]  # None took the cycle's 2nd
    for k, event in enumerate(events):
        assert event.start_s == pytest.approx((k + MOTION_START) * CLIP_S, abs=1e-4)
        assert event.end_s == pytest.approx((k + MOTION_END) * CLIP_S, abs=1e-4)
        expected = (event.end_s - event.start_s + rules.pre_roll_s) * RATE
        assert len(event.samples) == pytest.approx(expected, abs=2) and not event.cut
        start = round((event.start_s - rules.pre_roll_s) * RATE)
        assert np.array_equal(event.samples[:, 0], stream[start : start + len(event.samples)])


def test_a_missing_stop_is_cut_at_max_duration_and_a_blip_is_dropped() -> None:
    stream = np.zeros(10 * RATE, np.float32)
    segmenter = TriggeredSegmenter(EventRules(max_duration_s=2.0, min_duration_s=0.3), RATE)
    segmenter.mark(1 * RATE, "start")
    segmenter.mark(int(1.1 * RATE), "stop")  # 0.1 s: a contact bounce, not a motion
    segmenter.mark(4 * RATE, "start")  # never stopped: the PLC lost it
    events = feed(segmenter, stream)
    assert len(events) == 1 and events[0].cut and segmenter.dropped_short == 1
    assert (events[0].start_s, events[0].end_s) == (4.0, 6.0)


@pytest.mark.parametrize(
    "payload, expected",
    [
        (b"start", ("start", None)),
        (b" STOP\n", ("stop", None)),
        (b"1", ("start", None)),
        (b"false", ("stop", None)),
        (b'{"state": "start", "motion": "unfold"}', ("start", "unfold")),
        (b'{"state": "off"}', ("stop", None)),
    ],
)
def test_trigger_payload_formats(payload: bytes, expected: tuple) -> None:
    assert parse_trigger(payload) == expected


@pytest.mark.parametrize("payload", [b"go", b"{not json", b'{"state": "start", "motion": 3}'])
def test_bad_trigger_payloads_say_what_is_expected(payload: bytes) -> None:
    with pytest.raises(ValueError, match="trigger payload"):
        parse_trigger(payload)


@pytest.mark.timeout(60)
def test_mqtt_trigger_delivers_marks_in_order_and_ignores_bad_messages(tmp_path: Path) -> None:
    require_mosquitto()
    broker = Broker(tmp_path).start()
    marks: queue.Queue = queue.Queue()
    errors: list[str] = []
    topic = "plant/line1/mirror/trigger"
    trigger = MqttTrigger(
        MQTTConfig(port=broker.port, reconnect_min_s=0.1, reconnect_max_s=0.5),
        TriggerConfig(topic=topic),
        lambda state, label: marks.put((state, label)),
        on_error=errors.append,
    )

    def send(payload: str) -> None:
        publish.single(topic, payload, qos=1, hostname="127.0.0.1", port=broker.port)

    try:
        while True:  # the subscription is asynchronous: the first mark that arrives proves it
            send("stop")
            try:
                assert marks.get(timeout=0.5) == ("stop", None)
                break
            except queue.Empty:
                continue
        for payload in ['{"state": "start", "motion": "fold"}', "garbage", "0"]:
            send(payload)
        first = marks.get(timeout=10)
        while first == ("stop", None):  # probes of the loop above that arrived late
            first = marks.get(timeout=10)
        assert first == ("start", "fold")
        assert marks.get(timeout=10) == ("stop", None)
        assert len(errors) == 1 and "garbage" in errors[0] and topic in errors[0]
    finally:
        trigger.close()
        broker.stop()
