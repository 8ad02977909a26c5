"""The historian reads Sparkplug B too: a station's DDATA become the same rows as its JSON
decisions (same key), a decision that arrives both ways is stored once, and a DDATA that is
no decision (a drift report) is skipped, not rejected."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from mqtt_broker import Broker  # noqa: E402
from runtime_fakes import (  # noqa: E402
    open_station,
    station_config,
    stop_station,
    wait_until,
    write_images,
)
from test_historian import HistorianProcess, historian_config  # noqa: E402

pytest.importorskip("google.protobuf", reason="protobuf not installed (flowedge[sparkplug])")
pytest.importorskip("psycopg", reason="psycopg not installed (pip install 'flowedge[historian]')")

import psycopg  # noqa: E402

from flowedge.core import sparkplug as sp  # noqa: E402
from flowedge.historian.rows import COLUMNS  # noqa: E402
from flowedge.historian.sparkplug_rows import parse_sparkplug  # noqa: E402

DECISIONS = 40
TOPIC = "spBv1.0/plant/DDATA/line1/cam1"
DECIDED = datetime(2026, 12, 7, 8, 30, 0, 250_000, tzinfo=UTC)


def decision_payload(seq: int = 7, historical: bool = False) -> bytes:
    doc = {
        "decision": "ANOMALY",
        "score": 3.5,
        "threshold": 2.0,
        "normalised_score": 1.75,
        "model": {"id": "csflow-abc"},
        "part_id": "4711.png",
        "seq": seq,
        "error": None,
        "latency_ms": {"total": 40.0},
    }
    stamp = int(DECIDED.timestamp() * 1000)
    values = sp.decision_metrics(doc)
    return sp.encode(sp.metrics(values, sp.DEVICE, stamp, historical), seq=3)


def test_a_decision_ddata_is_a_row_under_the_json_key() -> None:
    row = dict(zip(COLUMNS, parse_sparkplug(TOPIC, decision_payload()).values, strict=True))
    assert (row["site"], row["station"], row["source"], row["seq"]) == ("plant", "line1", "cam1", 7)
    assert row["decided_utc"] == DECIDED
    assert row["captured_utc"] == DECIDED - timedelta(milliseconds=40)
    assert (row["decision"], row["score"], row["threshold"]) == ("ANOMALY", 3.5, 2.0)
    assert (row["part_id"], row["model_id"], row["resent"]) == ("4711.png", "csflow-abc", False)
    assert '"via": "sparkplug"' in row["document"]


def test_a_drift_report_is_no_decision_and_garbage_is_refused_with_the_reason() -> None:
    drift = sp.encode(sp.metrics({"Drift": True, "Drift Report": "shifted"}, sp.DEVICE), seq=4)
    assert parse_sparkplug(TOPIC, drift) is None
    with pytest.raises(ValueError, match="not a Sparkplug B payload"):
        parse_sparkplug(TOPIC, b"\xff\xff\xff")
    with pytest.raises(ValueError, match="not a Sparkplug DDATA topic"):
        parse_sparkplug("spBv1.0/plant/NDATA/line1", decision_payload())
    with pytest.raises(ValueError, match="Sequence 0"):
        parse_sparkplug(TOPIC, decision_payload(seq=0))


def rows(dsn: str) -> list[tuple[int, str]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT seq, document->>'via' FROM flowedge_decisions ORDER BY seq"
        ).fetchall()


def test_both_inputs_store_each_decision_once_and_sparkplug_alone_stores_every_one(
    tmp_path: Path, postgres, pg_dsn: str, broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    """Two historians on one broker: one reads JSON and Sparkplug, one Sparkplug only."""
    monkeypatch.setenv("FLOWEDGE_HISTORIAN_SECRET", "9f" * 32)
    only_sparkplug_dsn = postgres.create_database("t_sparkplug_only")
    historians = []
    for name, dsn, inputs in (
        ("both", pg_dsn, ["mqtt", "sparkplug"]),
        ("sparkplug", only_sparkplug_dsn, ["sparkplug"]),
    ):
        folder = tmp_path / name
        folder.mkdir()
        config = historian_config(folder, broker.port, dsn)
        settings = yaml.safe_load(config.read_text())
        settings["mqtt"].update(client_id=f"historian-{name}", inputs=inputs)
        settings["resend"]["enabled"] = False  # the stream is whole: nothing to ask for
        config.write_text(yaml.safe_dump(settings))
        historians.append(HistorianProcess(config, folder / "historian.log"))
    write_images(tmp_path / "images", 5)
    fast = {"port": broker.port, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5}
    cfg = station_config(
        tmp_path,
        sources=[
            {"name": "cam1", "kind": "folder", "path": str(tmp_path / "images"), "loop": True}
        ],
        mqtt=fast,
        sinks=[{"kind": "sparkplug", "name": "scada", **fast}],
    )
    station = open_station(cfg, max_samples=DECISIONS)
    try:
        for historian in historians:
            historian.start()
        for historian in historians:
            wait_until(lambda h=historian: "connected to" in h.log.read_text(), 60, "historians")
        station.start()
        assert station.pipeline.wait(60)
        for dsn in (pg_dsn, only_sparkplug_dsn):
            wait_until(lambda d=dsn: len(rows(d)) >= DECISIONS, 60, "every decision stored")
        station.pipeline.wait(1)  # a late second copy would show as a second row
    finally:
        for historian in historians:
            historian.kill()
        stop_station(station)
    both, only = rows(pg_dsn), rows(only_sparkplug_dsn)
    assert [seq for seq, _ in both] == list(range(1, DECISIONS + 1))
    assert [seq for seq, _ in only] == list(range(1, DECISIONS + 1))
    assert {via for _, via in only} == {"sparkplug"}
    log = historians[0].log.read_text()
    assert "numbering restarted" not in log and "Traceback" not in log
