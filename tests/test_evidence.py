"""pipeline.evidence: the input file is copied before its decision is stored, so the source may
delete it once answered; the copy's path is in the decision, copies are bounded per sensor."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from runtime_fakes import (  # noqa: E402
    open_station,
    station_config,
    stop_station,
    validator,
    write_images,
)

from flowedge.edge.spool import Spool  # noqa: E402


def run_station(tmp_path: Path, evidence: dict, count: int = 4) -> tuple[list[dict], list[dict]]:
    """Replay ``count`` images (scores rise with brightness: the first is OK at threshold 1.5,
    the next ones ANOMALY); the decisions and events stored."""
    write_images(tmp_path / "images", count)
    pipeline = {"heatmaps": "none", "evidence": {"dir": str(tmp_path / "evidence"), **evidence}}
    model = {"path": str(tmp_path / "model"), "threshold": 1.5}
    station = open_station(station_config(tmp_path, pipeline=pipeline, model=model))
    station.start()
    assert station.pipeline.wait(15)
    stop_station(station)
    records = Spool(tmp_path / "spool.sqlite", 1000).after(0, 1000)
    docs = [r.doc() for r in records if r.kind == "decision"]
    return docs, [r.doc() for r in records if r.kind == "event"]


def test_every_scored_input_is_copied_and_named_in_its_decision(tmp_path: Path) -> None:
    docs, _ = run_station(tmp_path, {"inputs": "all"})
    check = validator("decision")
    for doc in docs:
        check.validate(doc)
        copy = Path(doc["evidence"]["input"])
        assert copy.parent == tmp_path / "evidence" / "cam1"
        assert copy.read_bytes() == (tmp_path / "images" / doc["part_id"]).read_bytes()
        assert doc["modality"] == "image" and "drift" not in doc  # no calibration file: no drift


def test_only_anomalies_are_copied_when_asked(tmp_path: Path) -> None:
    docs, _ = run_station(tmp_path, {"inputs": "anomalies"})
    assert [d["decision"] for d in docs] == ["OK", "ANOMALY", "ANOMALY", "ANOMALY"]
    assert ["evidence" in d for d in docs] == [False, True, True, True]


def test_copies_are_bounded_per_sensor(tmp_path: Path) -> None:
    run_station(tmp_path, {"inputs": "all", "keep": 2}, count=5)
    assert len(list((tmp_path / "evidence" / "cam1").iterdir())) == 2


def test_a_copy_that_fails_is_an_event_and_the_decision_still_goes_out(tmp_path: Path) -> None:
    (tmp_path / "evidence").write_text("a file where the folder should be")
    docs, events = run_station(tmp_path, {"inputs": "all"}, count=2)
    assert len(docs) == 2 and not any("evidence" in d for d in docs)
    failed = [e for e in events if e["kind"] == "evidence_failed"]
    assert len(failed) == 2 and "pipeline.evidence.dir" in failed[0]["message"]
    for event in failed:
        validator("event").validate(event)


def test_nothing_is_copied_by_default(tmp_path: Path) -> None:
    docs, _ = run_station(tmp_path, {}, count=2)
    assert not any("evidence" in d for d in docs)
    assert not (tmp_path / "evidence").exists()
