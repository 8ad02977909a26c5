"""The tail source: cycles cut from a growing CSV log, resumed after a restart; a station run."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import numpy as np
import pytest

from flowedge.edge.sources.tail import LogTailSource, TailConfig
from flowedge.modalities import series_synthetic as sim
from flowedge.modalities.series_cycles import SegmentConfig
from flowedge.modalities.series_io import LogFormat

HEADER = "time;cycle;current;speed;;\n"


def rows(cycle: int, start: float, n: int = 4) -> str:
    return "".join(f"{start + 0.1 * i:.1f};{cycle};{i + cycle},5;{-i},25;;\n" for i in range(n))


class Memory:
    """The spool's source memory, in a dict."""

    def __init__(self) -> None:
        self.entries: dict[str, str] = {}

    def recall(self, source: str) -> dict[str, str]:
        return dict(self.entries)

    def remember(self, source: str, entries: dict[str, str]) -> None:
        self.entries.update(entries)


def tail_config(path: Path) -> TailConfig:
    return TailConfig(
        name="robot1",
        kind="tail",
        path=path,
        log=LogFormat(separator=";", decimal=",", cycle_column="cycle"),
        segment=SegmentConfig(column="cycle"),
    )


def assert_replayed_as_taken(taken: list, replayed: list) -> None:
    """Cycles re-read after a restart equal the ones taken before it: values, context, time."""
    for before, after in zip(taken, replayed, strict=True):
        assert after.error is None
        assert (
            after.payload.columns["current"].tolist() == before.payload.columns["current"].tolist()
        )
        assert after.context == before.context and after.captured_utc == before.captured_utc


def take(source: LogTailSource, memory: Memory, count: int, wait_s: float = 10.0) -> list:
    """The first ``count`` frames, remembering each as the intake journal would."""
    stop, taken = threading.Event(), []
    guard = threading.Timer(wait_s, stop.set)  # a missing cycle fails the test, never hangs it
    guard.start()
    for frame in source.frames(stop):
        memory.remember(source.name, dict([frame.remember]))
        taken.append(frame)
        if len(taken) == count:
            stop.set()
    guard.cancel()
    return taken


def test_growing_log_yields_each_closed_cycle_once_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "robot.csv"
    partial = "0.8;3;1,0;0,0;;\n0.9;3;2,0"  # the logger is writing cycle 3's second row
    path.write_text(HEADER + rows(1, 0.0) + rows(2, 0.4) + partial, encoding="utf-8")
    memory = Memory()
    first = take(LogTailSource(tail_config(path), lambda *a, **k: None, memory), memory, 2)
    assert [f.part_id for f in first] == ["1", "2"]
    assert first[0].payload.columns["current"].tolist() == [1.5, 2.5, 3.5, 4.5]
    assert first[1].context["cycle"]["start_s"] == pytest.approx(0.4)
    with open(path, "a", encoding="utf-8") as log:  # cycle 3 completes, cycle 4 starts
        log.write(";0,5;;\n" + rows(4, 1.2))
    again = take(LogTailSource(tail_config(path), lambda *a, **k: None, memory), memory, 2, 1.0)
    assert [f.part_id for f in again] == ["3"]  # after a restart: on from where it stopped
    assert again[0].payload.columns["speed"].tolist() == [0.0, 0.5]


def test_a_cycle_taken_but_not_answered_is_read_again_after_a_restart(tmp_path: Path) -> None:
    from flowedge.edge.loop.capture import journaled
    from flowedge.edge.sources.base import PAYLOAD_GONE
    from flowedge.edge.spool import Spool

    path = tmp_path / "robot.csv"
    path.write_text(HEADER + rows(1, 0.0) + rows(2, 0.4) + rows(3, 0.8), encoding="utf-8")
    spool = Spool(tmp_path / "spool.sqlite", 100)
    stop = threading.Event()
    source = LogTailSource(tail_config(path), lambda *a, **k: None, spool)
    taken = []
    for frame, _ in journaled(spool, source, stop):  # journaled, never answered
        taken.append(frame)
        if len(taken) == 2:
            break
    spool.close()  # the station dies before scoring them
    with open(path, "a", encoding="utf-8") as log:  # the logger goes on meanwhile
        log.write(rows(4, 1.2))

    again = Spool(tmp_path / "spool.sqlite", 100)
    source = LogTailSource(tail_config(path), lambda *a, **k: None, again)
    stop = threading.Event()
    replayed = []
    for frame, _ in journaled(again, source, stop):
        replayed.append(frame)
        if len(replayed) == 3:
            break
    again.close()
    assert [f.part_id for f in replayed] == ["1", "2", "3"]  # the two open ones first, then on
    assert_replayed_as_taken(taken, replayed[:2])

    path.write_text(HEADER + rows(9, 0.0) + rows(10, 0.4), encoding="utf-8")  # rotated
    last = Spool(tmp_path / "spool.sqlite", 100)
    first_open = last.pending_intake("robot1")[0]
    last.close()
    assert PAYLOAD_GONE in source.replay(first_open).error


@pytest.fixture(scope="module")
def series_graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from flowedge.export.checked import ExportRequest, run_export
    from flowedge.flows.config import PCAConfig, TrainingConfig
    from flowedge.flows.data.series import train_series

    tmp = tmp_path_factory.mktemp("series-graph")
    train = [c.table for c in sim.simulate_set(12, 0, seed=0, rate_hz=10.0)]
    config = PCAConfig(
        signals=["torque_sensor_a_1", "torque_sensor_a_2"], rate_hz=10.0, n_components=4
    )
    train_series(train, config, TrainingConfig(), tmp / "pca")
    run_export(ExportRequest(tmp / "pca", tmp / "model.onnx"))
    return tmp / "model.onnx"


def test_station_scores_tailed_cycles_with_an_onnx_series_model(
    series_graph: Path, tmp_path: Path
) -> None:
    from test_station_no_torch import run_station_without_torch

    log = tmp_path / "robot.csv"
    cycles = sim.simulate_set(3, 0, seed=5, rate_hz=10.0)
    lines = ["time,sample,torque_sensor_a_1,torque_sensor_a_2"]
    for number, cycle in enumerate(cycles):
        t = cycle.table
        for i in range(len(t)):
            a, b = (t.columns[f"torque_sensor_a_{k}"][i] for k in (1, 2))
            lines.append(f"{t.time_s[i] + 100 * number:.3f},{number},{a:.6f},{b:.6f}")
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tail = (
        f"[{{name: robot1, kind: tail, path: {log}, log: {{cycle_column: sample}}, "
        "segment: {mode: cycle_id, column: sample}}]"
    )
    done = run_station_without_torch(tmp_path, series_graph, tail, 1.0e9, "--max-samples", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 decisions, 0 errors" in done.stderr, done.stderr[-3000:]
    with sqlite3.connect(tmp_path / "spool.sqlite") as db:
        payloads = [
            json.loads(bytes(p))
            for (p,) in db.execute("select body from records where kind = 'decision'")
        ]
    cycles_seen = [p["cycle"] for p in payloads if "cycle" in p]
    assert [c["id"] for c in cycles_seen] == ["0", "1"]  # cycle 2 is still open
    assert cycles_seen[1]["start_s"] == pytest.approx(100.0)
    assert cycles_seen[0]["top_signals"] and cycles_seen[0]["top_time_ranges"]
    assert np.isfinite([p["score"] for p in payloads if "cycle" in p]).all()


def write_row_groups(path: Path, groups: list[tuple[int, float]]) -> None:
    """The logger's flush: the file rewritten (to a temporary, then renamed) with one
    two-row group per (cycle, start time)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    partial = path.with_suffix(".tmp")
    with pq.ParquetWriter(
        partial,
        pa.schema([("time", pa.float64()), ("cycle", pa.int32()), ("current", pa.float64())]),
    ) as writer:
        for cycle, start in groups:
            writer.write_table(
                pa.table(
                    {
                        "time": [start, start + 0.1],
                        "cycle": pa.array([cycle, cycle], pa.int32()),
                        "current": [cycle * 10.0, cycle * 10.0 + 1],
                    }
                )
            )
    partial.replace(path)


def parquet_config(path: Path) -> TailConfig:
    return TailConfig(
        name="robot1",
        kind="tail",
        path=path,
        log=LogFormat(cycle_column="cycle"),
        segment=SegmentConfig(column="cycle"),
    )


def test_parquet_log_gaining_row_groups_yields_each_cycle_once_across_a_restart(
    tmp_path: Path,
) -> None:
    from flowedge.edge.sources.tail import ParquetTailSource, tail_source

    path = tmp_path / "robot.parquet"
    flushes = [(1, 0.0), (1, 0.2), (2, 0.4), (2, 0.6), (3, 0.8)]  # two row groups a cycle
    write_row_groups(path, flushes[:3])  # cycle 1 closed by cycle 2's first group
    memory = Memory()
    source = tail_source(parquet_config(path), lambda *a, **k: None, memory)
    assert isinstance(source, ParquetTailSource)
    first = take(source, memory, 1)
    assert [f.part_id for f in first] == ["1"]
    assert first[0].payload.columns["current"].tolist() == [10.0, 11.0, 10.0, 11.0]
    assert first[0].locator == f"{path}#rows=0-4"
    assert memory.entries["position"] == "2:4"  # row group 2 holds row 4, the next to read

    frames = source.frames(threading.Event())
    write_row_groups(path, flushes)  # the logger flushes two more row groups
    second = next(frames)  # the same source reads the rewritten file on
    memory.remember(source.name, dict([second.remember]))
    frames.close()
    assert second.part_id == "2" and second.payload.first_row == 4
    assert second.context["cycle"]["start_s"] == pytest.approx(0.4)

    write_row_groups(path, [*flushes, (4, 1.0)])  # cycle 3 closes while the station is down
    source = tail_source(parquet_config(path), lambda *a, **k: None, memory)
    again = take(source, memory, 2, 1.0)
    assert [f.part_id for f in again] == ["3"]  # after a restart: on from where it stopped


def test_a_parquet_cycle_taken_but_not_answered_is_read_again_after_a_restart(
    tmp_path: Path,
) -> None:
    from flowedge.edge.loop.capture import journaled
    from flowedge.edge.sources.base import PAYLOAD_GONE
    from flowedge.edge.spool import Spool

    path = tmp_path / "robot.parquet"
    write_row_groups(path, [(1, 0.0), (1, 0.2), (2, 0.4), (2, 0.6), (3, 0.8)])
    spool = Spool(tmp_path / "spool.sqlite", 100)
    source = tail_source_for(path, spool)
    taken = [frame for frame, _ in zip_first(journaled(spool, source, threading.Event()), 2)]
    spool.close()  # the station dies before scoring them
    write_row_groups(path, [(1, 0.0), (1, 0.2), (2, 0.4), (2, 0.6), (3, 0.8), (4, 1.0)])

    again = Spool(tmp_path / "spool.sqlite", 100)
    source = tail_source_for(path, again)
    replayed = [frame for frame, _ in zip_first(journaled(again, source, threading.Event()), 3)]
    again.close()
    assert [f.part_id for f in replayed] == ["1", "2", "3"]  # the two open ones first, then on
    assert_replayed_as_taken(taken, replayed[:2])

    write_row_groups(path, [(9, 0.0), (9, 0.2), (10, 0.4), (10, 0.6)])  # rotated
    last = Spool(tmp_path / "spool.sqlite", 100)
    first_open = last.pending_intake("robot1")[0]
    last.close()
    assert PAYLOAD_GONE in source.replay(first_open).error


def tail_source_for(path: Path, spool: object) -> LogTailSource:
    from flowedge.edge.sources.tail import tail_source

    return tail_source(parquet_config(path), lambda *a, **k: None, spool)


def zip_first(frames: Iterator, count: int) -> list:
    """The first ``count`` items of a generator, closing it after."""
    taken = list(islice(frames, count))
    frames.close()
    return taken


def test_a_missing_log_is_one_event_per_outage(tmp_path: Path) -> None:
    """Polling a log that is gone reports it once, not at every 0.1 s poll."""
    events: list[str] = []
    source = LogTailSource(
        tail_config(tmp_path / "gone.csv"), lambda _n, kind, *_: events.append(kind)
    )
    stop = threading.Event()
    reader = threading.Thread(target=lambda: list(source.frames(stop)), daemon=True)
    reader.start()
    threading.Event().wait(0.5)  # about five polls
    stop.set()
    reader.join(5)
    assert events == ["source_lost"]
