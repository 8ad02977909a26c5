"""Event segmentation: one motion, one event, on generated actuator sound and real valves."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from flowedge.modalities.audio import Clip
from flowedge.modalities.audio_events import EventRules, Segmenter, segment_clip
from flowedge.modalities.audio_synthetic import MOTION_END, MOTION_START, gear_motor_clip
from tests.conftest import REAL_DATA

RATE = 16000
CLIP_S = 2.0


def motions(sequence: list[str], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([gear_motor_clip(RATE, CLIP_S, rng, motion=m) for m in sequence])


def test_each_motion_is_one_event_labelled_in_turn_whatever_the_block_size() -> None:
    stream = motions(["fold", "unfold", "fold", "unfold"])
    found = []
    for block in (160, 1000, 7777):
        segmenter = Segmenter(EventRules(), RATE)
        events = [
            e for i in range(0, len(stream), block) for e in segmenter.feed(stream[i : i + block])
        ]
        found.append(events + segmenter.flush())
    for events in found:
        assert [e.label for e in events] == ["fold", "unfold", "fold", "unfold"]
        for k, event in enumerate(events):
            clip_start = k * CLIP_S
            assert abs(event.start_s - (clip_start + MOTION_START * CLIP_S)) < 0.03
            assert clip_start + MOTION_END * CLIP_S - 0.05 < event.end_s < clip_start + CLIP_S
            assert len(event.samples) >= (event.end_s - event.start_s) * RATE and not event.cut
    assert [e.start_s for e in found[0]] == [e.start_s for e in found[2]]


def test_short_knocks_are_dropped_and_a_stalled_motor_is_cut_and_marked() -> None:
    rng = np.random.default_rng(1)
    quiet = 0.001 * rng.standard_normal(RATE).astype(np.float32)
    knock = quiet.copy()
    knock[RATE // 2 : RATE // 2 + 800] += 0.3  # 50 ms
    endless = 0.2 * rng.standard_normal(4 * RATE).astype(np.float32)
    segmenter = Segmenter(EventRules(max_duration_s=1.5), RATE)
    events = segmenter.feed(np.concatenate([knock, endless, quiet])) + segmenter.flush()
    assert segmenter.dropped_short == 1
    assert events[0].cut and events[0].end_s - events[0].start_s == pytest.approx(1.5, abs=0.02)
    assert len(events) == 1  # the rest of the stalled run waits for quiet, no new event


def test_a_long_pause_restarts_the_label_cycle() -> None:
    rules = EventRules(cycle_gap_s=1.0)
    pause = 10 ** (-62 / 20) * np.random.default_rng(3).standard_normal(2 * RATE)  # the room
    stream = np.concatenate([motions(["fold"]), pause, motions(["fold", "unfold"], seed=2)])
    stream = stream.astype(np.float32)
    assert [e.label for e in segment_clip(Clip(stream[:, None], RATE), rules)] == [
        "fold",
        "fold",
        "unfold",
    ]


def test_rules_refuse_inverted_hysteresis() -> None:
    with pytest.raises(ValidationError, match="stop_db"):
        EventRules(start_db=3, stop_db=6)


def test_real_valve_clips_give_periodic_open_close_events() -> None:
    from flowedge.modalities import get_modality

    folder = REAL_DATA / "mimii-valve"
    audio = get_modality("audio")
    files = audio.list_files(folder) if folder.is_dir() else []
    if not files:
        pytest.skip(f"real MIMII valve clips not found in {folder}")
    rules = EventRules(
        band_hz=(3000.0, 7900.0),  # the valve's click above the factory's rumble
        start_db=8,
        stop_db=4,
        hang_s=0.1,
        min_duration_s=0.05,
        max_duration_s=3.0,
        labels=["open", "close"],
    )
    counts = {}
    for path in files:
        events = segment_clip(audio.read(path), rules)
        counts[path.name] = len(events)
        assert all(0 <= e.start_s < e.end_s <= 10.0 for e in events)
        assert [e.label for e in events[:2]] == ["open", "close"][: len(events[:2])]
    assert all(n >= 3 for n in counts.values()), counts
    regular = segment_clip(audio.read(folder / "valve_id00_n_00000117.wav"), rules)
    gaps = np.diff([e.start_s for e in regular])
    assert np.median(gaps) == pytest.approx(1.09, abs=0.05)  # the valve cycles about once a second
