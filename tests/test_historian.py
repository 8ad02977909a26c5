"""The fleet historian end to end: a real station, a real mosquitto, a real PostgreSQL and
``flowedge historian`` as a process. Killed mid-stream (SIGKILL), it loses nothing and stores
nothing twice; when the broker is SIGKILLed with decisions it had acknowledged to the
station and not saved, the historian finds the gap and the station sends them again from
its history: every decision ends in the table exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from mqtt_broker import Broker, require_mosquitto  # noqa: E402
from runtime_fakes import (  # noqa: E402
    open_station,
    station_config,
    stop_station,
    wait_until,
    write_images,
)

pytest.importorskip("psycopg", reason="psycopg not installed (pip install 'flowedge[historian]')")

import psycopg  # noqa: E402

SECRET = "9f" * 32
DECISIONS = 150


def historian_config(tmp_path: Path, port: int, dsn: str) -> Path:
    secret = tmp_path / "historian.secret"
    secret.write_text(SECRET + "\n")
    os.chmod(secret, 0o600)
    config = tmp_path / "historian.yaml"
    fast = {"reconnect_min_s": 0.1, "reconnect_max_s": 0.5}
    config.write_text(
        yaml.safe_dump(
            {
                "mqtt": {"port": port, "client_id": "test-historian", **fast},
                "database": {"dsn": dsn},
                "resend": {
                    "historian": "fleet",
                    "secret_file": str(secret),
                    "gap_wait_s": 0.5,
                    "retry_s": 1.0,
                    "max_retry_s": 2.0,
                    "idle_probe_s": 1.0,
                },
                "batch": 20,
            }
        )
    )
    return config


class HistorianProcess:
    def __init__(self, config: Path, log: Path) -> None:
        self.command = [sys.executable, "-m", "flowedge.cli", "historian", "--config", str(config)]
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def stored(dsn: str) -> list[tuple[int, bool]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT seq, resent FROM flowedge_decisions ORDER BY seq").fetchall()


def decided(station) -> int:  # noqa: ANN001
    return station.pipeline.counts["decisions"]


def test_every_decision_once_across_historian_and_broker_sigkills(
    tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_mosquitto()
    (tmp_path / "broker").mkdir()
    # persistent, but saved only every 30 minutes: a SIGKILL loses what it had queued
    broker = Broker(tmp_path / "broker", persistent=True, autosave_s=1800).start()
    monkeypatch.setenv("FLOWEDGE_HISTORIAN_SECRET", SECRET)
    write_images(tmp_path / "images", 5)
    cfg = station_config(
        tmp_path,
        sources=[
            {
                "name": "cam1",
                "kind": "folder",
                "path": str(tmp_path / "images"),
                "loop": True,
                "rate_hz": 25,
            }
        ],
        mqtt={"port": broker.port, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5},
        sinks=[
            {
                "kind": "history",
                "name": "history",
                "path": str(tmp_path / "history"),
                "min_free_mb": 0,
            }
        ],
        commands={"allowed": ["resend"], "resend": {"historian": "fleet"}},
    )
    historian = HistorianProcess(
        historian_config(tmp_path, broker.port, pg_dsn), tmp_path / "historian.log"
    )
    historian.start()
    station = open_station(cfg, max_samples=DECISIONS)
    try:
        wait_until(
            lambda: (tmp_path / "historian.log").read_text().count("connected to") >= 1,
            60,
            "the historian",
        )
        station.start()
        wait_until(lambda: len(stored(pg_dsn)) >= 20, 60, "20 decisions in the table")
        historian.kill()  # the broker queues for its session meanwhile
        mark = decided(station)
        wait_until(lambda: decided(station) >= mark + 15, 60, "15 more decisions")
        historian.start()  # the session's queue, and what was unacknowledged, come again
        wait_until(lambda: len(stored(pg_dsn)) >= mark + 10, 60, "the queued decisions")
        historian.kill()
        mark = decided(station)
        wait_until(lambda: decided(station) >= mark + 15, 60, "15 more decisions")
        mqtt_sink = station.publisher
        wait_until(lambda: mqtt_sink.delivery.in_flight() == 0, 30, "the broker's PUBACKs")
        broker.stop()  # SIGKILL: the decisions it queued for the historian are gone
        broker.start()
        historian.start()
        assert station.pipeline.wait(60)
        wait_until(lambda: len(stored(pg_dsn)) >= DECISIONS, 90, "every decision in the table")
        time.sleep(1.5)  # a late redelivery or answer would show as a second row
    finally:
        historian.kill()
        stop_station(station)
        broker.stop()
    rows = stored(pg_dsn)
    log = (tmp_path / "historian.log").read_text()
    assert [seq for seq, _ in rows] == list(range(1, DECISIONS + 1)), log[-3000:]
    assert any(resent for _, resent in rows), "the broker lost nothing: the test proved nothing"
    assert "asked plant/line1 for cam1" in log and "Traceback" not in log


def test_the_command_says_what_is_wrong_and_exits_with_its_code(
    tmp_path: Path, pg_dsn: str, capsys: pytest.CaptureFixture
) -> None:
    from mqtt_broker import free_port

    from flowedge.cli import main

    config = historian_config(tmp_path, free_port(), pg_dsn)
    (tmp_path / "historian.secret").chmod(0o644)
    assert main(["historian", "--config", str(config)]) == 2
    assert "chmod 600" in capsys.readouterr().err
    (tmp_path / "historian.secret").chmod(0o600)
    settings = yaml.safe_load(config.read_text())
    settings["database"]["dsn"] = f"host=127.0.0.1 port={free_port()} dbname=none connect_timeout=2"
    config.write_text(yaml.safe_dump(settings))
    assert main(["historian", "--config", str(config)]) == 5
    assert "cannot use PostgreSQL" in capsys.readouterr().err
    config.write_text("batch: 0\n")
    assert main(["historian", "--config", str(config)]) == 2
    assert "batch" in capsys.readouterr().err
