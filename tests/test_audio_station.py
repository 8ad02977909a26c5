"""The station on audio: a folder of WAV files through the same loop as images, with an ONNX
audio model, bad files answered ERROR, spectrogram overlays, and the event in the message."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from runtime_fakes import station_config, validator  # noqa: E402

from flowedge.edge.loop.messages import decision_doc  # noqa: E402
from flowedge.edge.loop.pipeline import Pipeline  # noqa: E402
from flowedge.edge.loop.policy import Policy, Verdict  # noqa: E402
from flowedge.edge.loop.sample import Sample  # noqa: E402
from flowedge.edge.metrics import Metrics  # noqa: E402
from flowedge.edge.spool import Spool  # noqa: E402
from flowedge.modalities import get_modality  # noqa: E402

pytest.importorskip("soundfile")
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def audio_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny audioflow trained on generated motor sound and exported to ONNX (parity-gated)."""
    from test_audioflow import tiny

    from flowedge.flows.config import TrainingConfig
    from flowedge.flows.train import train

    root = tmp_path_factory.mktemp("audio-station")
    data = get_modality("audio").synthesize(
        root / "motor", 6, 1, 1, sample_rate=16000, duration_s=1.0
    )
    torch.set_num_threads(1)
    train(
        tiny("hybrid"),
        TrainingConfig(epochs=1, batch_size=4),
        data,
        root / "model",
        show_progress=False,
    )
    from flowedge.cli import main

    assert main(["export", "onnx", str(root / "model"), "--out", str(root / "model.onnx")]) == 0
    return root / "model.onnx"


def test_a_folder_of_wav_files_gets_one_decision_each(audio_onnx: Path, tmp_path: Path) -> None:
    import soundfile

    from flowedge.backends import open_backend

    clips = get_modality("audio").synthesize(
        tmp_path / "clips", 0, 3, 0, sample_rate=16000, duration_s=1.0
    )
    folder = tmp_path / "recordings"
    folder.mkdir()
    for path in sorted((clips / "test" / "good").glob("*.wav")):
        path.rename(folder / path.name)
    soundfile.write(folder / "z_silent.wav", np.zeros(16000, np.float32), 16000)
    good = (folder / "fold_0000.wav").read_bytes()
    (folder / "z_truncated.wav").write_bytes(good[: len(good) // 2])
    cfg = station_config(
        tmp_path,
        model={"path": str(audio_onnx), "threshold": 1e9},
        sources=[{"name": "mic1", "kind": "folder", "path": str(folder), "modality": "audio"}],
        pipeline={"heatmaps": "all", "heatmap_dir": str(tmp_path / "heat")},
    )
    assert cfg.sources[0].patterns() == ["*.flac", "*.wav"]
    spool = Spool(cfg.spool.path, cfg.spool.max_messages, cfg.spool.overflow)
    pipeline = Pipeline(
        cfg, open_backend(audio_onnx), Policy(cfg.model.threshold), spool, Metrics()
    )
    pipeline.start()
    assert pipeline.wait(60), "pipeline did not finish"
    rows = [(r.kind, json.loads(r.body)) for r in spool.after(0, 10_000)]
    spool.close()
    docs = {d["part_id"]: d for kind, d in rows if kind == "decision"}
    assert sorted(docs) == [
        "fold_0000.wav",
        "fold_0001.wav",
        "fold_0002.wav",
        "z_silent.wav",
        "z_truncated.wav",
    ]
    check = validator("decision")
    for doc in docs.values():
        check.validate(doc)
        assert "event" not in doc  # whole files: no stream event
    assert [docs[f"fold_000{i}.wav"]["decision"] for i in range(3)] == ["OK"] * 3
    assert all(Path(docs[f"fold_000{i}.wav"]["heatmap"]).is_file() for i in range(3))
    assert docs["z_silent.wav"]["decision"] == "ERROR" and "silent" in docs["z_silent.wav"]["error"]
    assert "truncated" in docs["z_truncated.wav"]["error"]


def test_an_audio_event_rides_in_the_decision_message() -> None:
    from runtime_fakes import fake_card

    cfg = station_config(Path("/tmp"))
    event = {
        "label": "unfold",
        "start_utc": "2026-12-01T10:00:00.000Z",
        "start_s": 3.2,
        "end_s": 6.1,
    }
    sample = Sample("mic1", "event-7", None, modality="audio", seq=7, context={"event": event})
    fields = get_modality("audio").decision_fields(sample.context, None, None, None)
    verdict = Verdict("OK", 0.5, Policy(3.0))
    doc = decision_doc(cfg, fake_card(), "onnxruntime", sample, verdict, fields)
    validator("decision").validate(doc)
    assert doc["event"] == event


def test_real_mimii_valve_clips_through_the_station(audio_onnx: Path, tmp_path: Path) -> None:
    """Smoke test on real recordings (8-channel, 16 kHz, read in place): one decision per clip.

    Four clips are too few for an accuracy figure; this proves the real files pass the
    readers, the channel mix, the front end, the model and the message."""
    from conftest import REAL_DATA

    from flowedge.backends import open_backend

    folder = REAL_DATA / "mimii-valve"
    if not any(folder.glob("*.wav")):
        pytest.skip(f"real MIMII valve clips not found at {folder}")
    cfg = station_config(
        tmp_path,
        model={"path": str(audio_onnx), "threshold": 1e9},
        sources=[{"name": "valve", "kind": "folder", "path": str(folder), "modality": "audio"}],
        pipeline={"heatmaps": "none"},
    )
    spool = Spool(cfg.spool.path, cfg.spool.max_messages, cfg.spool.overflow)
    pipeline = Pipeline(
        cfg, open_backend(audio_onnx), Policy(cfg.model.threshold), spool, Metrics()
    )
    pipeline.start()
    assert pipeline.wait(60), "pipeline did not finish"
    docs = [json.loads(r.body) for r in spool.after(0, 1000) if r.kind == "decision"]
    spool.close()
    assert sorted(d["part_id"] for d in docs) == sorted(p.name for p in folder.glob("*.wav"))
    assert all(d["decision"] == "OK" and np.isfinite(d["score"]) for d in docs), docs
