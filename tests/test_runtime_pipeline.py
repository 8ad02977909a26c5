"""The station loop in-process with a fake backend: order, bad input, sources, spool, watchdog."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from runtime_fakes import (  # noqa: E402
    FakeBackend,
    drop_oldest_config,
    fake_card,
    open_station,
    station_config,
    stop_station,
    validator,
    wait_until,
    write_images,
    write_onnx_model,
)

from flowedge.edge.health import Notifier, StageProgress, Watchdog  # noqa: E402
from flowedge.edge.loop.pipeline import Pipeline  # noqa: E402
from flowedge.edge.loop.policy import Policy  # noqa: E402
from flowedge.edge.metrics import Metrics  # noqa: E402
from flowedge.edge.sources.camera import CameraSource  # noqa: E402
from flowedge.edge.spool import Spool  # noqa: E402


def run_pipeline(cfg, backend=None, **kwargs) -> tuple[Pipeline, list[tuple[str, dict]]]:  # noqa: ANN001
    spool = Spool(cfg.spool.path, cfg.spool.max_messages, cfg.spool.overflow)
    pipeline = Pipeline(
        cfg, backend or FakeBackend(), Policy(cfg.model.threshold), spool, Metrics(), **kwargs
    )
    pipeline.start()
    assert pipeline.wait(30), "pipeline did not finish"
    rows = [(r.kind, json.loads(r.body)) for r in spool.after(0, 10_000)]
    spool.close()
    return pipeline, rows


def decisions(rows: list[tuple[str, dict]]) -> list[dict]:
    return [doc for kind, doc in rows if kind == "decision"]


def events(rows: list[tuple[str, dict]]) -> list[dict]:
    return [doc for kind, doc in rows if kind == "event"]


def test_folder_replay_decides_every_image_in_order(tmp_path: Path) -> None:
    write_images(tmp_path / "images", 12)
    cfg = station_config(
        tmp_path,
        pipeline={"heatmaps": "anomalies", "max_batch": 4, "heatmap_dir": str(tmp_path / "heat")},
    )
    backend = FakeBackend(delay_s=0.01)
    pipeline, rows = run_pipeline(cfg, backend)
    docs = decisions(rows)
    assert [d["part_id"] for d in docs] == [f"img_{i:04d}.png" for i in range(12)]
    assert [d["seq"] for d in docs] == list(range(1, 13))
    check = validator("decision")
    for doc in docs:
        check.validate(doc)
        assert doc["decision"] == ("ANOMALY" if doc["score"] > 3.0 else "OK")
        assert (doc["heatmap"] is not None) == (doc["decision"] == "ANOMALY")
        assert doc["heatmap"] is None or Path(doc["heatmap"]).is_file()
        assert {"capture", "preprocess", "infer", "publish"} <= set(doc["latency_ms"])
    assert any(d["decision"] == "ANOMALY" for d in docs) and any(
        d["decision"] == "OK" for d in docs
    )
    assert max(backend.batches) <= 4
    assert pipeline.counts["decisions"] == 12


def test_sequence_numbers_continue_across_restarts(tmp_path: Path) -> None:
    write_images(tmp_path / "images", 3)
    cfg = station_config(tmp_path)
    _, first = run_pipeline(cfg)
    _, both = run_pipeline(cfg)  # the spool still holds the first run's (unpublished) rows
    assert [d["seq"] for d in decisions(both)] == [1, 2, 3, 4, 5, 6]
    assert decisions(both)[:3] == decisions(first)


def test_corrupt_image_gives_error_decision_and_event_and_goes_on(tmp_path: Path) -> None:
    write_images(tmp_path / "images", 4)
    (tmp_path / "images" / "img_0001.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    cfg = station_config(tmp_path)
    pipeline, rows = run_pipeline(cfg)
    docs = decisions(rows)
    assert [d["decision"] != "ERROR" for d in docs] == [True, False, True, True]
    bad = docs[1]
    validator("decision").validate(bad)
    assert "img_0001.png" in bad["error"] and bad["score"] is None
    evs = [e for e in events(rows) if e["kind"] == "bad_input"]
    assert len(evs) == 1 and "img_0001.png" in evs[0]["message"]
    validator("event").validate(evs[0])
    assert pipeline.counts["errors"] == 1


def test_nan_score_is_an_error_not_a_silent_ok(tmp_path: Path) -> None:
    write_images(tmp_path / "images", 2)

    class NanBackend(FakeBackend):
        def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            scores, maps = super().infer(batch)
            scores[:] = np.nan
            return scores, maps

    _, rows = run_pipeline(station_config(tmp_path), NanBackend())
    assert [d["decision"] for d in decisions(rows)] == ["ERROR", "ERROR"]
    assert all("non-finite" in d["error"] for d in decisions(rows))


class FlakyCapture:
    """A camera that delivers 3 frames, vanishes for two opens, then delivers 3 more."""

    opens = 0

    def __init__(self) -> None:
        FlakyCapture.opens += 1
        self.ok = FlakyCapture.opens not in (2, 3)
        self.left = 3

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self.ok

    def read(self) -> tuple[bool, np.ndarray | None]:
        if not self.ok or self.left == 0:
            return False, None
        self.left -= 1
        return True, np.full((40, 40, 3), 10 * self.left, dtype=np.uint8)

    def release(self) -> None:
        pass


def test_camera_loss_reconnects_with_events(tmp_path: Path) -> None:
    FlakyCapture.opens = 0
    cfg = station_config(
        tmp_path,
        sources=[
            {
                "name": "cam",
                "kind": "camera",
                "uri": "0",
                "reconnect_min_s": 0.05,
                "reconnect_max_s": 0.1,
            }
        ],
    )

    def factory(source_cfg, context):  # noqa: ANN001, ANN202
        return CameraSource(
            source_cfg,
            context.events,
            open_capture=lambda uri: FlakyCapture(),
            on_state=context.on_state,
        )

    changes: list[str] = []
    pipeline, rows = run_pipeline(
        cfg, source_factory=factory, max_samples=6, on_status=changes.append
    )
    assert changes == ["source cam up", "source cam lost", "source cam up", "source cam ended"]
    kinds = [e["kind"] for e in events(rows)]
    assert kinds.count("source_lost") == 2 and kinds.count("source_reconnected") == 1
    assert kinds.index("source_reconnected") > kinds.index("source_lost")
    assert [d["part_id"] for d in decisions(rows)] == [str(i) for i in range(1, 7)]


def test_drop_oldest_counts_and_reports_drops(tmp_path: Path) -> None:
    cfg = drop_oldest_config(tmp_path)
    pipeline, rows = run_pipeline(cfg, FakeBackend(delay_s=0.02))
    dropped = [e for e in events(rows) if e["kind"] == "dropped"]
    reported = sum(e["details"]["count"] for e in dropped)
    assert pipeline.counts["dropped"] == reported > len(dropped) >= 1  # summarised, all counted
    assert len(decisions(rows)) + reported == 30
    parts = [d["part_id"] for d in decisions(rows)]
    assert parts == sorted(parts) and parts[-1] == "img_0029.png"  # the newest frame survives


def test_watch_source_waits_for_complete_files(tmp_path: Path) -> None:
    watched = tmp_path / "drop"
    watched.mkdir()
    write_images(tmp_path / "src", 2)
    (watched / "old.png").write_bytes((tmp_path / "src" / "img_0000.png").read_bytes())
    cfg = station_config(
        tmp_path, sources=[{"name": "line", "kind": "watch", "path": str(watched)}]
    )
    spool = Spool(cfg.spool.path, 100)
    pipeline = Pipeline(cfg, FakeBackend(), Policy(3.0), spool, Metrics(), max_samples=1)
    pipeline.start()
    wait_until(lambda: bool(spool.recall("line")), 5, "the watch source's snapshot")
    data = (tmp_path / "src" / "img_0001.png").read_bytes()
    with open(watched / "new.png", "wb") as handle:  # written in two parts, slowly
        handle.write(data[:40])
        handle.flush()
        time.sleep(0.5)  # the scenario, not a wait: a writer pausing for several polls
        handle.write(data[40:])
    assert pipeline.wait(15)
    docs = [json.loads(r.body) for r in spool.after(0, 100)]
    assert [(d["part_id"], d["decision"]) for d in docs] == [("new.png", "OK")]  # not ERROR


def test_spool_survives_reopen_and_applies_overflow_policy(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.sqlite", max_messages=10)
    for i in range(12):
        spool.put("event", None, str(i).encode())
    assert spool.count() == 10 and spool.overflowed == 2
    spool.close()
    again = Spool(tmp_path / "s.sqlite", max_messages=10, overflow="reject_new")
    assert [r.body for r in again.after(0, 100)] == [str(i).encode() for i in range(2, 12)]
    assert again.put("event", None, b"x") is None and again.overflowed == 1
    again.close()


def test_watchdog_fed_only_while_stages_progress() -> None:
    address = f"@flowedge-test-{time.monotonic_ns()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("\0" + address[1:])
    server.settimeout(2)
    busy = StageProgress("infer", idle=lambda: False)
    notifier = Notifier(address)
    dog = Watchdog(notifier, [busy], 0.1, status=lambda: "fine")
    stalled = threading.Event()

    def work() -> None:
        while not stalled.wait(0.01):
            busy.tick()

    worker = threading.Thread(target=work)
    worker.start()
    dog.start()
    try:
        notifier.send("READY=1")
        assert server.recv(512) == b"READY=1"
        assert server.recv(512).startswith(b"WATCHDOG=1\nSTATUS=fine")
        stalled.set()
        worker.join()
        while not (message := server.recv(512)).startswith(b"STATUS=stalled"):
            assert message.startswith(b"WATCHDOG=1")  # pings sent before the stall was seen
        assert message.startswith(b"STATUS=stalled: infer")
    finally:
        dog.stop()
        server.close()


def test_bad_config_key_exits_2_with_key_path(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from flowedge.cli import main

    config = tmp_path / "bad.yaml"
    config.write_text("sources: [{name: a, kind: folder, path: x, backpresure: block}]\n")
    assert main(["run", "--config", str(config)]) == 2
    assert "sources[0].backpresure: unknown key" in capsys.readouterr().err


def test_metrics_endpoint_reports_stages_queues_and_bad_inputs(tmp_path: Path) -> None:
    import urllib.request

    from flowedge.edge.metrics import MetricsConfig

    write_images(tmp_path / "images", 3)
    (tmp_path / "images" / "img_0002.png").write_bytes(b"")
    cfg = station_config(tmp_path)
    spool = Spool(cfg.spool.path, 100)
    metrics = Metrics()
    pipeline = Pipeline(cfg, FakeBackend(), Policy(3.0), spool, metrics)
    port = metrics.serve(MetricsConfig(port=0))
    try:
        pipeline.start()
        assert pipeline.wait(15)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        metrics.close()
        spool.close()
    assert 'flowedge_stage_seconds_count{stage="infer"} 2.0' in text
    assert 'flowedge_bad_inputs_total{source="cam1"} 1.0' in text
    assert 'flowedge_decisions_total{decision="ERROR",source="cam1"} 1.0' in text
    assert "flowedge_spool_messages" in text and "flowedge_broker_connected" in text
    assert 'flowedge_queue_depth{queue="infer"}' in text


def test_json_logs_are_one_object_per_line() -> None:
    import logging

    from flowedge.edge.logs import JsonFormatter

    record = logging.LogRecord(
        "flowedge.run", logging.ERROR, __file__, 1, "camera %s lost", ("c1",), None
    )
    doc = json.loads(JsonFormatter().format(record))
    assert doc["level"] == "ERROR" and doc["message"] == "camera c1 lost"
    assert doc["logger"] == "flowedge.run" and doc["utc"].endswith("+00:00")


def test_backend_failure_answers_with_error_decisions(tmp_path: Path) -> None:
    write_images(tmp_path / "images", 2)

    class Broken(FakeBackend):
        def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            raise RuntimeError("CUDA error: device lost")

    _, rows = run_pipeline(station_config(tmp_path), Broken())
    assert [d["decision"] for d in decisions(rows)] == ["ERROR", "ERROR"]
    assert any(
        e["kind"] == "inference_failed" and "device lost" in e["message"] for e in events(rows)
    )


def test_a_dying_stage_ends_the_run_instead_of_hanging(tmp_path: Path) -> None:
    write_images(tmp_path / "images", 2)
    cfg = station_config(tmp_path)
    spool = Spool(cfg.spool.path, 100)

    def disk_full(sensor, build, intake_id=None):  # noqa: ANN001, ANN202
        raise OSError(28, "No space left on device")

    spool.put_numbered = disk_full
    pipeline = Pipeline(cfg, FakeBackend(), Policy(3.0), spool, Metrics())
    pipeline.start()
    assert pipeline.wait(10)
    assert isinstance(pipeline.failure, OSError)


def test_calibration_gives_threshold_normalised_score_and_drift_events(tmp_path: Path) -> None:
    from flowedge.calibration.calibfile import save_calibration
    from flowedge.calibration.calibrate import CalibrationOptions, build_calibration
    from flowedge.edge.loop.policy import load_policy

    normal = np.random.default_rng(0).normal(2.0, 0.3, 300)
    path = tmp_path / "calibration.json"
    calibration = save_calibration(
        build_calibration(normal, fake_card(), CalibrationOptions()), path
    )
    folder = tmp_path / "images"
    write_images(folder, 25)
    for image in folder.glob("*.png"):  # all bright: every score far above the normal ones
        image.write_bytes((folder / "img_0006.png").read_bytes())
    cfg = station_config(
        tmp_path,
        model={"path": "x", "calibration": str(path)},
        drift={"window": 20, "check_every": 5},
    )
    policy = load_policy(cfg, fake_card())
    assert policy.threshold == calibration.threshold
    spool = Spool(cfg.spool.path, 1000)
    pipeline = Pipeline(cfg, FakeBackend(), policy, spool, Metrics())
    pipeline.start()
    assert pipeline.wait(15)
    rows = [(r.kind, json.loads(r.body)) for r in spool.after(0, 1000)]
    docs = decisions(rows)
    assert all(
        d["threshold"] == calibration.threshold and d["normalised_score"] is not None for d in docs
    )
    assert docs[0]["model"]["calibration_sha256"] == calibration.sha256
    drift = [e for e in events(rows) if e["kind"] == "drift"]
    assert drift and drift[0]["details"]["drifted"] is True
    validator("event").validate(drift[0])


def test_no_threshold_and_no_calibration_is_a_config_error(tmp_path: Path) -> None:
    from flowedge.core.errors import ConfigError
    from flowedge.edge.loop.policy import load_policy

    cfg = station_config(tmp_path, model={"path": "x"})
    with pytest.raises(ConfigError, match="neither 'calibration' nor 'threshold'"):
        load_policy(cfg, fake_card())


def test_video_file_through_the_real_opencv_capture(tmp_path: Path) -> None:
    import cv2

    video = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (48, 32))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG/AVI")
    for i in range(5):
        writer.write(np.full((32, 48, 3), 40 * i, dtype=np.uint8))
    writer.release()
    cfg = station_config(tmp_path, sources=[{"name": "cam", "kind": "camera", "uri": str(video)}])
    pipeline, rows = run_pipeline(cfg, max_samples=8)  # past the end: the file is opened again
    docs = decisions(rows)
    assert [d["part_id"] for d in docs] == [str(i) for i in range(1, 9)]
    assert all(d["decision"] in ("OK", "ANOMALY") for d in docs)


class AtThreshold(FakeBackend):
    """Every score exactly at the test threshold (3.0)."""

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores, maps = super().infer(batch)
        scores[:] = 3.0
        return scores, maps


def test_a_score_at_the_threshold_is_ok_in_message_metrics_and_heatmaps(tmp_path: Path) -> None:
    write_images(tmp_path / "images", 3)
    heat = tmp_path / "heat"
    cfg = station_config(tmp_path, pipeline={"heatmaps": "anomalies", "heatmap_dir": str(heat)})
    metrics = Metrics()
    spool = Spool(cfg.spool.path, 100)
    pipeline = Pipeline(cfg, AtThreshold(), Policy(3.0), spool, metrics)
    pipeline.start()
    assert pipeline.wait(15)
    docs = [json.loads(r.body) for r in spool.after(0, 100)]
    spool.close()
    assert [(d["score"], d["decision"], d["heatmap"]) for d in docs] == [(3.0, "OK", None)] * 3
    assert metrics.decisions.labels("cam1", "OK")._value.get() == 3
    assert metrics.decisions.labels("cam1", "ANOMALY")._value.get() == 0
    assert not heat.exists()  # 'anomalies' mode wrote no overlay


def bright_images(folder: Path, count: int) -> None:
    """Images that all score far above the threshold 3.0 (every one an anomaly)."""
    write_images(folder, count)
    bright = write_images(folder.parent / "bright", 1, start=6)[0].read_bytes()
    for i in range(count):
        (folder / f"img_{i:04d}.png").write_bytes(bright)


def test_heatmaps_keep_the_newest_files_within_the_retention_limit(tmp_path: Path) -> None:
    heat = tmp_path / "heat"
    (heat / "cam1").mkdir(parents=True)
    old = heat / "cam1" / "20000101T000000000Z_old.png"  # from an earlier run: oldest
    old.write_bytes(b"png")
    bright_images(tmp_path / "images", 7)
    cfg = station_config(
        tmp_path, pipeline={"heatmaps": "all", "heatmap_dir": str(heat), "heatmap_keep": 3}
    )
    _, rows = run_pipeline(cfg)
    paths = [d["heatmap"] for d in decisions(rows)]
    assert len(paths) == 7 and all(paths)
    assert sorted(str(p) for p in (heat / "cam1").iterdir()) == sorted(paths[-3:])
    assert not old.exists()


def test_heatmap_megabyte_limit_keeps_at_least_the_newest(tmp_path: Path) -> None:
    heat = tmp_path / "heat"
    bright_images(tmp_path / "images", 4)
    cfg = station_config(
        tmp_path,
        pipeline={"heatmaps": "anomalies", "heatmap_dir": str(heat), "heatmap_keep_mb": 1e-6},
    )
    _, rows = run_pipeline(cfg)
    assert [str(p) for p in (heat / "cam1").iterdir()] == [decisions(rows)[-1]["heatmap"]]


def test_a_heatmap_that_cannot_be_written_is_an_event_not_silence(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the heatmap folder should be")
    bright_images(tmp_path / "images", 2)
    cfg = station_config(tmp_path, pipeline={"heatmaps": "anomalies", "heatmap_dir": str(blocked)})
    _, rows = run_pipeline(cfg)
    assert [(d["decision"], d["heatmap"]) for d in decisions(rows)] == [("ANOMALY", None)] * 2
    failed = [e for e in events(rows) if e["kind"] == "heatmap_failed"]
    assert len(failed) == 2 and "pipeline.heatmap_dir" in failed[0]["message"]
    validator("event").validate(failed[0])


class BrokenSource:
    """A source that delivers one frame and then dies (a driver bug, a lost mount)."""

    modality = "image"

    def __init__(self, cfg, context) -> None:  # noqa: ANN001
        self.name = cfg.name

    def frames(self, stop: threading.Event):  # noqa: ANN201
        from flowedge.edge.sources import Frame

        yield Frame("1", np.full((40, 40, 3), 10, dtype=np.uint8))
        raise RuntimeError("USB device disconnected")


def test_every_source_failed_is_reported_with_the_reason(tmp_path: Path) -> None:
    changes: list[str] = []
    pipeline, rows = run_pipeline(
        station_config(tmp_path), source_factory=BrokenSource, on_status=changes.append
    )
    assert pipeline.sources_failed() == "cam1: USB device disconnected"
    assert changes == ["source cam1 up", "source cam1 failed"]
    assert [d["decision"] for d in decisions(rows)] == ["OK"]  # the frame it gave is answered
    assert any(e["kind"] == "source_lost" for e in events(rows))


def test_a_source_that_ended_normally_is_no_failure(tmp_path: Path) -> None:
    from flowedge.edge.sources import make_source

    write_images(tmp_path / "images", 2)
    cfg = station_config(
        tmp_path,
        sources=[
            {"name": "cam1", "kind": "folder", "path": str(tmp_path / "images")},
            {"name": "cam2", "kind": "camera", "uri": "0"},
        ],
    )

    def factory(source_cfg, context):  # noqa: ANN001, ANN202
        make = BrokenSource if source_cfg.kind == "camera" else make_source
        return make(source_cfg, context)

    pipeline, _ = run_pipeline(cfg, source_factory=factory)
    assert pipeline.states.snapshot() == {"cam1": "ended", "cam2": "failed"}
    assert pipeline.sources_failed() is None


def test_a_missing_replay_folder_is_a_source_failure(tmp_path: Path) -> None:
    pipeline, rows = run_pipeline(station_config(tmp_path))  # tmp/images was never created
    assert "does not exist" in pipeline.sources_failed()
    assert decisions(rows) == []


def test_without_mqtt_decisions_stay_in_the_spool(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """mqtt.enabled false: nothing is sent and nothing is thrown away, not even the
    previous run's unsent decisions; the log says where they are."""
    import logging

    write_images(tmp_path / "images", 3)
    cfg = station_config(tmp_path)  # mqtt: {enabled: false}
    caplog.set_level(logging.WARNING, logger="flowedge.run")
    for _ in range(2):
        station = open_station(cfg)
        station.start()
        assert station.pipeline.wait(15)
        stop_station(station)
    assert station.publisher is None
    assert "MQTT disabled" in caplog.text and str(cfg.spool.path) in caplog.text
    spool = Spool(cfg.spool.path, 100)
    assert [json.loads(r.body)["seq"] for r in spool.after(0, 100)] == [1, 2, 3, 4, 5, 6]
    spool.close()


def test_threshold_embedded_in_the_onnx_model_is_used(tmp_path: Path) -> None:
    from flowedge.backends import open_backend

    model = write_onnx_model(tmp_path / "model.onnx", {"threshold": 0.25, "sha256": "c" * 64})
    write_images(tmp_path / "images", 2)
    cfg = station_config(tmp_path, model={"path": str(model), "backend": "onnxruntime"})
    station = open_station(
        cfg,
        open_backend(
            cfg.model.path, cfg.model.backend, cfg.model.device, cfg.model.intra_op_threads
        ),
    )
    station.start()
    assert station.pipeline.wait(15)
    stop_station(station)
    assert station.policy.threshold == 0.25
    spool = Spool(cfg.spool.path, 100)
    docs = [json.loads(r.body) for r in spool.after(0, 100)]
    spool.close()
    assert [(d["threshold"], d["model"]["calibration_sha256"]) for d in docs] == [
        (0.25, "c" * 64)
    ] * 2


def test_no_threshold_anywhere_is_a_config_error_naming_the_ways_out(tmp_path: Path) -> None:
    from flowedge.backends import open_backend
    from flowedge.core.errors import ConfigError

    model = write_onnx_model(tmp_path / "model.onnx")  # exported without --calibration
    cfg = station_config(tmp_path, model={"path": str(model), "backend": "onnxruntime"})
    with pytest.raises(ConfigError, match="no threshold anywhere") as error:
        open_station(
            cfg,
            open_backend(
                cfg.model.path, cfg.model.backend, cfg.model.device, cfg.model.intra_op_threads
            ),
        )
    assert "export with --calibration" in str(error.value)
