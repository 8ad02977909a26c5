"""The historian's view of a message and of a sensor's sequence: what is a decision, which
numbers are missing, when to ask for them, when to give up (no broker, no database)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from history_fakes import decision, encoded  # noqa: E402

from flowedge.historian.config import ResendRequests  # noqa: E402
from flowedge.historian.gaps import Ask, GapTracker  # noqa: E402
from flowedge.historian.rows import COLUMNS, parse  # noqa: E402

TOPIC = "flowedge/plant/line1/cam1/decision"
STREAM = ("plant", "line1", "cam1")


def test_a_decision_message_becomes_its_row() -> None:
    body = encoded(decision(7, 4.0))
    row = parse(TOPIC, body, "flowedge")
    values = dict(zip(COLUMNS, row.values, strict=True))
    assert row.stream == STREAM and row.seq == 7
    assert values["decision"] == "ANOMALY" and values["score"] == 4.0 and not values["resent"]
    assert json.loads(values["document"]) == json.loads(body)
    assert parse(TOPIC + "/resent", body, "flowedge").values[COLUMNS.index("resent")]


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("flowedge/plant/line1/cam1/event", encoded(decision(1, 1.0)), "not a decision topic"),
        ("flowedge/plant/line2/cam1/decision", encoded(decision(1, 1.0)), "the topic plant/line2"),
        (TOPIC, b"{truncated", "not UTF-8 JSON"),
        (TOPIC, encoded(decision(1, 1.0)).replace(b'"score":1.0', b'"score":NaN'), "NaN"),
        (TOPIC, encoded(decision(0, 1.0)), "number decisions from 1"),
        (TOPIC, encoded(decision(1, 1.0, schema="other/1")), "schema 'other/1'"),
        (TOPIC, encoded(decision(1, 1.0, captured_utc="yesterday")), "captured_utc must be"),
        (TOPIC, encoded(decision(1, 1.0, part_id="a\0b")), "NUL"),
        (TOPIC, b"x" * (2 << 20), "more than a decision"),
    ],
)
def test_what_is_no_decision_is_refused_with_the_reason(
    topic: str, payload: bytes, reason: str
) -> None:
    with pytest.raises(ValueError, match=reason):
        parse(topic, payload, "flowedge")


def tracker(**overrides: object) -> GapTracker:
    values: dict = dict(gap_wait_s=5, retry_s=10, max_retry_s=40, attempts=2, max_documents=3)
    return GapTracker(ResendRequests(**(values | overrides)))


def asks(t: GapTracker, now: float) -> list[tuple[int, int]]:
    return [(a.first, a.last) for a in t.due(now) if not a.probe]


def test_a_gap_is_asked_for_when_old_enough_in_ranges_then_again_then_given_up() -> None:
    t = tracker()
    t.start(STREAM, 2, [], now=0)
    t.seen(STREAM, 9, now=0)  # 3..8 missing
    assert asks(t, now=4) == []  # may still arrive by itself
    assert asks(t, now=5) == [(3, 5)]  # at most max_documents per request
    for seq in (3, 4, 5):
        t.seen(STREAM, seq, now=6)
    assert asks(t, now=6) == [(6, 8)]  # the rest was never asked: no retry wait
    assert asks(t, now=15) == []
    assert asks(t, now=16) == [(6, 8)]  # unanswered: again after retry_s
    assert asks(t, now=35) == []  # doubled
    assert asks(t, now=36) == [] and t.lost == 3  # attempts spent: given up, logged
    assert t.open_gaps() == 0


def test_a_partly_answered_range_keeps_its_open_numbers() -> None:
    t = tracker(max_documents=10)
    t.start(STREAM, 5, [(1, 4)], now=0)
    assert asks(t, now=5) == [(1, 4)]
    t.seen(STREAM, 2, now=6)
    t.seen(STREAM, 4, now=6)
    assert [(g.first, g.last) for g in t.streams[STREAM].gaps] == [(1, 1), (3, 3)]
    assert asks(t, now=16) == [(1, 1)] and t.missing() == 2


def test_an_idle_sensor_is_asked_for_what_follows_its_last_decision() -> None:
    t = tracker(idle_probe_s=60, max_retry_s=200)
    t.start(STREAM, 5, [], now=0)
    assert list(t.due(59)) == []
    assert list(t.due(60)) == [Ask(STREAM, 6, 8, probe=True)]
    assert list(t.due(119)) == [] and len(list(t.due(180))) == 1  # less often while idle
    t.seen(STREAM, 6, now=200)  # it spoke again: probed a minute after its last decision
    assert list(t.due(259)) == [] and len(list(t.due(260))) == 1
