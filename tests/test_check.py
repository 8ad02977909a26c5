"""``flowedge check``: one line per check, exit 0 only when the station could start and publish.

Against a real mosquitto (with a password file), a closed port, and missing files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mqtt_broker import Broker, free_port, require_mosquitto

from flowedge.cli import main
from flowedge.core.errors import EXIT_CHECK, EXIT_OK, EXIT_USAGE


@pytest.fixture
def broker(tmp_path: Path):  # noqa: ANN201
    require_mosquitto()
    (tmp_path / "broker").mkdir()
    b = Broker(tmp_path / "broker", users={"station3": "right"}).start()
    yield b
    b.stop()


def write_config(tmp_path: Path, model: Path, images: Path, port: int, **mqtt: object) -> Path:
    """A station file (JSON is YAML) for the tiny checkpoint, one folder source, the broker."""
    config = {
        "site": "plant",
        "station": "line1",
        "model": {"path": str(model), "backend": "torch", "threshold": 0.5},
        "sources": [{"name": "cam1", "kind": "folder", "path": str(images)}],
        "mqtt": {"port": port, "username": "station3", "password_env": "CHECK_PW", **mqtt},
        "spool": {"path": str(tmp_path / "state" / "spool.sqlite")},
        "pipeline": {"heatmaps": "none"},
    }
    path = tmp_path / "station.yaml"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, str]]:
    """Exit code and each check's line, by check name (``source cam1``, ``broker``, ...)."""
    code = main(["check", "--config", str(path), "--timeout", "5"])
    out = capsys.readouterr().out
    lines = {}
    for line in out.splitlines():
        if line.startswith(("OK ", "FAIL")):
            status, rest = line.split(maxsplit=1)
            name = rest.split("  ")[0].split(" 127.0.0.1")[0]
            lines[name] = f"{status} {rest}"
    return code, lines


@pytest.fixture
def station_file(tiny_checkpoint: Path, synthetic_dataset: Path, tmp_path: Path):  # noqa: ANN201
    """Config for the tiny checkpoint replaying the synthetic good test images to a port."""
    images = synthetic_dataset / "test" / "good"
    return lambda port: write_config(tmp_path, tiny_checkpoint, images, port)


@pytest.mark.broker
def test_everything_passes_against_a_real_broker(
    station_file, broker: Broker, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("CHECK_PW", "right")
    code, lines = check(station_file(broker.port), capsys)
    assert code == EXIT_OK, lines
    assert set(lines) == {"config", "model", "threshold", "source cam1", "broker", "spool"}
    assert all(line.startswith("OK") for line in lines.values())
    assert "CONNACK Success" in lines["broker"] and "flowedge-plant-line1-check" in lines["broker"]
    assert "csflow-" in lines["model"] and "0.5 from model.threshold" in lines["threshold"]


@pytest.mark.broker
def test_wrong_password_and_closed_port_fail_with_exit_5(
    station_file, broker: Broker, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("CHECK_PW", "wrong")
    code, lines = check(station_file(broker.port), capsys)
    assert code == EXIT_CHECK
    assert lines["broker"].startswith("FAIL") and "refused" in lines["broker"]
    assert "CHECK_PW" in lines["broker"] and lines["model"].startswith("OK")
    code, lines = check(station_file(free_port()), capsys)
    assert code == EXIT_CHECK and "cannot connect" in lines["broker"]


def test_missing_model_and_folder_exit_2(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("CHECK_PW", "x")
    path = write_config(tmp_path, tmp_path / "absent.onnx", tmp_path / "no-images", free_port())
    code, lines = check(path, capsys)
    assert code == EXIT_USAGE  # paths in the config that do not exist
    assert lines["model"].startswith("FAIL") and "absent.onnx" in lines["model"]
    assert "source cam1" in lines and "is not a directory" in lines["source cam1"]
    assert "threshold" not in lines  # needs the model


def test_empty_folder_and_unwritable_spool_fail(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("CHECK_PW", "x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "state").write_text("a file where the spool directory should be")
    code, lines = check(write_config(tmp_path, tmp_path / "m", tmp_path / "empty", 1), capsys)
    assert code == EXIT_USAGE  # the spool path is a configuration problem
    assert "has no files matching" in lines["source cam1"]
    assert lines["spool"].startswith("FAIL") and "no directory can be created" in lines["spool"]


def test_bad_config_is_one_fail_line_and_exit_2(tmp_path: Path, capsys) -> None:
    path = tmp_path / "station.yaml"
    path.write_text("sources: []\n")
    code = main(["check", "--config", str(path)])
    out = capsys.readouterr().out
    assert code == EXIT_USAGE and out.startswith("FAIL  config")
    assert "sources: a station needs at least one source" in out and "OK" not in out


def test_tail_and_microphone_sources_are_checked_without_waiting_for_a_sample(
    tmp_path: Path,
) -> None:
    """A robot cycle or a motion comes only when the line runs: check the log and the device."""
    from flowedge.edge.cmd_check import check_source
    from flowedge.edge.sources import parse_source

    log = tmp_path / "robot.csv"
    tail = parse_source({"name": "arm", "kind": "tail", "path": str(log)})
    missing = check_source(tail, 1.0)
    assert not missing.ok and missing.exit_code == EXIT_USAGE and "robot.csv" in missing.detail
    log.write_text("time;current\n")
    assert check_source(tail, 1.0).ok
    mic = parse_source(
        {
            "name": "mic",
            "kind": "microphone",
            "modality": "audio",
            "microphone": {"device": "no such microphone"},
        }
    )
    result = check_source(mic, 1.0)  # no PortAudio here (exit 2), or no such device (exit 5)
    assert not result.ok and result.exit_code in (EXIT_USAGE, EXIT_CHECK)
    assert "portaudio" in result.detail.lower() or "does not open" in result.detail


def test_ethercat_source_needs_its_interface(tmp_path: Path) -> None:
    from flowedge.edge.cmd_check import check_source
    from flowedge.edge.sources import parse_source

    bus = parse_source(
        {
            "name": "arm",
            "kind": "ethercat",
            "ethercat": {
                "interface": "no-such-nic0",
                "signals": [{"name": "torque_1", "slave": 0, "offset": 0, "type": "int16"}],
            },
        }
    )
    result = check_source(bus, 1.0)  # pysoem missing (exit 2) or the NIC missing (exit 5)
    assert not result.ok and result.exit_code in (EXIT_USAGE, EXIT_CHECK)
    assert "no-such-nic0" in result.detail or "pysoem" in result.detail
