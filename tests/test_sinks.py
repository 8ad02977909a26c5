"""Sinks: each delivers every record from its own cursor, so a dead sink never blocks or loses
another's records; an earlier release's spool migrates with nothing lost."""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from mqtt_broker import Broker, Subscriber, free_port, require_mosquitto  # noqa: E402
from runtime_fakes import (  # noqa: E402
    open_station,
    station_config,
    stop_station,
    wait_until,
    write_images,
)

from flowedge.core.errors import ConfigError  # noqa: E402
from flowedge.edge.config import parse_config  # noqa: E402
from flowedge.edge.sinks import Delivery  # noqa: E402
from flowedge.edge.spool import Spool  # noqa: E402

# written by flowedge 0.2.0 (commit 4e62c09, before sinks): a folder replay of three images
# and one unreadable file with MQTT disabled, so its MQTT outbox holds 1 event + 4 decisions
OLD_SPOOL = Path(__file__).parent / "data" / "spool-flowedge-0.2.0.sqlite"


def records(spool: Spool) -> list[tuple[int, str, str | None]]:
    return [(r.id, r.kind, r.source) for r in spool.after(0, 1000)]


def test_a_spool_of_the_previous_release_migrates_with_nothing_lost(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    shutil.copy(OLD_SPOOL, path)
    with sqlite3.connect(path) as db:
        old = db.execute("SELECT id, topic, payload FROM outbox ORDER BY id").fetchall()
    spool = Spool(path, 100)
    assert records(spool) == [
        (1, "event", "cam1"),
        (2, "decision", "cam1"),
        (3, "decision", "cam1"),
        (4, "decision", "cam1"),
        (5, "decision", "cam1"),
    ]
    assert [r.body for r in spool.after(0, 100)] == [bytes(p) for _, _, p in old]
    assert spool.recall("cam1")  # the folder's replay position survives too
    row = spool.put_numbered("cam1", lambda seq: json.dumps({"seq": seq}).encode())
    assert row == 6 and spool.after(5, 1)[0].doc() == {"seq": 5}  # cam1's numbering goes on
    spool.close()
    with sqlite3.connect(path) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert "outbox" not in tables
    assert records(Spool(path, 100))[:5] == records(Spool(path, 100))[:5]  # opening again: same


def test_a_record_leaves_only_when_every_sink_has_it(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.sqlite", 100)
    fast, slow = Delivery(spool, "fast"), Delivery(spool, "slow")
    for i in range(5):
        spool.put("event", None, str(i).encode())
    fast.acknowledged(r.id for r in fast.next(10))
    assert fast.backlog() == 0 and slow.backlog() == 5 and spool.count() == 5
    sent = slow.next(10)
    slow.acknowledged([sent[2].id, sent[1].id])  # out of order: the cursor waits for the first
    assert spool.cursor("slow") == 0 and spool.count() == 5
    slow.acknowledged([sent[0].id])
    assert spool.cursor("slow") == 3 and spool.count() == 2
    slow.rewind()  # a new connection: what was in flight goes out again
    assert [r.id for r in slow.next(10)] == [4, 5]
    spool.close()
    again = Spool(tmp_path / "s.sqlite", 100)  # the cursors are durable
    assert again.cursor("fast") == 5 and again.cursor("slow") == 3 and again.count() == 2


def test_a_sink_attached_later_owes_what_is_still_there(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.sqlite", 100)
    for i in range(3):
        spool.put("event", None, str(i).encode())  # no sink yet: the spool keeps everything
    late = Delivery(spool, "history")
    assert [r.id for r in late.next(10)] == [1, 2, 3]


def test_a_sinks_max_backlog_passes_over_its_oldest_records_and_counts_them(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path / "s.sqlite", 100)
    keeper, bounded = Delivery(spool, "mqtt"), Delivery(spool, "sparkplug", max_backlog=2)
    for i in range(5):
        spool.put("event", None, str(i).encode())
    assert spool.skipped["sparkplug"] == 3 and bounded.backlog() == 2
    assert [r.id for r in bounded.next(10)] == [4, 5]
    assert keeper.backlog() == 5  # the other sink loses nothing


def test_sink_names_must_be_unique_and_each_sink_is_validated_as_its_kind() -> None:
    with pytest.raises(ConfigError, match="sink names must be unique; repeated: mqtt"):
        parse_config({"sinks": [{"kind": "mqtt", "name": "mqtt"}]})
    with pytest.raises(ConfigError, match=r"sinks\[0\]\.port"):
        parse_config({"sinks": [{"kind": "mqtt", "name": "backup", "port": 0}]})
    with pytest.raises(ConfigError, match=r"sinks\[0\]: Input tag 'carrier-pigeon'"):
        parse_config({"sinks": [{"kind": "carrier-pigeon", "name": "x"}]})
    cfg = parse_config({"mqtt": {"enabled": False}, "sinks": [{"kind": "mqtt", "name": "b"}]})
    assert [s.name for s in cfg.active_sinks()] == ["b"]
    assert cfg.sinks[0].client_id_for("plant", "line1") == "flowedge-plant-line1-b"


@pytest.mark.broker
@pytest.mark.timeout(120)
def test_a_dead_sink_neither_blocks_nor_loses_another_sinks_decisions(tmp_path: Path) -> None:
    """Two brokers: the first takes every decision while the second is down; the spool keeps
    them for the second, which gets each exactly once when it is up after a station restart."""
    require_mosquitto()
    (tmp_path / "b1").mkdir()
    (tmp_path / "b2").mkdir()
    live = Broker(tmp_path / "b1").start()
    later = Broker(tmp_path / "b2")  # not started yet
    write_images(tmp_path / "images", 8)
    fast = {"reconnect_min_s": 0.1, "reconnect_max_s": 0.5}
    cfg = station_config(
        tmp_path,
        mqtt={"enabled": True, "port": live.port, **fast},
        sinks=[{"kind": "mqtt", "name": "backup", "port": later.port, **fast}],
    )
    first = Subscriber(live.port)
    try:
        station = open_station(cfg)
        station.start()
        docs = first.wait_for("/decision", 8)
        assert [d["seq"] for d in docs] == list(range(1, 9))
        wait_until(lambda: station.spool.backlog("mqtt") == 0, 10, "mqtt to acknowledge all")
        assert station.spool.backlog("backup") == 8 + len(first.on("/event"))
        assert "backup: broker DOWN" in station.status_line()
        stop_station(station)
        for image in (tmp_path / "images").iterdir():
            image.unlink()  # the restart decides nothing new: only the backlog moves
        later.start()
        second = Subscriber(later.port)
        station = open_station(cfg)
        station.start()
        wait_until(lambda: station.spool.count() == 0, 20, "the backup broker to take all")
        assert [d["seq"] for d in second.wait_for("/decision", 8)] == list(range(1, 9))
        assert len(first.on("/decision")) == 8  # the first broker got nothing twice
        stop_station(station)
        second.close()
    finally:
        first.close()
        live.stop()
        later.stop()


def test_a_sink_whose_port_is_refused_still_lets_the_station_run(tmp_path: Path) -> None:
    """No broker at all on the second sink's port: decisions still stored, in order."""
    write_images(tmp_path / "images", 3)
    cfg = station_config(tmp_path, sinks=[{"kind": "mqtt", "name": "nowhere", "port": free_port()}])
    station = open_station(cfg)
    station.start()
    assert station.pipeline.wait(15)
    stop_station(station)
    spool = Spool(cfg.spool.path, 100)
    assert [r.doc()["seq"] for r in spool.after(0, 100) if r.kind == "decision"] == [1, 2, 3]


def first_seen(docs: list[dict]) -> list[int]:
    """Sequence numbers in order of first arrival (at-least-once: repeats are allowed)."""
    seen: list[int] = []
    for doc in docs:
        if doc["seq"] not in seen:
            seen.append(doc["seq"])
    return seen


@pytest.mark.broker
@pytest.mark.timeout(180)
def test_two_sinks_lose_nothing_across_broker_and_station_sigkills(tmp_path: Path) -> None:
    """The station process is SIGKILLed while one broker was SIGKILLed and restarted and the
    other was never up; after the restart each broker has every decision, in order."""
    import os
    import signal
    import subprocess

    import yaml
    from runtime_fakes import write_onnx_model

    require_mosquitto()
    (tmp_path / "b1").mkdir()
    (tmp_path / "b2").mkdir()
    main_broker = Broker(tmp_path / "b1").start()
    backup = Broker(tmp_path / "b2")  # down until the station has been killed
    write_images(tmp_path / "images", 6)
    model = write_onnx_model(tmp_path / "model.onnx", {"threshold": 1e9, "sha256": "e" * 64})
    fast = {"reconnect_min_s": 0.1, "reconnect_max_s": 0.5}
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "site": "plant",
                "station": "line1",
                "model": {"path": str(model)},
                "sources": [
                    {
                        "name": "cam1",
                        "kind": "folder",
                        "path": str(tmp_path / "images"),
                        "loop": True,
                        "rate_hz": 20,
                    }
                ],
                "mqtt": {"port": main_broker.port, **fast},
                "sinks": [{"kind": "mqtt", "name": "backup", "port": backup.port, **fast}],
                "metrics": {"enabled": False},
                "spool": {"path": str(tmp_path / "spool.sqlite")},
            }
        )
    )
    command = [sys.executable, "-m", "flowedge.cli", "run", "--config", str(config)]
    first = Subscriber(main_broker.port, topic="flowedge/plant/line1/+/decision")
    second = None
    try:
        station = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        assert len(first.wait_for("/decision", 5, timeout=60)) >= 5
        main_broker.stop()  # SIGKILL: the station keeps deciding into the spool
        time.sleep(0.5)
        main_broker.start()
        assert len(first.wait_for("/decision", 15, timeout=60)) >= 15
        os.kill(station.pid, signal.SIGKILL)
        station.wait(10)
        decided = Spool(tmp_path / "spool.sqlite", 10_000)
        last = max(r.doc()["seq"] for r in decided.after(0, 10_000) if r.kind == "decision")
        decided.close()
        backup.start()
        second = Subscriber(backup.port, topic="flowedge/plant/line1/+/decision")
        rerun = subprocess.run(
            [*command, "--max-samples", "2", "--exit-when-done"], capture_output=True, timeout=90
        )
        assert rerun.returncode == 0, rerun.stdout[-3000:]
        total = last + 2
        assert first_seen(first.wait_for("/decision", total)) == list(range(1, total + 1))
        assert first_seen(second.wait_for("/decision", total)) == list(range(1, total + 1))
        assert Spool(tmp_path / "spool.sqlite", 10_000).count() == 0
    finally:
        first.close()
        if second is not None:
            second.close()
        main_broker.stop()
        backup.stop()


def test_a_command_runs_only_when_allowed_and_each_is_an_event(tmp_path: Path) -> None:
    """set_threshold from a sink: refused by default, applied when commands.allowed names
    it, refused with a bad value; each answer is an event naming who sent it."""
    for allowed in ([], ["set_threshold"]):
        cfg = station_config(tmp_path / str(len(allowed)), commands={"allowed": allowed})
        write_images(tmp_path / str(len(allowed)) / "images", 1)
        station = open_station(cfg)
        station.start()
        assert station.pipeline.wait(15)
        answer = station.commands.run("set_threshold", {"value": 7.5}, "scada-1")
        assert answer.accepted == bool(allowed)
        assert station.pipeline.policy.threshold == (7.5 if allowed else 3.0)
        assert not station.commands.run(
            "set_threshold", {"value": float("nan")}, "scada-1"
        ).accepted
        assert not station.commands.run("format_disk", {}, "scada-1").accepted
        stop_station(station)
        spool = Spool(cfg.spool.path, 100)
        docs = [r.doc() for r in spool.after(0, 100) if r.kind == "event"][-3:]
        assert [d["kind"] for d in docs] == (
            ["command", "command_refused", "command_refused"]
            if allowed
            else ["command_refused"] * 3
        )
        assert all(d["details"]["origin"] == "scada-1" for d in docs)
        assert "commands.allowed" in docs[0]["message"] or allowed
