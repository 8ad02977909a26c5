"""The history sink: every record exactly once by (sensor, seq) across redelivery and restarts,
evidence kept beside it, retention by age and budget, and a disk that cannot be written
never stops the station nor the other sinks."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from history_fakes import (  # noqa: E402
    Recorder,
    days_ago,
    decision,
    encoded,
    event,
    filled_history,
    history_sink,
    put_decisions,
)
from mqtt_broker import Broker, Subscriber, require_mosquitto  # noqa: E402
from runtime_fakes import (  # noqa: E402
    open_station,
    station_config,
    stop_station,
    validator,
    wait_until,
    write_images,
)

from flowedge.calibration.history.query import Query, documents, select  # noqa: E402
from flowedge.calibration.history.records import KeptEvidence, add_decision  # noqa: E402
from flowedge.calibration.history.retention import Retention, enforce  # noqa: E402
from flowedge.calibration.history.review import review  # noqa: E402
from flowedge.calibration.history.store import HistoryDB  # noqa: E402
from flowedge.core.errors import ConfigError  # noqa: E402
from flowedge.edge.config import parse_config  # noqa: E402
from flowedge.edge.sinks.history import HistorySinkConfig, check  # noqa: E402
from flowedge.edge.spool import Spool  # noqa: E402


def stored(path: Path) -> list[tuple[str, int]]:
    with HistoryDB(path) as db:
        return [(r.source, r.seq) for r in select(db, Query())]


def event_count(path: Path) -> int:
    with HistoryDB(path) as db:
        return int(db.value("SELECT COUNT(*) FROM events"))


# --- exactly once ----------------------------------------------------------------------


def test_each_record_is_stored_once_across_redelivery_and_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite", 1000)
    put_decisions(spool, [decision(0, 2.0 + i) for i in range(5)])
    spool.put("event", "cam1", encoded(event()))
    sink = history_sink(spool, tmp_path / "history")
    sink.delivery.acknowledged = lambda ids: None  # a crash between the commit and the cursor
    assert sink._step() == 6
    assert spool.cursor("history") == 0
    sink._close()
    spool.close()

    spool = Spool(tmp_path / "spool.sqlite", 1000)  # the station starts again
    again = history_sink(spool, tmp_path / "history")
    assert again._step() == 6  # everything is delivered again ...
    assert stored(tmp_path / "history") == [("cam1", seq) for seq in range(1, 6)]  # ... once
    assert event_count(tmp_path / "history") == 1
    assert spool.cursor("history") == 6 and spool.count() == 0  # the only sink: spool empty
    put_decisions(spool, [decision(0, 9.0)])
    assert again._step() == 1 and stored(tmp_path / "history")[-1] == ("cam1", 6)
    with HistoryDB(tmp_path / "history") as db:  # the documents as published, for re-sending
        assert [json.loads(d)["seq"] for d in documents(db, "cam1", 2, 4)] == [2, 3, 4]


def test_another_document_under_a_stored_key_is_kept_out_and_reported(tmp_path: Path) -> None:
    """A deleted spool restarts the numbering: (cam1, 1) again, but another decision."""
    filled_history(tmp_path / "history", [decision(1, 2.0, part_id="old.png")]).close()
    spool = Spool(tmp_path / "spool.sqlite", 1000)
    put_decisions(spool, [decision(0, 5.0, part_id="new.png")])
    recorder = Recorder()
    sink = history_sink(spool, tmp_path / "history", recorder)
    assert sink._step() == 1
    with HistoryDB(tmp_path / "history") as db:
        assert [r.part_id for r in select(db, Query())] == ["old.png"]
    assert recorder.kinds() == ["history_conflict"] and "cam1 #1" in recorder.events[0][1]


def test_a_station_keeps_its_history_with_evidence_across_a_restart(tmp_path: Path) -> None:
    """The real wiring: heatmaps and input copies are linked into the history; a restart
    on the same spool decides nothing twice and stores nothing twice."""
    write_images(tmp_path / "images", 4)
    cfg = station_config(
        tmp_path,
        model={"path": str(tmp_path / "model"), "threshold": 1.5},
        pipeline={
            "heatmaps": "anomalies",
            "heatmap_dir": str(tmp_path / "heatmaps"),
            "evidence": {"inputs": "all", "dir": str(tmp_path / "evidence")},
        },
        sinks=[
            {
                "kind": "history",
                "name": "history",
                "path": str(tmp_path / "history"),
                "min_free_mb": 0,
            }
        ],
    )
    station = open_station(cfg)
    station.start()
    assert station.pipeline.wait(15) and station.sinks[0].flush(10)
    stop_station(station)
    with HistoryDB(tmp_path / "history") as db:
        rows = select(db, Query())
    assert [(r.seq, r.decision) for r in rows] == [
        (1, "OK"),
        (2, "ANOMALY"),
        (3, "ANOMALY"),
        (4, "ANOMALY"),
    ]
    for row in rows:
        original = tmp_path / "images" / row.part_id
        assert Path(row.input_path).read_bytes() == original.read_bytes()
        assert (row.heatmap_path is not None) == (row.decision == "ANOMALY")
        assert row.modality == "image" and row.threshold == 1.5 and row.weights_sha256 == "f" * 64
        original.unlink()  # the source may delete its files: the evidence stays
    station = open_station(cfg)  # the restart decides nothing new (the folder is empty)
    station.start()
    assert station.pipeline.wait(15) and station.sinks[0].flush(10)
    stop_station(station)
    with HistoryDB(tmp_path / "history") as db:
        assert select(db, Query()) == rows
    assert all(Path(r.input_path).is_file() for r in rows)
    station_heatmap = next((tmp_path / "heatmaps" / "cam1").iterdir())
    linked = [Path(r.heatmap_path) for r in rows if r.heatmap_path]
    assert any(os.path.samefile(station_heatmap, p) for p in linked)  # a link, no second copy


# --- retention ---------------------------------------------------------------------------


def evidence_file(folder: Path, name: str, size: int = 1000) -> str:
    path = folder / "evidence" / "cam1" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return f"evidence/cam1/{name}"


def aged_history(path: Path, ages_and_scores: list[tuple[float, float]]) -> HistoryDB:
    """Decisions with 1000-byte input evidence, captured ``age`` days ago."""
    db = HistoryDB(path, create=True)
    with db.transaction():
        for seq, (age, score) in enumerate(ages_and_scores, start=1):
            doc = decision(seq, score, captured_utc=days_ago(age))
            kept = KeptEvidence(evidence_file(path, f"{seq}.png"), None, 1000)
            add_decision(db, doc, encoded(doc), kept)
    return db


RULES = Retention(
    keep_days=100,
    reviewed_keep_days=1000,
    evidence_keep_days=10,
    anomaly_keep_days=50,
    keep_bytes=1e9,
    evidence_keep_bytes=1e9,
)


def test_age_keeps_anomalies_evidence_longer_and_reviewed_samples_longest(tmp_path: Path) -> None:
    # seq 1: OK 20 d, 2: ANOMALY 20 d, 3: ANOMALY 60 d, 4: OK 200 d reviewed, 5: OK 200 d
    db = aged_history(tmp_path, [(20, 2.0), (20, 5.0), (60, 5.0), (200, 2.0), (200, 2.0)])
    review(db, "confirmed_normal", "anna", source="cam1", seq=4)
    pruned = enforce(db, RULES, datetime.now(UTC))
    rows = {r.seq: r for r in select(db, Query())}
    assert sorted(rows) == [1, 2, 3, 4]  # seq 5: an unreviewed record past keep_days
    kept = {seq: row.input_path is not None for seq, row in rows.items()}
    assert kept == {1: False, 2: True, 3: False, 4: True}
    assert sorted(p.name for p in (tmp_path / "evidence" / "cam1").iterdir()) == ["2.png", "4.png"]
    assert pruned.decisions == 1 and pruned.evidence_files == 3


def test_the_evidence_budget_takes_ordinary_then_anomalies_and_reviewed_last(
    tmp_path: Path,
) -> None:
    db = aged_history(tmp_path, [(5, 5.0), (4, 2.0), (3, 5.0), (2, 2.0), (1, 2.0)])
    review(db, "false_alarm", "anna", source="cam1", seq=1)  # the oldest, but reviewed
    rules = Retention(**{**RULES.__dict__, "evidence_keep_bytes": 3000})
    enforce(db, rules, datetime.now(UTC))
    kept = [r.seq for r in select(db, Query()) if r.input_path]
    assert kept == [1, 3]  # 0.9 x 3000 bytes: two files; OKs went first, then ANOMALY 3
    assert len(list((tmp_path / "evidence" / "cam1").iterdir())) == 2


def test_the_records_budget_keeps_the_newest_and_the_reviewed(tmp_path: Path) -> None:
    docs = [decision(seq, 2.0, captured_utc=days_ago(3000 - seq)) for seq in range(1, 3001)]
    db = filled_history(tmp_path, docs)
    review(db, "confirmed_normal", "anna", source="cam1", seq=1)
    budget = db.used_bytes() / 3
    enforce(
        db,
        Retention(
            **{**RULES.__dict__, "keep_days": 1e4, "reviewed_keep_days": 1e4, "keep_bytes": budget}
        ),
        datetime.now(UTC),
    )
    seqs = [r.seq for r in select(db, Query())]
    assert db.used_bytes() <= budget
    assert seqs[0] == 1 and seqs[-1] == 3000 and 100 < len(seqs) < 1500
    assert seqs[1:] == list(range(seqs[1], 3001))  # the oldest unreviewed went first


# --- a history that cannot be written --------------------------------------------------


def test_a_disk_below_min_free_stores_nothing_says_so_and_recovers(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.sqlite", 1000)
    recorder = Recorder()
    sink = history_sink(spool, tmp_path / "history", recorder, min_free_mb=1e12)
    sink.start()
    put_decisions(spool, [decision(0, 2.0) for _ in range(3)])
    wait_until(lambda: "history_failed" in recorder.kinds(), 10, "the failure event")
    assert "min_free_mb" in recorder.events[0][1] and "NOT WRITTEN" in sink.health()
    assert spool.backlog("history") == 3 and spool.cursor("history") == 0
    assert sink.context.metrics.sink_failures.labels("history")._value.get() >= 1
    sink.cfg = sink.cfg.model_copy(update={"min_free_mb": 0})  # room again
    wait_until(lambda: "history_recovered" in recorder.kinds(), 15, "the history to catch up")
    assert recorder.kinds() == ["history_failed", "history_recovered"]  # one per outage
    sink.stop("test over", 1.0)
    assert stored(tmp_path / "history") == [("cam1", 1), ("cam1", 2), ("cam1", 3)]


def test_a_full_database_rolls_the_batch_back_and_acknowledges_nothing(tmp_path: Path) -> None:
    """SQLite's own 'database or disk is full' (the database may not grow)."""
    spool = Spool(tmp_path / "spool.sqlite", 1000)
    recorder = Recorder()
    sink = history_sink(spool, tmp_path / "history", recorder)
    put_decisions(spool, [decision(0, 2.0)])
    sink._step()
    pages = sink.db.value("PRAGMA page_count")
    sink.db.db.execute(f"PRAGMA max_page_count = {pages}")
    put_decisions(spool, [decision(0, 2.0, part_id="x" * 2000) for _ in range(50)])
    with pytest.raises(sqlite3.OperationalError, match="full"):
        sink._step()
    assert spool.cursor("history") == 1 and stored(tmp_path / "history") == [("cam1", 1)]
    assert [r.id for r in sink.delivery.next(1)] == [2]  # the same records are owed again


def test_a_failing_history_neither_stops_the_station_nor_delays_mqtt(tmp_path: Path) -> None:
    """Every decision reaches the broker while the history cannot write a single one."""
    require_mosquitto()
    (tmp_path / "broker").mkdir()
    broker = Broker(tmp_path / "broker").start()
    subscriber = Subscriber(broker.port)
    try:
        write_images(tmp_path / "images", 6)
        history = {"kind": "history", "name": "history", "path": str(tmp_path / "history")}
        cfg = station_config(
            tmp_path,
            mqtt={"enabled": True, "port": broker.port, "reconnect_min_s": 0.1},
            sinks=[{**history, "min_free_mb": 1e12}],
        )
        station = open_station(cfg)
        station.start()
        assert [d["seq"] for d in subscriber.wait_for("/decision", 6)] == list(range(1, 7))
        failures = [e for e in subscriber.wait_for("/event", 1) if e["kind"] == "history_failed"]
        assert failures and station.pipeline.counts.snapshot()["decisions"] == 6
        wait_until(lambda: station.spool.backlog("mqtt") == 0, 10, "mqtt to acknowledge all")
        assert station.spool.backlog("history") >= 6  # kept for the history, within limits
        assert "history NOT WRITTEN" in station.status_line()
        validator("event").validate(failures[0])
        stop_station(station)
        assert not (tmp_path / "history" / "history.sqlite").exists()
    finally:
        subscriber.close()
        broker.stop()


# --- config and check ------------------------------------------------------------------


def test_config_and_check(tmp_path: Path) -> None:
    cfg = parse_config({"sinks": [{"kind": "history", "path": str(tmp_path / "h")}]})
    sink = cfg.sinks[0]
    assert sink.name == "history" and sink.evidence_keep_days < sink.anomaly_keep_days
    assert check(sink, "plant", "line1", 1.0).ok
    with pytest.raises(ConfigError, match=r"sinks\[0\]\.keep_days"):
        parse_config({"sinks": [{"kind": "history", "keep_days": 0}]})
    full = HistorySinkConfig(path=tmp_path / "h", min_free_mb=1e12)
    result = check(full, "plant", "line1", 1.0)
    assert not result.ok and "min_free_mb" in result.detail
    (tmp_path / "file").write_text("x")
    blocked = check(HistorySinkConfig(path=tmp_path / "file" / "h"), "plant", "line1", 1.0)
    assert not blocked.ok and "sinks.history.path" in blocked.detail
