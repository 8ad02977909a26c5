"""Zero loss under crashes, as a process: SIGKILLs of ``flowedge run``, a broker SIGKILL and
poison files while a watched folder fills; and the retained status after a stop without broker.

The long version with many more kills is ``bench/faults.py`` (same harness).
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(Path(__file__).parent))

from faults import FaultPlan, Station, export_tiny_model, run_faults, wait_until  # noqa: E402
from mqtt_broker import Broker, Subscriber, require_mosquitto  # noqa: E402

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.mark.broker
def test_every_fed_file_is_answered_across_station_and_broker_kills(
    tmp_path: Path, model: Path
) -> None:
    require_mosquitto()
    plan = FaultPlan(seconds=12, rate=(10, 10), kills=3, broker_kills=1, poison_every=12, seed=7)
    outcome = run_faults(tmp_path, model, plan, settle_s=60)
    assert len(outcome.fed) >= 60 and outcome.poison
    assert outcome.lost == [], outcome.summary()
    assert outcome.conflicting == []  # a redelivery carries the very same payload
    assert outcome.gaps == []
    assert outcome.answered_twice == []  # the station itself never answers a file twice
    assert all(outcome.decisions[name] == {"ERROR"} for name in outcome.poison)
    assert {"OK", "ANOMALY"} & set().union(*outcome.decisions.values())


@pytest.mark.broker
def test_graceful_stop_while_the_broker_is_away_ends_with_a_retained_offline(
    tmp_path: Path, model: Path
) -> None:
    require_mosquitto()
    (tmp_path / "broker").mkdir()
    (tmp_path / "watched").mkdir()
    broker = Broker(tmp_path / "broker", persistent=True).start()
    station = Station(tmp_path, model, broker.port, tmp_path / "watched")
    status = "flowedge/plant/faults/status"
    watcher = Subscriber(broker.port, topic=status)
    try:
        station.start()
        assert watcher.wait_for("/status", 1)[-1]["state"] == "online"
        watcher.close()
        broker.stop()  # the retained "online" is saved; no Last Will: the broker itself died
        station.proc.send_signal(signal.SIGTERM)
        assert wait_until(lambda: b"broker away while stopping" in station.log_text(), 30)
        broker.start()  # back within the stop timeout
        assert station.proc.wait(60) == 0
        retained = Subscriber(broker.port, topic=status)
        [doc] = retained.wait_for("/status", 1)
        retained.close()
        assert doc["state"] == "offline" and "graceful" in doc["reason"]
    finally:
        station.kill()
        broker.stop()
